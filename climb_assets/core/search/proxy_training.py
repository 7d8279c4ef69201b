"""Training a proxy from scratch on one mixture of the proxy pool.

The same code runs on CPU, one GPU, or several under `accelerate launch` (data parallel: each
process draws its own batches with seed + process index, and the token budget is split between
processes so a proxy sees `tokens_per_proxy` tokens in total).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from climb_assets.core.search.proxy_model import ModelConfig, ProxyLM, flops_per_token
from climb_assets.core.search.proxy_pool import ProxyPool
from climb_assets.core.shared.precision import ProxyPrecision, default_device, proxy_precision
from climb_assets.settings import ProxySettings

if TYPE_CHECKING:
    from accelerate import Accelerator

LOG_POINTS = 100  # loss-curve points kept per run, whatever the number of steps


@dataclass
class TrainingState:
    """A proxy stopped after `step` of its schedule's steps: everything `train_proxy` needs to
    go on to the end as if it had never stopped (same weights, optimizer moments, data order
    and loss curve)."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    curve: list[tuple[int, float]]
    wall_seconds: float

    def save(self, path: Path) -> None:
        """Written atomically: a crash never leaves a state a later run would resume from."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(asdict(self), partial)
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> TrainingState:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


@dataclass
class ProxyRun:
    """A trained proxy and how its training went; `state` is set when it stopped early."""

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
    state: TrainingState | None = None

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
    stop_after: int | None = None,
    resume: TrainingState | None = None,
) -> ProxyRun:
    """Train a fresh proxy on `weights` for settings.tokens_per_proxy tokens.

    AdamW, linear warmup then cosine decay to lr * min_lr_fraction, gradient clipping at 1.0.
    `on_step(step, tokens_seen, loss)` is called at each logged step (about LOG_POINTS per run).

    `stop_after` (a step count, see `rung_step`) stops there, on the full run's schedule, and
    returns the run with its `state`; `resume` goes on from such a state to the end. Stopped
    then resumed, a proxy ends with the same weights as one trained straight through.
    """
    accelerator = _accelerator(settings.precision)
    precision: ProxyPrecision = "bf16" if accelerator.mixed_precision == "bf16" else "fp32"
    cfg = ModelConfig.from_settings(settings, pool.vocab_size)
    model = ProxyLM(cfg, seed=seed)  # same initial weights in every process
    if resume is not None:
        model.load_state_dict(resume.model)
    optimizer = _adamw(model, settings, accelerator.device)
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)

    tokens_per_step = settings.batch_size * settings.seq_len * accelerator.num_processes
    n_steps = schedule_steps(settings, accelerator.num_processes)
    batches = pool.sample_batches(
        weights,
        n_steps * settings.batch_size * settings.seq_len,
        settings.seq_len,
        settings.batch_size,
        seed=seed * 1_000 + accelerator.process_index,
        skip=0 if resume is None else resume.step,
    )
    first = 0 if resume is None else resume.step
    last = n_steps if stop_after is None else min(stop_after, n_steps)
    start = time.perf_counter()
    with flush_denormals():
        curve = _train_loop(
            accelerator, model, optimizer, batches, (first, last, n_steps), settings, on_step
        )
    wall = time.perf_counter() - start
    if resume is not None:
        curve, wall = resume.curve + curve, resume.wall_seconds + wall

    model = accelerator.unwrap_model(model)
    state = None
    if last < n_steps:
        state = TrainingState(last, model.state_dict(), optimizer.state_dict(), curve, wall)
    model = model.eval()
    tokens = last * tokens_per_step
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
        state=state,
    )


def schedule_steps(settings: ProxySettings, processes: int = 1) -> int:
    """Optimizer steps of a proxy's schedule (each of `processes` draws its own batch)."""
    return math.ceil(
        settings.tokens_per_proxy / (settings.batch_size * settings.seq_len * processes)
    )


def rung_step(settings: ProxySettings, fraction: float) -> int:
    """The step at which a proxy stopped at `fraction` of its tokens is compared: a multiple of
    the loss curve's logging interval, so a stopped and resumed run logs the same curve."""
    n_steps = schedule_steps(settings)
    log_every = max(1, n_steps // LOG_POINTS)
    return min(n_steps, max(log_every, round(fraction * n_steps / log_every) * log_every))


def _train_loop(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[torch.Tensor],
    steps: tuple[int, int, int],
    settings: ProxySettings,
    on_step: Callable[[int, int, float], None] | None,
) -> list[tuple[int, float]]:
    """Steps first+1..last of a schedule of n_steps (`steps`); returns (steps done, mean loss
    of the steps since the previous point) pairs. `first` is a logged step (see `rung_step`)."""
    first, last, n_steps = steps
    tokens_per_step = settings.batch_size * settings.seq_len * accelerator.num_processes
    log_every = max(1, n_steps // LOG_POINTS)
    window_loss = torch.zeros((), device=accelerator.device)
    curve: list[tuple[int, float]] = []
    model.train()
    for step, batch in enumerate(itertools.islice(batches, last - first), start=first + 1):
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
            steps_in_window = step - (curve[-1][0] if curve else first)
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
