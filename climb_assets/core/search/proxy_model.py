"""The proxy language model: a small GPT-style decoder and its memory-light training loss.

Kept apart from the trainer (`proxy_training`) so that scoring and evaluation code that only
runs a model does not pull in the optimizer, schedule and device setup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from climb_assets.settings import ProxySettings


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
