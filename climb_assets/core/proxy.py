"""Small GPT-style proxy language models, trained from scratch on one mixture of the proxy pool.

The same code runs on CPU, one GPU, or several under `accelerate launch` (data parallel: each
process draws its own batches with seed + process index, and the token budget is split between
processes so a proxy sees `tokens_per_proxy` tokens in total).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from climb_assets.core.atomic import atomic_path
from climb_assets.core.precision import ProxyPrecision, default_device, proxy_precision
from climb_assets.core.proxy_pool import ProxyPool
from climb_assets.settings import ProxySettings

if TYPE_CHECKING:
    from accelerate import Accelerator

LOG_POINTS = 100  # loss-curve points kept per run, whatever the number of steps


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    seq_len: int = 128

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if min(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.seq_len) < 1:
            raise ValueError(f"every model dimension must be positive: {self}")

    @classmethod
    def from_settings(cls, settings: ProxySettings, vocab_size: int) -> ModelConfig:
        return cls(
            vocab_size, settings.d_model, settings.n_layers, settings.n_heads, settings.seq_len
        )


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        if x.device.type == "cpu" and q.dtype == torch.bfloat16:
            # PyTorch's CPU flash-attention backward is ~3x slower in bf16 than fp32 (measured),
            # and attention is a small share of the FLOPs, so it runs in fp32 there (autocast
            # off, or it would cast the inputs straight back to bf16).
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), is_causal=True
                ).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, seq, width))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_mlp = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


class ProxyLM(nn.Module):
    """Decoder-only transformer with learned positions and tied input/output embeddings."""

    def __init__(self, cfg: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self._init_weights(torch.Generator().manual_seed(seed))

    def _init_weights(self, generator: torch.Generator) -> None:
        """GPT-2 init from a private generator (the global RNG is left alone): N(0, 0.02), with
        residual projections scaled by 1/sqrt(2 * n_layers) so the residual stream's variance
        does not grow with depth. LayerNorms keep their ones/zeros."""
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, param in self.named_parameters():
            if param.dim() < 2:
                continue
            is_residual = name.endswith(("attn.proj.weight", "mlp.2.weight"))
            nn.init.normal_(param, std=residual_std if is_residual else 0.02, generator=generator)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, seq, vocab) for int64 ids (batch, seq), seq <= cfg.seq_len.

        With `targets` (batch, seq), the mean next-token cross-entropy instead, computed without
        materialising the logits (see `chunked_linear_cross_entropy`).
        """
        hidden = self.hidden_states(ids)
        if targets is None:
            return F.linear(hidden, self.tok_emb.weight)  # tied output layer
        return chunked_linear_cross_entropy(
            hidden.flatten(0, 1), self.tok_emb.weight, targets.flatten()
        )

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.cfg.seq_len:
            raise ValueError(
                f"sequence of {ids.shape[1]} tokens exceeds seq_len {self.cfg.seq_len}"
            )
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok_emb(ids) + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean(CE(hidden @ weight.T, targets)), gradients computed during the forward pass.

    The output layer dominates a small LM's cost, and the plain path writes and re-reads the
    (tokens x vocab) logits several times (matmul, log_softmax, its backward, nll_loss's zero
    fill). Here each chunk of rows is projected, turned into its gradient (softmax - onehot) while
    still in cache, and multiplied back at once, so the full logits never exist. FLOPs are
    unchanged. Under autocast the chunk's matmuls and softmax run in the autocast dtype.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        compute_dtype: torch.dtype,
        chunk_rows: int,
    ) -> torch.Tensor:
        n_rows = hidden.shape[0]
        w = weight.to(compute_dtype)
        h = hidden.to(compute_dtype)
        grad_hidden = torch.empty(h.shape, dtype=compute_dtype, device=h.device)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
        total_nll = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, n_rows, chunk_rows):
            h_chunk, t_chunk = h[start : start + chunk_rows], targets[start : start + chunk_rows]
            # softmax is one pass, log_softmax + exp two; p_target only underflows when a logit
            # gap exceeds ~87 nats, and the clamp keeps even that finite.
            grad_logits = torch.softmax(h_chunk @ w.T, dim=1)
            rows = torch.arange(t_chunk.shape[0], device=h.device)
            p_target = grad_logits[rows, t_chunk].float()
            total_nll -= p_target.clamp_min(torch.finfo(torch.float32).tiny).log().sum()
            grad_logits[rows, t_chunk] -= 1.0
            grad_hidden[start : start + chunk_rows] = grad_logits @ w
            grad_weight += grad_logits.T @ h_chunk
        ctx.save_for_backward(
            grad_hidden.div_(n_rows).to(hidden.dtype), grad_weight.div_(n_rows).to(weight.dtype)
        )
        return total_nll / n_rows

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None


def chunked_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of logits hidden @ weight.T against targets, memory-light (see above)."""
    device_type = hidden.device.type
    compute_dtype = hidden.dtype
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    # About 2M logits per chunk keeps a chunk cache-resident on CPU; GPUs want bigger launches.
    logits_per_chunk = 2**21 if device_type == "cpu" else 2**26
    chunk_rows = max(1, logits_per_chunk // weight.shape[0])
    with torch.autocast(device_type, enabled=False):
        return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, compute_dtype, chunk_rows)


def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token: 6 * (matmul parameters) + attention scores and values.

    Matmul parameters are the blocks' linear layers plus the (tied) output layer; embedding
    lookups and LayerNorms cost no GEMM FLOPs. Attention adds 6 * 2 * n_layers * seq_len * d_model
    (PaLM's appendix B convention, counting the full, not causal-halved, score matrix).
    """
    per_block = 12 * cfg.d_model**2  # qkv 3d^2 + proj d^2 + mlp 8d^2
    matmul_params = cfg.n_layers * per_block + cfg.d_model * cfg.vocab_size
    attention = 12 * cfg.n_layers * cfg.seq_len * cfg.d_model
    return float(6 * matmul_params + attention)


@dataclass
class ProxyRun:
    """A trained proxy and how its training went."""

    model: ProxyLM
    config: ModelConfig
    precision: ProxyPrecision
    loss_curve: list[tuple[int, float]]
    tokens_seen: int
    wall_seconds: float
    tokens_per_second: float
    n_parameters: int
    flops_per_token: float
    seed: int
    weights: dict[int, float] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return self.loss_curve[-1][1]

    def summary(self) -> dict:
        """JSON-able metadata (everything but the model)."""
        return {
            "config": asdict(self.config),
            "precision": self.precision,
            "tokens_seen": self.tokens_seen,
            "wall_seconds": round(self.wall_seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "achieved_gflops": round(self.tokens_per_second * self.flops_per_token / 1e9, 2),
            "n_parameters": self.n_parameters,
            "final_loss": self.final_loss,
            "seed": self.seed,
            "weights": {str(g): w for g, w in self.weights.items()},
        }


def train_proxy(
    pool: ProxyPool,
    weights: Mapping[int, float],
    settings: ProxySettings,
    seed: int,
    on_step: Callable[[int, int, float], None] | None = None,
) -> ProxyRun:
    """Train a fresh proxy on `weights` for settings.tokens_per_proxy tokens.

    AdamW, linear warmup then cosine decay to lr * min_lr_fraction, gradient clipping at 1.0.
    `on_step(step, tokens_seen, loss)` is called at each logged step (about LOG_POINTS per run).
    """
    accelerator = _accelerator(settings.precision)
    precision: ProxyPrecision = "bf16" if accelerator.mixed_precision == "bf16" else "fp32"
    cfg = ModelConfig.from_settings(settings, pool.vocab_size)
    model = ProxyLM(cfg, seed=seed)  # same initial weights in every process
    optimizer = _adamw(model, settings, accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)

    tokens_per_step = settings.batch_size * settings.seq_len * accelerator.num_processes
    n_steps = math.ceil(settings.tokens_per_proxy / tokens_per_step)
    batches = pool.sample_batches(
        weights,
        n_steps * settings.batch_size * settings.seq_len,
        settings.seq_len,
        settings.batch_size,
        seed=seed * 1_000 + accelerator.process_index,
    )
    start = time.perf_counter()
    with flush_denormals():
        curve = _train_loop(accelerator, model, optimizer, batches, n_steps, settings, on_step)
    wall = time.perf_counter() - start

    model = accelerator.unwrap_model(model).eval()
    tokens = n_steps * tokens_per_step
    return ProxyRun(
        model=model,
        config=cfg,
        precision=precision,
        loss_curve=[(step * tokens_per_step, loss) for step, loss in curve],
        tokens_seen=tokens,
        wall_seconds=wall,
        tokens_per_second=tokens / wall,
        n_parameters=model.n_parameters(),
        flops_per_token=flops_per_token(cfg),
        seed=seed,
        weights=dict(pool.normalize(weights)),
    )


def _train_loop(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[torch.Tensor],
    n_steps: int,
    settings: ProxySettings,
    on_step: Callable[[int, int, float], None] | None,
) -> list[tuple[int, float]]:
    """Returns (steps done, mean loss of the steps since the previous point) pairs."""
    tokens_per_step = settings.batch_size * settings.seq_len * accelerator.num_processes
    log_every = max(1, n_steps // LOG_POINTS)
    window_loss = torch.zeros((), device=accelerator.device)
    curve: list[tuple[int, float]] = []
    model.train()
    for step, batch in enumerate(batches, start=1):
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * _lr_factor(step - 1, n_steps, settings)
        batch = batch.to(accelerator.device, non_blocking=True)
        with accelerator.autocast():
            loss = model(batch[:, :-1], batch[:, 1:])
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window_loss += loss.detach()  # no .item() here: it would sync the GPU every step
        if step % log_every == 0 or step == n_steps:
            steps_in_window = step - (curve[-1][0] if curve else 0)
            mean = accelerator.reduce(window_loss, reduction="mean").item() / steps_in_window
            curve.append((step, mean))
            window_loss.zero_()
            if on_step is not None:
                on_step(step, step * tokens_per_step, mean)
    return curve


def _lr_factor(step: int, n_steps: int, settings: ProxySettings) -> float:
    """Linear warmup to 1, then cosine decay to min_lr_fraction at the last step."""
    warmup = max(1, round(settings.warmup_fraction * n_steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, n_steps - 1 - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return settings.min_lr_fraction + (1 - settings.min_lr_fraction) * cosine


def _adamw(model: nn.Module, settings: ProxySettings, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (embeddings included), not on LayerNorm parameters."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel updates all parameters in one pass; it exists for CPU and CUDA only.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.95), fused=fused)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero inside the block (CPU), restoring the previous mode.

    Once a proxy has learned, most softmax outputs underflow into the subnormal range, where x86
    arithmetic is ~10x slower (measured: a softmax went from 0.05 to 0.57 ms).
    """
    was_on = bool((torch.tensor([1e-39]) * 1.0).item() == 0.0)  # no getter exists
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def _accelerator(precision: str) -> Accelerator:
    """An Accelerator with the resolved precision.

    Without CUDA, `cpu=True` is passed: that is what lets accelerate run data-parallel over gloo
    when started by `torchrun` / `accelerate launch` on a CPU-only machine. Accelerate keeps one
    process-wide state and refuses a second Accelerator with another mixed-precision setting, so
    that part of the state is reset first (the distributed PartialState is kept).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    device = torch.device(default_device())
    use_cpu = device.type == "cpu"
    mixed = "bf16" if proxy_precision(precision, device) == "bf16" else "no"
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed):
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed, cpu=use_cpu)


def save_model(model: ProxyLM, path: Path) -> None:
    """Config and weights in one torch file (atomic)."""
    with atomic_path(Path(path)) as tmp:
        torch.save({"config": asdict(model.cfg), "state_dict": model.state_dict()}, tmp)


def load_model(path: Path, device: str | torch.device = "cpu") -> ProxyLM:
    """A model written by `save_model`, in eval mode."""
    checkpoint = torch.load(Path(path), map_location=device, weights_only=True)
    model = ProxyLM(ModelConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()
