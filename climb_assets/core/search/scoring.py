"""Train one proxy language model on a mixture and score it on the targets.

Shared by the bootstrap search (many small proxies) and the mixture evaluation (a larger model
trained on a few fixed mixtures with several seeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from climb_assets.core.search.proxy_pool import ProxyPool
    from climb_assets.core.search.proxy_training import TrainingState
    from climb_assets.core.search.targets import LoadedTarget
    from climb_assets.settings import ProxySettings


@dataclass
class ScoredRun:
    scores: dict[str, float]  # "target/metric" -> value, plus "objective" (higher is better)
    loss_curve: list[tuple[int, float]]  # (tokens seen, mean training loss)
    summary: dict  # ProxyRun.summary(): throughput, parameters, final loss, ...
    state: TrainingState | None = None  # set when the run stopped before the end (a rung)


def train_and_score(
    proxy: ProxySettings,
    pool: ProxyPool,
    tokenizer: Tokenizer,
    targets: list[LoadedTarget],
    weights: np.ndarray,
    seed: int,
    objective_only: bool = False,
    stop_after: int | None = None,
    resume: TrainingState | None = None,
    target_share: float = 1.0,
) -> ScoredRun:
    """Train a fresh model of `proxy`'s shape on `weights` (one per pool group, in group order)
    with `seed` for initialisation and data order, then score it on every target (only the
    metrics the objective needs with `objective_only`, as the search does). `stop_after` and
    `resume` stop at a step and go on from there (see `train_proxy`); `target_share` scores
    only that share of each target (see `score_targets`)."""
    from climb_assets.core.search.proxy_training import train_proxy
    from climb_assets.core.search.targets import objective, score_targets

    groups = pool.groups
    if len(weights) != len(groups):
        raise ValueError(f"{len(weights)} weights for a pool of {len(groups)} groups")
    mixture = {group: float(w) for group, w in zip(groups, weights, strict=True)}
    run = train_proxy(pool, mixture, proxy, seed, stop_after=stop_after, resume=resume)
    scores = score_targets(run.model, tokenizer, targets, proxy, objective_only, target_share)
    scores["objective"] = objective(scores, targets)
    return ScoredRun(scores, run.loss_curve, run.summary(), run.state)
