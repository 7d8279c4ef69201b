"""CLIMB's iterative bootstrap search: planning a round's candidates, fitting its predictor and
choosing the final mixture, as pure functions (`core.search.bootstrap` runs a round with them).

Iteration 1 explores: with `initial_design: cover` it trains every super-cluster at its cap
(vertices), sparse mixtures and Dirichlet draws of many concentrations, so the predictor sees
each group at high weight; `regmix` draws only around the token-share prior. Iteration t > 1
exploits: it fits the predictor on every run of iterations < t, scores a pool (fresh Dirichlet
draws, perturbations of the best runs so far, and the vertices of the feasible set that the
predictor and the runs rank highest, with draws around them), and proposes `exploit_fraction`
of its budget from the predicted top and the rest by sampling around the `top_k_for_sampling`
predicted mixtures. A mixture already evaluated is never proposed again.

Proxies are compared under common random numbers: every candidate is trained with the same
initialisation and data-order seed (`proxy_seed`), so score differences come from the mixture.
`seed_repeats` candidates per iteration are trained again with another seed; the spread between
the two runs (`seed_noise`) is the noise floor below which score differences mean nothing.

Each step takes the seed of the whole search and derives its own from (seed, iteration), so an
iteration can be recomputed on its own (e.g. by one Dagster partition) with the same result, and
rows of later iterations in `history` are ignored when an `iteration` column is present.

History tables have one row per evaluated candidate: weight columns w_0..w_{k-1} and `score`
(plus, when written by a bootstrap round, candidate_id, iteration, source and predicted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from climb_assets.core.search.designs import (
    corner_mixtures,
    cover_design,
    swapped_orders,
    vertex_mixtures,
)
from climb_assets.core.search.final_choice import FinalChoice, choose_final, rank_pool
from climb_assets.core.search.mixtures import (
    MixtureConstraints,
    best_single_order,
    build_constraints,
    sample_around,
    sample_dirichlet,
    sample_initial,
    unique_rows,
    validate_mixture_table,
)
from climb_assets.core.search.predictor import (
    MIN_CV_ROWS,
    MIN_FIT_ROWS,
    Predictor,
    cross_validated_spearman,
    fit_predictor,
)
from climb_assets.core.search.trust_region import TrustRegion
from climb_assets.settings import PredictorSettings, SearchSettings

TokenCounts = Mapping[int, int] | Sequence[int] | np.ndarray
SCORE_COLUMN = "score"
# Candidates trained again with a second seed: their first and second scores.
REPEAT_SCHEMA = {
    "candidate_id": pl.Int64,
    "iteration": pl.Int64,
    "score": pl.Float64,
    "repeat_score": pl.Float64,
}
_WEIGHT_COLUMN = re.compile(r"w_\d+")
# Share of a later iteration's pool drawn around the feasible set's most promising vertices, and
# how many leading positions of a ranking are swapped pairwise to find the vertices next to it.
CORNER_POOL_SHARE = 0.1
CORNER_SWAP_DEPTH = 4
# Independent random streams within one iteration.
_SAMPLING_STREAM, _PREDICTOR_STREAM, _POOL_STREAM, _EXPLORE_STREAM = range(4)


def weight_columns(k: int) -> list[str]:
    return [f"w_{index}" for index in range(k)]


def iteration_seed(seed: int, iteration: int, stream: int = 0) -> int:
    """A 32-bit seed derived from the search seed, the iteration and a stream number."""
    return int(np.random.SeedSequence([seed, iteration, stream]).generate_state(1)[0])


def proxy_seed(seed: int, repeat: int = 0) -> int:
    """Initialisation and data-order seed of a proxy: the same for every candidate of every
    iteration (common random numbers); `repeat` r > 0 is the seed of a candidate's r-th re-run."""
    return iteration_seed(seed, 0, 1000 + repeat)


def repeat_indices(n_candidates: int, repeats: int, iteration: int) -> np.ndarray:
    """Candidates re-run with another seed: spread over iteration 1's design, the predicted best
    (listed first) in later iterations, where the decisions are made."""
    count = min(repeats, n_candidates)
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    if iteration == 1:
        return np.unique(np.linspace(0, n_candidates - 1, count).round().astype(np.int64))
    return np.arange(count, dtype=np.int64)


def seed_noise(first: np.ndarray, second: np.ndarray) -> float:
    """Standard deviation of one run's score under a change of seed, from paired re-runs:
    var(a - b) = 2 var(run). NaN without pairs."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((first - second) ** 2) / 2))


@dataclass
class IterationPredictor:
    predictor: Predictor
    cv_spearman: float  # NaN when there were too few rows to cross-validate
    n_rows: int


@dataclass
class IterationPlan:
    """The candidates proposed for one iteration, and why."""

    iteration: int
    weights: np.ndarray  # (n, k)
    source: list[str]  # per candidate: "vertex", "sparse", "dirichlet", "exploit" or "explore"
    predicted: np.ndarray | None  # (n,) predictor scores; None in iteration 1
    predictor: IterationPredictor | None
    repeats: np.ndarray  # row indices of the candidates also trained with a second seed
    predicted_spread: np.ndarray | None = None  # (n,) ensemble spread of `predicted`

    def to_frame(self, first_candidate_id: int = 0) -> pl.DataFrame:
        """candidate_id, iteration, source, w_*, predicted (no score yet)."""
        n, k = self.weights.shape
        predicted = [None] * n if self.predicted is None else self.predicted.tolist()
        columns = {
            "candidate_id": pl.Series(
                range(first_candidate_id, first_candidate_id + n), dtype=pl.Int64
            ),
            "iteration": pl.Series([self.iteration] * n, dtype=pl.Int64),
            "source": pl.Series(self.source, dtype=pl.String),
        }
        columns |= {name: self.weights[:, j] for j, name in enumerate(weight_columns(k))}
        columns["predicted"] = pl.Series(predicted, dtype=pl.Float64)
        spread = [None] * n if self.predicted_spread is None else self.predicted_spread.tolist()
        columns["predicted_spread"] = pl.Series(spread, dtype=pl.Float64)
        return pl.DataFrame(columns)


@dataclass
class OptimalMixture:
    weights: np.ndarray  # (k,)
    predicted: float
    predicted_spread: float  # ensemble spread of `predicted`
    predictor: IterationPredictor
    pool_size: int
    choice: FinalChoice  # how it was chosen, and the best observed run under the same predictor

    @property
    def best_observed_weights(self) -> np.ndarray:
        return self.choice.best_observed_weights

    @property
    def best_observed_score(self) -> float:
        return self.choice.best_observed_score


def plan_iteration(
    iteration: int,
    history: pl.DataFrame | None,
    token_counts: TokenCounts,
    settings: SearchSettings,
    budget_tokens: int,
    seed: int,
    maximize: bool = True,
    predictor_settings: PredictorSettings | None = None,
) -> IterationPlan:
    """Candidates of `iteration` with their source, predicted scores and the predictor used.

    `budget_tokens` is the constraint budget the caps are computed for (see `build_constraints`).
    """
    counts = settings.proxies_per_iteration
    if not 1 <= iteration <= len(counts):
        raise ValueError(
            f"iteration {iteration} is outside 1..{len(counts)} (search.proxies_per_iteration)"
        )
    constraints = build_constraints(token_counts, settings, budget_tokens)
    past = _past_runs(history, iteration, constraints.k)
    budget = counts[iteration - 1]
    if iteration == 1:
        exclude = past[0] if past is not None else None
        sampling_seed = iteration_seed(seed, 1, _SAMPLING_STREAM)
        if settings.initial_design == "cover":
            weights, kinds = cover_design(constraints, budget, sampling_seed, exclude)
        else:
            weights = sample_initial(
                token_counts, budget, settings, budget_tokens, sampling_seed, exclude
            )
            kinds = ["dirichlet"] * len(weights)
        repeats = repeat_indices(len(weights), settings.seed_repeats, 1)
        return IterationPlan(1, weights, kinds, None, None, repeats)
    if past is None:
        raise ValueError(
            f"iteration {iteration} needs the scored runs of iterations 1..{iteration - 1}"
        )
    return _plan_later_iteration(
        iteration, past, budget, constraints, settings, seed, maximize, predictor_settings
    )


def _plan_later_iteration(
    iteration: int,
    past: tuple[np.ndarray, np.ndarray],
    budget: int,
    constraints: MixtureConstraints,
    settings: SearchSettings,
    seed: int,
    maximize: bool,
    predictor_settings: PredictorSettings | None,
) -> IterationPlan:
    past_weights, past_scores = past
    fitted = _fit(
        past_weights,
        past_scores,
        settings,
        iteration_seed(seed, iteration, _PREDICTOR_STREAM),
        maximize,
        predictor_settings,
    )
    pool = candidate_pool(
        past_weights,
        past_scores,
        constraints,
        settings,
        iteration_seed(seed, iteration, _POOL_STREAM),
        maximize,
        predictor=fitted.predictor,
    )
    order, _ = rank_pool(fitted.predictor, pool, maximize)
    corners = forced_corners(
        fitted.predictor, constraints, past_weights, past_scores, maximize, budget, settings
    )
    explore_seed = iteration_seed(seed, iteration, _EXPLORE_STREAM)
    weights, source = _exploit_and_explore(
        pool[order], corners, past_weights, budget, constraints, settings, explore_seed
    )
    predicted = fitted.predictor.predict(weights) if len(weights) else np.empty(0)
    spread = fitted.predictor.predict_spread(weights) if len(weights) else np.empty(0)
    repeats = repeat_indices(len(weights), settings.seed_repeats, iteration)
    return IterationPlan(iteration, weights, source, predicted, fitted, repeats, spread)


def _exploit_and_explore(
    ranked: np.ndarray,
    corners: np.ndarray,
    past_weights: np.ndarray,
    budget: int,
    constraints: MixtureConstraints,
    settings: SearchSettings,
    explore_seed: int,
) -> tuple[np.ndarray, list[str]]:
    """A later round's candidates and their source: the forced corners, the predicted top of the
    `ranked` pool (best first) for `exploit_fraction` of the budget, and draws around its
    `top_k_for_sampling` best for the rest; never a mixture already evaluated."""
    budget_left = budget - len(corners)
    exploit = unique_rows(ranked, exclude=np.vstack([past_weights, corners]))
    n_exploit = min(budget_left, round(settings.exploit_fraction * budget), len(exploit))
    exploit = exploit[:n_exploit]
    explore = sample_around(
        ranked[: settings.top_k_for_sampling],
        budget_left - n_exploit,
        constraints,
        explore_seed,
        exclude=np.vstack([past_weights, corners, exploit]),
    )
    # Tiny feasible sets can run out of new perturbations: fill from the predicted ranking.
    chosen = np.vstack([corners, exploit, explore])
    filler = unique_rows(ranked[n_exploit:], exclude=np.vstack([past_weights, chosen]))
    filler = filler[: budget - len(chosen)]
    source = (
        ["corner"] * len(corners)
        + ["exploit"] * len(exploit)
        + ["explore"] * len(explore)
        + ["exploit"] * len(filler)
    )
    return np.vstack([chosen, filler]), source


def candidate_pool(
    past_weights: np.ndarray,
    past_scores: np.ndarray,
    constraints: MixtureConstraints,
    settings: SearchSettings,
    seed: int,
    maximize: bool,
    exclude_past: bool = True,
    predictor: Predictor | None = None,
) -> np.ndarray:
    """About `candidate_pool_size` distinct mixtures: with a predictor, the corners it and the
    runs rank highest (`corner_candidates`) and `CORNER_POOL_SHARE` draws around them; the rest
    half fresh Dirichlet draws, half perturbations of the `top_k_for_sampling` best runs so far
    (by their real scores)."""
    rng = np.random.default_rng(seed)
    exclude = past_weights if exclude_past else None
    corners = np.empty((0, constraints.k))
    near_corners = corners
    if predictor is not None:
        corners = corner_candidates(predictor, constraints, past_weights, past_scores, maximize)
        n_near = round(settings.candidate_pool_size * CORNER_POOL_SHARE)
        near_corners = sample_around(corners, n_near, constraints, rng, exclude=exclude)
        corners = unique_rows(corners, exclude=exclude)
    n_rest = settings.candidate_pool_size - len(near_corners)
    n_fresh = n_rest // 2
    best_first = np.argsort(-past_scores if maximize else past_scores, kind="stable")
    centers = past_weights[best_first[: settings.top_k_for_sampling]]
    fresh = sample_dirichlet(constraints, n_fresh, rng, exclude=exclude)
    around = sample_around(centers, n_rest - n_fresh, constraints, rng, exclude=exclude)
    return unique_rows(np.vstack([corners, near_corners, fresh, around]))


def forced_corners(
    predictor: Predictor,
    constraints: MixtureConstraints,
    past_weights: np.ndarray,
    past_scores: np.ndarray,
    maximize: bool,
    budget: int,
    settings: SearchSettings,
) -> np.ndarray:
    """Up to `settings.corner_candidates` new vertices trained whatever the predictor says: the
    groups filled to their caps in the order of the best run each led, then the vertices the
    predictor ranks highest. A tree predictor cannot isolate one run at a cap, so without these
    the search may never train the mixture that simply fills the best groups."""
    count = min(settings.corner_candidates, budget)
    if count <= 0:
        return np.empty((0, constraints.k))
    corners = corner_candidates(predictor, constraints, past_weights, past_scores, maximize)
    led, others = corners[:1], corners[1:]
    if len(others):
        others = others[rank_pool(predictor, others, maximize)[0]]
    return unique_rows(np.vstack([led, others]), exclude=past_weights)[:count]


def corner_candidates(
    predictor: Predictor,
    constraints: MixtureConstraints,
    past_weights: np.ndarray,
    past_scores: np.ndarray,
    maximize: bool,
) -> np.ndarray:
    """Vertices of the feasible set (groups filled to their caps in order) for two rankings of
    the groups and their neighbours (`swapped_orders`): by the best run each group led (row 0
    is that order's vertex), and by the predicted score of each group's vertex mixture. When the
    score keeps improving with a group's weight, the best mixture is such a vertex, which random
    draws almost never hit."""
    groups = np.flatnonzero((constraints.upper > 0) & (constraints.prior > 0))
    predicted = predictor.predict(vertex_mixtures(constraints))
    by_prediction = groups[np.argsort(-predicted if maximize else predicted, kind="stable")]
    led = best_single_order(
        past_weights, past_scores if maximize else -past_scores, constraints.prior
    )
    orders = swapped_orders(led, CORNER_SWAP_DEPTH)
    orders += swapped_orders(by_prediction.tolist(), CORNER_SWAP_DEPTH)
    return corner_mixtures(constraints, orders)


def fit_iteration_predictor(
    history: pl.DataFrame,
    settings: SearchSettings,
    seed: int,
    maximize: bool = True,
    predictor_settings: PredictorSettings | None = None,
) -> IterationPredictor:
    """Fit the predictor on every row of `history` and cross-validate it (`settings.cv_folds`).

    `seed` is used as given; `plan_iteration` derives its own per iteration, so the predictor
    behind a plan's candidates is `plan.predictor`, not a refit with the search seed.
    """
    past = _past_runs(history, None, len(_history_weight_columns(history)))
    if past is None:
        raise ValueError("history is empty: the predictor needs scored runs")
    return _fit(*past, settings, seed, maximize, predictor_settings)


def _fit(
    weights: np.ndarray,
    scores: np.ndarray,
    settings: SearchSettings,
    seed: int,
    maximize: bool,
    predictor_settings: PredictorSettings | None,
) -> IterationPredictor:
    if len(scores) < MIN_FIT_ROWS:
        raise ValueError(f"{len(scores)} scored runs: the predictor needs at least {MIN_FIT_ROWS}")
    predictor = fit_predictor(weights, scores, seed, maximize, settings=predictor_settings)
    cv = (
        cross_validated_spearman(
            weights, scores, settings.cv_folds, seed, settings=predictor_settings
        )
        if len(scores) >= MIN_CV_ROWS
        else float("nan")
    )
    return IterationPredictor(predictor=predictor, cv_spearman=cv, n_rows=len(scores))


def choose_optimal_mixture(
    history: pl.DataFrame,
    token_counts: TokenCounts,
    settings: SearchSettings,
    budget_tokens: int,
    seed: int,
    maximize: bool = True,
    predictor_settings: PredictorSettings | None = None,
) -> OptimalMixture:
    """The final choice (`choose_final`) from a fresh pool plus every evaluated run, with a
    predictor fitted on all runs: the mean of the top-k within the best region, never
    predicted worse than the best run already observed, taken only inside the runs' trust
    region (`search.final_trust_radius`; `choice.trust` says where the best predicted
    candidate lay). `budget_tokens` is the constraint budget (see `build_constraints`)."""
    constraints = build_constraints(token_counts, settings, budget_tokens)
    past = _past_runs(history, None, constraints.k)
    if past is None:
        raise ValueError("history is empty: no runs to fit the final predictor on")
    weights, scores = past
    final_round = len(settings.proxies_per_iteration) + 1
    fitted = _fit(
        weights,
        scores,
        settings,
        iteration_seed(seed, final_round, _PREDICTOR_STREAM),
        maximize,
        predictor_settings,
    )
    pool_seed = iteration_seed(seed, final_round, _POOL_STREAM)
    pool = candidate_pool(
        weights,
        scores,
        constraints,
        settings,
        pool_seed,
        maximize,
        exclude_past=False,
        predictor=fitted.predictor,
    )
    choice = choose_final(
        fitted.predictor,
        pool,
        weights,
        scores,
        settings.final_top_k,
        maximize,
        constraints,
        settings.final_region_radius,
        min_weight=settings.final_min_weight,
        trust=final_trust_region(weights, settings.final_trust_radius),
    )
    spread = float(fitted.predictor.predict_spread(choice.mixture[None])[0])
    return OptimalMixture(
        weights=choice.mixture,
        predicted=choice.predicted,
        predicted_spread=spread,
        predictor=fitted,
        pool_size=len(pool) + len(weights),
        choice=choice,
    )


def final_trust_region(
    runs: np.ndarray, multiple: float, enforce: bool = True
) -> TrustRegion | None:
    """The trust region of the final choice around `runs`; None when `multiple` is 0 (off)."""
    return TrustRegion.around(runs, multiple, enforce) if multiple > 0 else None


def scored_runs(history: pl.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights, scores) of every run in `history`, checked; ValueError when it is empty."""
    past = _past_runs(history, None, k)
    if past is None:
        raise ValueError("history is empty: no scored runs")
    return past


def _past_runs(
    history: pl.DataFrame | None, before_iteration: int | None, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(weights, scores) of scored runs, restricted to iterations < `before_iteration` when the
    table has an `iteration` column; None when there are none."""
    if history is None or history.height == 0:
        return None
    if before_iteration is not None and "iteration" in history.columns:
        history = history.filter(pl.col("iteration") < before_iteration)
        if history.height == 0:
            return None
    columns = weight_columns(k)
    if _history_weight_columns(history) != columns:
        raise ValueError(
            f"history weight columns {_history_weight_columns(history)} do not match the {k} "
            f"groups of token_counts (expected {columns[0]}..{columns[-1]})"
        )
    if SCORE_COLUMN not in history.columns:
        raise ValueError(f"history has no {SCORE_COLUMN!r} column; columns: {history.columns}")
    weights = validate_mixture_table(history, columns)
    scores = history[SCORE_COLUMN].cast(pl.Float64).to_numpy()
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        row = int(bad[0])
        where = f"history row {row + 1}"
        if "candidate_id" in history.columns:
            where += f" (candidate_id {history['candidate_id'][row]})"
        raise ValueError(f"{where}: score {scores[row]} is not finite")
    return weights, scores


def _history_weight_columns(history: pl.DataFrame) -> list[str]:
    found = {name for name in history.columns if _WEIGHT_COLUMN.fullmatch(name)}
    return sorted(found, key=lambda name: int(name[2:]))
