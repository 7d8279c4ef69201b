"""Successive halving of a round's proxies: every candidate trains to a rung (a share of its
tokens, on the full run's schedule) and is scored there; only the best go on to the full
budget. The others are not trained further: their objective at full budget is estimated from
their rung score by a line fitted on the runs that went on, and flagged `estimated`.

Why it holds: candidates of a round differ mostly by their mixture, and a mixture that is
clearly worse at a third of the tokens is still worse at the end, so those tokens decide
nothing. The estimate never ranks a stopped candidate above one that finished in its round
(it ranked below all of them at the rung), so the best observed run is always a finished one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from climb_assets.settings import ProxySettings, SearchSettings

# Fewer candidates than this in a round: all of them train to the end.
MIN_CANDIDATES = 4
# Fewer finished runs with a rung score than this: the estimate is a shift, not a line.
MIN_PAIRS_FOR_SLOPE = 3


@dataclass(frozen=True)
class Halving:
    """Stop every candidate after `stop_after` steps (`rung_tokens` tokens), score it on
    `target_share` of each target; keep `keep`."""

    stop_after: int
    rung_tokens: int
    keep: int
    target_share: float = 1.0


def halving_plan(n_candidates: int, search: SearchSettings, proxy: ProxySettings) -> Halving | None:
    """The round's halving, or None when every candidate trains to the end (turned off, too
    few candidates, or a rung at the last step)."""
    if search.rung_fraction >= 1 or n_candidates < MIN_CANDIDATES:
        return None
    # torch: imported only when a round trains
    from climb_assets.core.search.proxy_training import rung_step, schedule_steps

    keep = max(2, math.ceil(search.rung_keep * n_candidates))
    stop = rung_step(proxy, search.rung_fraction)
    if keep >= n_candidates or stop >= schedule_steps(proxy):
        return None
    return Halving(stop, stop * proxy.batch_size * proxy.seq_len, keep, search.rung_target_share)


def kept_candidates(rung_objectives: Sequence[float], keep: int) -> np.ndarray:
    """Indices of the `keep` best rung objectives (higher is better), best first; an earlier
    candidate wins a tie, so the choice is deterministic."""
    scores = np.asarray(rung_objectives, dtype=float)
    if not np.isfinite(scores).all():
        raise ValueError(f"rung objectives must be finite, got {scores.tolist()}")
    order = np.lexsort((np.arange(scores.size), -scores))
    return order[:keep]


def repeats_among_kept(planned: Sequence[int], kept: Sequence[int], count: int) -> list[int]:
    """The candidates re-run with a second seed: the planned ones that were kept, then the best
    kept ones, `count` in all (a stopped candidate has no full-budget score to pair with)."""
    chosen = [int(i) for i in planned if i in set(map(int, kept))]
    chosen += [int(i) for i in kept if int(i) not in chosen]
    return chosen[: min(count, len(kept))]


def estimate_full_objectives(
    stopped_rung: np.ndarray,
    finished_rung: np.ndarray,
    finished_full: np.ndarray,
    ceiling: float,
) -> np.ndarray:
    """Full-budget objectives of stopped candidates from their rung objectives: the least-squares
    line through the finished runs' (rung, full) pairs (slope kept positive, so the rung's order
    is kept), never above `ceiling` (just below the worst finished run of the round)."""
    stopped_rung = np.asarray(stopped_rung, dtype=float)
    x, y = np.asarray(finished_rung, dtype=float), np.asarray(finished_full, dtype=float)
    if x.size == 0:
        raise ValueError("no finished run to estimate stopped candidates from")
    slope = 1.0
    if x.size >= MIN_PAIRS_FOR_SLOPE and np.ptp(x) > 0:
        fitted = float(np.polyfit(x, y, 1)[0])
        slope = fitted if fitted > 0 else 1.0
    intercept = float(np.mean(y - slope * x))
    estimate = intercept + slope * stopped_rung
    return np.minimum(estimate, np.nextafter(ceiling, -np.inf))
