"""Choosing a mixture with a fitted predictor: ranking a candidate pool, RegMix's plain top-k
mean (`best_mixture`, kept for comparisons) and the search's final choice (`choose_final`: the
mean of the best region, never predicted worse than the best observed run, within a trust region
when one is given).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from climb_assets.core.search.mixtures import MixtureConstraints, enforce_constraints
from climb_assets.core.search.trust_region import TrustRegion, TrustReport

if TYPE_CHECKING:
    from climb_assets.core.search.predictor import Predictor


def rank_pool(
    predictor: Predictor, pool: np.ndarray, maximize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(order best first, predictions) of a pool of mixtures."""
    _check_direction(predictor, maximize)
    predicted = predictor.predict(pool)
    order = np.argsort(-predicted if maximize else predicted, kind="stable")
    return order, predicted


class BestMixture(NamedTuple):
    mixture: np.ndarray  # (k,)
    predicted: float  # predictor's score of `mixture` itself
    top_indices: np.ndarray  # rows of the pool that were averaged, best first


def best_mixture(
    predictor: Predictor,
    pool: np.ndarray,
    top_k: int,
    maximize: bool,
    constraints: MixtureConstraints | None = None,
) -> BestMixture:
    """RegMix's plain pick: the mean of the top-k predicted mixtures of `pool`, re-projected.

    Kept for comparisons; `choose_final` is the search's final choice (no blending of separate
    regions, never worse than the best observed run).
    """
    if len(pool) == 0:
        raise ValueError("the candidate pool is empty")
    order, _ = rank_pool(predictor, pool, maximize)
    top = order[: max(1, top_k)]
    mixture = _project(np.asarray(pool, dtype=float)[top].mean(axis=0), constraints)
    return BestMixture(mixture, float(predictor.predict(mixture)[0]), top)


@dataclass
class FinalChoice:
    mixture: np.ndarray  # (k,)
    predicted: float  # predictor's score of `mixture`
    method: str  # "region mean", "best predicted" or "best observed"
    region_size: int  # top-k mixtures averaged
    best_observed_weights: np.ndarray  # (k,) the run with the best real score
    best_observed_score: float
    best_observed_predicted: float  # same predictor's score of the best observed run
    top_indices: np.ndarray  # rows of [pool; observed] in the top-k, best first
    kept_slivers: bool = False  # weights under min_weight kept: predicted better with them
    trust: TrustReport | None = None  # the trust region applied, and what lay outside it


def choose_final(
    predictor: Predictor,
    pool: np.ndarray,
    observed_weights: np.ndarray,
    observed_scores: np.ndarray,
    top_k: int,
    maximize: bool,
    constraints: MixtureConstraints | None = None,
    region_radius: float = 0.3,
    *,
    min_weight: float = 0.0,
    compare_to_pool: bool = False,
    trust: TrustRegion | None = None,
) -> FinalChoice:
    """The final mixture: mean of the top-k predicted of the pool plus the observed runs, taken
    only within total-variation distance `region_radius` of the best predicted one.

    Averaging smooths the predictor's noise, but the mean of two separate good regions can lie
    in a bad valley between them, hence the radius. Averaging also leaves dust: every group
    some top-k member touched gets a sliver, so weights below `min_weight` are zeroed and the
    rest re-projected onto the caps (skipped where the caps would then not reach 1), unless the
    predictor scores the mean with its slivers higher. The mean is kept unless it is predicted
    worse than the best observed run, which is then returned: the choice is never predicted
    worse than what was already seen.

    `compare_to_pool=True` also falls back to the best predicted candidate when it beats the
    mean. Off by default: the top pool member's prediction is the maximum of many noisy
    predictions, so the mean nearly always loses to it, and in benchmarks/predictor_quality.py
    that fallback chose worse mixtures than the mean.

    `trust` (a region around `observed_weights`): when it is enforced, candidates outside are
    left out, and a mean that falls outside gives way to the best predicted candidate inside;
    either way `FinalChoice.trust` reports where the best predicted candidate of the whole pool
    lay.
    """
    _check_direction(predictor, maximize)
    observed, observed_scores = _observed_runs(observed_weights, observed_scores)
    pool = np.asarray(pool, dtype=float).reshape(-1, observed.shape[1])
    candidates = np.vstack([pool, observed])
    order, predicted = rank_pool(predictor, candidates, maximize)
    overall_best = int(order[0])
    inside = None if trust is None else trust.inside(candidates)
    if inside is not None and trust is not None and trust.enforce:
        order = order[inside[order]]  # observed runs are inside: never empty
    top = order[: max(1, top_k)]
    best = int(top[0])
    distance = 0.5 * np.abs(candidates[top] - candidates[best]).sum(axis=1)
    region = top[distance <= region_radius]
    mixture, mixture_predicted, kept_slivers = _sparse_or_dense(
        predictor, candidates[region].mean(axis=0), constraints, min_weight, maximize
    )
    method = "region mean"
    if trust is not None and trust.enforce and not trust.inside(mixture)[0]:
        mixture, mixture_predicted = candidates[best].copy(), float(predicted[best])
        method, kept_slivers = "best predicted", False
    observed_best = int(np.argmax(observed_scores) if maximize else np.argmin(observed_scores))
    observed_best_row = len(pool) + observed_best
    rival = best if compare_to_pool else observed_best_row
    gap = mixture_predicted - predicted[rival]
    if gap < 0 if maximize else gap > 0:
        mixture, mixture_predicted = candidates[rival].copy(), float(predicted[rival])
        method = "best observed" if rival == observed_best_row else "best predicted"
        kept_slivers = False
    report = None
    if trust is not None and inside is not None:
        report = _trust_report(
            trust, inside, candidates[overall_best], predicted[overall_best], mixture
        )
    return FinalChoice(
        mixture=mixture,
        predicted=mixture_predicted,
        method=method,
        region_size=len(region),
        best_observed_weights=observed[observed_best].copy(),
        best_observed_score=float(observed_scores[observed_best]),
        best_observed_predicted=float(predicted[observed_best_row]),
        top_indices=top,
        kept_slivers=kept_slivers,
        trust=report,
    )


def _observed_runs(
    observed_weights: np.ndarray, observed_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The observed runs as (n, k) weights and (n,) scores; at least one, as many of each."""
    observed = np.atleast_2d(np.asarray(observed_weights, dtype=float))
    observed_scores = np.asarray(observed_scores, dtype=float).reshape(-1)
    if len(observed) == 0 or len(observed) != len(observed_scores):
        raise ValueError(
            f"{len(observed)} observed mixtures and {len(observed_scores)} scores: need the "
            "same non-zero number"
        )
    return observed, observed_scores


def _trust_report(
    trust: TrustRegion,
    inside: np.ndarray,
    best_predicted: np.ndarray,
    best_predicted_score: float,
    chosen: np.ndarray,
) -> TrustReport:
    """The trust region applied, what it left out, and how far the best predicted candidate of
    the whole pool and the chosen mixture lay from it."""
    return TrustReport(
        multiple=trust.multiple,
        spacing=trust.spacing,
        radius=trust.radius,
        enforced=trust.enforce,
        excluded=int((~inside).sum()) if trust.enforce else 0,
        best_predicted=best_predicted.copy(),
        best_predicted_score=float(best_predicted_score),
        best=trust.excursion(best_predicted),
        chosen=trust.excursion(chosen),
    )


def _sparse_or_dense(
    predictor: Predictor,
    mean: np.ndarray,
    constraints: MixtureConstraints | None,
    min_weight: float,
    maximize: bool,
) -> tuple[np.ndarray, float, bool]:
    """The mean without its slivers, unless the predictor scores the mean with them higher
    (then the third item is True: slivers kept)."""
    options = [_project(mean, constraints, min_weight), _project(mean, constraints)]
    scores = predictor.predict(np.stack(options))
    better_dense = bool(scores[1] > scores[0] if maximize else scores[1] < scores[0])
    kept = better_dense and not np.array_equal(options[0], options[1])
    return options[int(better_dense)], float(scores[int(better_dense)]), kept


def _project(
    mean: np.ndarray, constraints: MixtureConstraints | None, min_weight: float = 0.0
) -> np.ndarray:
    """The mean of feasible mixtures already meets the caps; projecting again zeroes weights
    below the larger of `min_weight` and the constraints' own (whole simplex when
    `constraints` is None)."""
    if constraints is None:
        constraints = MixtureConstraints.unconstrained(len(mean))
    floor = max(min_weight, constraints.min_weight)
    return enforce_constraints(mean[None], replace(constraints, min_weight=floor))[0]


def _check_direction(predictor: Predictor, maximize: bool) -> None:
    if predictor.maximize != maximize:
        wanted, fitted = ("maximize" if m else "minimize" for m in (maximize, predictor.maximize))
        raise ValueError(f"asked to {wanted} but the predictor was fitted to {fitted} its score")
