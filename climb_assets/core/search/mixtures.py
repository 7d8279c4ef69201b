"""Mixture sampling on the probability simplex (RegMix-style) under token-budget constraints.

A mixture is a row of weights, one per group (super-cluster), non-negative and summing to one;
many mixtures are an array of shape (n, k) whose column j is group j. Groups given as a dict
{group_id: tokens} are ordered by ascending id.

Constraints (`MixtureConstraints`):
- availability: a mixture realized at T tokens takes weight_i * T tokens from group i, which may
  not exceed available_i * repetition_factor, so weight_i <= available_i * repetition_factor / T.
  T is the constraint budget (`budget_tokens`): the pipeline passes the larger of what a proxy
  trains on and what the final dataset needs (`constraint_budget`);
- RegMix's cap: weight_i <= prior_i * max_weight_multiplier;
- weights below min_weight are zeroed (a group too small to matter is left out).

`core.search.designs` adds the candidates prior-shaped draws never reach (each group at its
cap, mixtures on 2-3 groups, the feasible set's vertices); `greedy_fill` here fills groups to
their caps in a ranked order, as the best single super-cluster (`best_single_mixture`) does.

Initial draws are *rejected* when they break a cap (keeps RegMix's Dirichlet shape); only if too
few draws survive are rejected draws *projected* onto the constraints to top up. Samples around
given centers are always projected (a perturbation of a mixture at its cap should stay near it,
not be thrown away).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from climb_assets.settings import SearchSettings, Settings

_FILL_TOLERANCE = 1e-9

# RegMix: Dirichlet concentration drawn from 15 log-spaced values in [0.1, 5].
CONCENTRATION_STRENGTHS = np.logspace(np.log10(0.1), np.log10(5.0), 15)
# Mixtures equal after rounding to this many decimals are the same mixture (dedup, "seen" sets).
DEDUP_DECIMALS = 4
# Rejection sampling: a batch is the number still wanted / estimated acceptance x this margin;
# after MAX_BATCHES batches, rejected draws are projected to top up.
_BATCH_MARGIN = 1.2
_MIN_ACCEPTANCE = 0.02
MAX_BATCHES = 20
_MAX_BATCH = 200_000
_PROJECTION_TOLERANCE = 1e-9
_BISECTION_STEPS = 64  # halves a width-2 interval below float64 resolution

Seed = int | np.random.Generator


def constraint_budget(settings: Settings) -> int:
    """Tokens a mixture's caps are computed for (caps = tokens x search.repetition_factor / this),
    passed as `budget_tokens`.

    A candidate must be trainable as a proxy (tokens_per_proxy tokens) and, if it wins, be
    realizable as the final dataset (token_budget tokens, each document repeated at most
    dataset.repetition_factor times), so the larger of the two requirements binds.
    """
    dataset = settings.dataset
    realizable = (
        dataset.token_budget * settings.search.repetition_factor / dataset.repetition_factor
    )
    return max(settings.proxy.tokens_per_proxy, int(realizable))


def pool_token_limit(settings: Settings) -> int:
    """Tokens the proxy pool keeps of a super-cluster: proxy.pool_coverage times the most that
    one model (a proxy or an evaluation model) can draw from it."""
    drawn = max(settings.proxy.tokens_per_proxy, settings.evaluation.tokens)
    return max(1, round(settings.proxy.pool_coverage * drawn))


class InfeasibleBudgetError(ValueError):
    """No mixture can satisfy the token-availability and weight caps together."""


@dataclass(frozen=True)
class MixtureConstraints:
    """Per-group bounds that every mixture must respect (see module docstring)."""

    prior: np.ndarray  # (k,) Dirichlet prior, sums to 1
    upper: np.ndarray  # (k,) maximum weight of each group, in [0, 1]
    min_weight: float

    @property
    def k(self) -> int:
        return int(self.prior.shape[0])

    @classmethod
    def unconstrained(
        cls, k: int, prior: np.ndarray | None = None, min_weight: float = 0.0
    ) -> MixtureConstraints:
        """Whole simplex allowed (used when token counts are unknown, e.g. a user's table)."""
        prior = np.full(k, 1.0 / k) if prior is None else _normalized(np.asarray(prior, float))
        return cls(prior=prior, upper=np.ones(k), min_weight=min_weight)

    def feasible(self, weights: np.ndarray, atol: float = _PROJECTION_TOLERANCE) -> np.ndarray:
        """Boolean mask of rows that are on the simplex and within every cap."""
        weights = np.atleast_2d(weights)
        on_simplex = (weights >= -atol).all(axis=1) & (np.abs(weights.sum(axis=1) - 1) <= atol)
        return on_simplex & (weights <= self.upper + atol).all(axis=1)


def token_count_array(token_counts: Mapping[int, int] | Sequence[int] | np.ndarray) -> np.ndarray:
    """Token counts as a float array in group order (dict keys sorted ascending)."""
    if isinstance(token_counts, Mapping):
        counts = np.array([token_counts[key] for key in sorted(token_counts)], dtype=float)
    else:
        counts = np.asarray(token_counts, dtype=float).reshape(-1)
    if counts.size == 0:
        raise ValueError("token_counts is empty: at least one group is needed")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"token_counts must be finite and non-negative, got {counts.tolist()}")
    if counts.sum() <= 0:
        raise ValueError("token_counts are all zero: no group has any tokens")
    return counts


def regmix_prior(token_counts: np.ndarray, temperature: float) -> np.ndarray:
    """Dirichlet prior: token share ** temperature, normalized (0.5 flattens a skewed corpus)."""
    share = token_counts / token_counts.sum()
    return _normalized(np.where(share > 0, share**temperature, 0.0))


def build_constraints(
    token_counts: Mapping[int, int] | Sequence[int] | np.ndarray,
    settings: SearchSettings,
    budget_tokens: int,
) -> MixtureConstraints:
    """Constraints for mixtures realized at `budget_tokens` tokens (the constraint budget, not
    necessarily a proxy's training tokens); raises InfeasibleBudgetError."""
    if budget_tokens <= 0:
        raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")
    counts = token_count_array(token_counts)
    prior = regmix_prior(counts, settings.prior_temperature)
    availability_cap = counts * settings.repetition_factor / budget_tokens
    prior_cap = prior * settings.max_weight_multiplier
    upper = np.minimum(np.minimum(availability_cap, prior_cap), 1.0)
    _check_budget(counts, availability_cap, upper, settings, budget_tokens)
    return MixtureConstraints(prior=prior, upper=upper, min_weight=settings.min_weight)


def _check_budget(
    counts: np.ndarray,
    availability_cap: np.ndarray,
    upper: np.ndarray,
    settings: SearchSettings,
    budget_tokens: int,
) -> None:
    supply = counts.sum() * settings.repetition_factor
    if supply < budget_tokens:
        raise InfeasibleBudgetError(
            f"a mixture must supply budget_tokens={budget_tokens:,} tokens (the larger of "
            "proxy.tokens_per_proxy and dataset.token_budget x search.repetition_factor / "
            f"dataset.repetition_factor) but all groups together supply only {counts.sum():,.0f} "
            f"tokens x search.repetition_factor={settings.repetition_factor} = {supply:,.0f}; "
            "when the proxy binds, lower proxy.tokens_per_proxy or raise "
            "search.repetition_factor; when the dataset binds, lower dataset.token_budget or "
            "raise dataset.repetition_factor"
        )
    if upper.sum() < 1 - _PROJECTION_TOLERANCE:
        raise InfeasibleBudgetError(
            f"the per-group caps sum to {upper.sum():.4f} < 1: availability caps "
            f"(tokens x search.repetition_factor={settings.repetition_factor} / budget_tokens="
            f"{budget_tokens:,}) sum to {np.minimum(availability_cap, 1).sum():.4f} but the prior "
            f"caps (prior x search.max_weight_multiplier={settings.max_weight_multiplier}) cut "
            "them further; raise search.max_weight_multiplier, or loosen the availability caps "
            "(search.repetition_factor when proxy.tokens_per_proxy sets budget_tokens, "
            "dataset.repetition_factor when dataset.token_budget does)"
        )


def sample_initial(
    token_counts: Mapping[int, int] | Sequence[int] | np.ndarray,
    n: int,
    settings: SearchSettings,
    budget_tokens: int,
    seed: Seed,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """`n` distinct RegMix Dirichlet mixtures (n, k) that respect the constraints.

    Returns fewer rows only when the feasible set has fewer distinct mixtures (e.g. one group).
    Rows of `exclude` (already evaluated mixtures) are never returned.
    """
    constraints = build_constraints(token_counts, settings, budget_tokens)
    return sample_dirichlet(constraints, n, seed, exclude=exclude)


def greedy_fill(order: Sequence[int], upper: np.ndarray) -> np.ndarray:
    """Weights that fill groups in `order`, each up to its cap, until the total is 1."""
    upper = np.asarray(upper, dtype=float)
    weights = np.zeros_like(upper)
    left = 1.0
    for group in order:
        if left <= _FILL_TOLERANCE:
            break
        weights[group] = min(upper[group], left)
        left -= weights[group]
    if left > _FILL_TOLERANCE:
        raise ValueError(f"greedy_fill: the caps of groups {list(order)} sum to {1 - left:.4f} < 1")
    return weights / weights.sum()  # removes float residue; caps hold within _FILL_TOLERANCE


def best_single_order(
    history_weights: np.ndarray, history_scores: np.ndarray, prior: np.ndarray
) -> list[int]:
    """Groups ranked by the best score of the runs where they had the largest weight (higher is
    better); groups that never led a run follow, largest prior first."""
    weights = np.atleast_2d(np.asarray(history_weights, dtype=float))
    scores = np.asarray(history_scores, dtype=float)
    k = len(prior)
    best = np.full(k, -np.inf)
    if weights.size:
        leaders = weights.argmax(axis=1)
        for leader, score in zip(leaders, scores, strict=True):
            if np.isfinite(score):
                best[leader] = max(best[leader], score)
    led = sorted((g for g in range(k) if np.isfinite(best[g])), key=lambda g: (-best[g], g))
    rest = sorted((g for g in range(k) if not np.isfinite(best[g])), key=lambda g: (-prior[g], g))
    return led + rest


def best_single_mixture(
    history_weights: np.ndarray, history_scores: np.ndarray, constraints: MixtureConstraints
) -> np.ndarray:
    """The best single super-cluster within the caps: groups filled to their caps in the order
    of `best_single_order` (the best group at its cap, the rest on the next best)."""
    order = best_single_order(history_weights, history_scores, constraints.prior)
    return greedy_fill(order, constraints.upper)


def sample_dirichlet(
    constraints: MixtureConstraints, n: int, seed: Seed, exclude: np.ndarray | None = None
) -> np.ndarray:
    """RegMix draws from Dirichlet(prior * strength): rejected if off-cap, deduplicated."""
    rng = np.random.default_rng(seed)
    seen = set(mixture_keys(exclude)) if exclude is not None else set()
    accepted: list[np.ndarray] = []
    rejected: list[np.ndarray] = []
    acceptance = 1.0  # share of a batch that was kept, re-estimated after every batch
    for _ in range(MAX_BATCHES):
        wanted = n - len(accepted)
        size = min(int(wanted * _BATCH_MARGIN / max(acceptance, _MIN_ACCEPTANCE)), _MAX_BATCH) + 16
        batch = _dirichlet_batch(constraints, size, rng)
        batch = zero_small_weights(batch, constraints.min_weight)
        ok = constraints.feasible(batch)
        taken = take_new(batch[ok], seen, wanted)
        accepted.extend(taken)
        if sum(map(len, rejected)) < 2 * n:  # enough to top up from; bounds memory
            rejected.append(batch[~ok][: 2 * n])
        if len(accepted) >= n:
            break
        acceptance = len(taken) / len(batch)
    if len(accepted) < n:  # caps too tight for rejection alone: project what was rejected
        projected = enforce_constraints(np.concatenate(rejected), constraints)
        accepted.extend(take_new(projected, seen, n - len(accepted)))
    return stack_rows(accepted, constraints.k)


def _dirichlet_batch(
    constraints: MixtureConstraints, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Equal numbers of draws per strength (stratified), shuffled; inactive groups stay at 0."""
    active = (constraints.prior > 0) & (constraints.upper > 0)
    per_strength = -(-size // len(CONCENTRATION_STRENGTHS))
    draws = np.zeros((per_strength * len(CONCENTRATION_STRENGTHS), constraints.k))
    if active.sum() == 1:
        draws[:, active] = 1.0
        return draws
    for index, strength in enumerate(CONCENTRATION_STRENGTHS):
        rows = slice(index * per_strength, (index + 1) * per_strength)
        draws[rows, active] = rng.dirichlet(constraints.prior[active] * strength, per_strength)
    draws = draws[np.isfinite(draws).all(axis=1) & (draws.sum(axis=1) > 0)]
    return _normalized(draws[rng.permutation(len(draws))])


def sample_around(
    centers: np.ndarray,
    n: int,
    constraints: MixtureConstraints,
    seed: Seed,
    concentration: tuple[float, float] = (20.0, 400.0),
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Up to `n` distinct mixtures near `centers` (m, k), projected onto the constraints.

    Each draw is Dirichlet(center * c) for its center (centers taken in turn) with c log-uniform
    in `concentration`: larger c means closer to the center. Groups at zero in a center can come
    back with a small weight, so exploration is not stuck on the center's support.
    """
    centers = np.atleast_2d(np.asarray(centers, dtype=float))
    if centers.shape[1] != constraints.k:
        raise ValueError(f"centers have {centers.shape[1]} groups, constraints {constraints.k}")
    rng = np.random.default_rng(seed)
    seen = set(mixture_keys(exclude)) if exclude is not None else set()
    accepted: list[np.ndarray] = []
    for _ in range(MAX_BATCHES):
        # Perturbations rarely collide, so a batch a little over n usually suffices.
        wanted = n - len(accepted)
        batch = _perturb(centers, int(wanted * _BATCH_MARGIN) + 16, constraints, concentration, rng)
        accepted.extend(take_new(enforce_constraints(batch, constraints), seen, wanted))
        if len(accepted) >= n:
            break
    return stack_rows(accepted, constraints.k)


def _perturb(
    centers: np.ndarray,
    count: int,
    constraints: MixtureConstraints,
    concentration: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    active = constraints.upper > 0
    chosen = centers[np.arange(count) % len(centers)]
    scale = np.exp(rng.uniform(np.log(concentration[0]), np.log(concentration[1]), count))
    # The floor lets absent groups reappear; relative to k so it stays small for many groups.
    alpha = scale[:, None] * (chosen[:, active] + 0.05 / active.sum())
    gamma = rng.standard_gamma(alpha)
    draws = np.zeros((count, constraints.k))
    draws[:, active] = gamma / gamma.sum(axis=1, keepdims=True)
    return draws[np.isfinite(draws).all(axis=1)]


def zero_small_weights(weights: np.ndarray, min_weight: float) -> np.ndarray:
    """Zero weights below `min_weight` and renormalize (each row keeps its largest weight)."""
    keep = weights >= min_weight
    keep[np.arange(len(weights)), weights.argmax(axis=1)] = True
    return _normalized(np.where(keep, weights, 0.0))


def project_to_simplex(weights: np.ndarray, upper: np.ndarray | None = None) -> np.ndarray:
    """Euclidean projection of each row onto {w : 0 <= w <= upper, sum(w) = 1}.

    Solves sum(clip(v - tau, 0, upper)) = 1 for tau by bisection (vectorized over rows).
    `upper` is (k,) or (n, k); each row's bounds must sum to at least 1.
    """
    values = np.atleast_2d(np.asarray(weights, dtype=float))
    bounds = np.broadcast_to(np.ones(values.shape[1]) if upper is None else upper, values.shape)
    if (bounds.sum(axis=1) < 1 - _PROJECTION_TOLERANCE).any():
        raise InfeasibleBudgetError("upper bounds sum to less than 1: no mixture fits them")
    if not np.isfinite(values).all():
        raise ValueError("cannot project non-finite weights onto the simplex")
    low = (values - bounds).min(axis=1)  # here every clip hits its bound: sum >= 1
    high = values.max(axis=1)  # here every clip is 0: sum = 0; `high` keeps sum <= 1
    for _ in range(_BISECTION_STEPS):
        tau = (low + high) / 2
        too_much = np.clip(values - tau[:, None], 0, bounds).sum(axis=1) > 1
        low = np.where(too_much, tau, low)
        high = np.where(too_much, high, tau)
    return np.clip(values - _exact_shift(values, bounds, high)[:, None], 0, bounds)


def _exact_shift(values: np.ndarray, bounds: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Re-solve tau in closed form on the free set found by bisection, so sums are exact and
    entries clipped to 0 are exactly 0 (bisection alone leaves residues like 1e-16)."""
    shifted = values - tau[:, None]
    free = (shifted > 0) & (shifted < bounds)
    capped_total = np.where(shifted >= bounds, bounds, 0.0).sum(axis=1)
    n_free = free.sum(axis=1)
    exact = (np.where(free, values, 0.0).sum(axis=1) + capped_total - 1) / np.maximum(n_free, 1)
    return np.where(n_free > 0, exact, tau)


def enforce_constraints(weights: np.ndarray, constraints: MixtureConstraints) -> np.ndarray:
    """Project rows onto the caps, then zero weights below min_weight and project again.

    Zeroing is skipped in a row when the groups left could not reach a total of 1 under their
    caps, so the caps always hold; min_weight is the softer rule.
    """
    upper = np.broadcast_to(constraints.upper, np.atleast_2d(weights).shape).copy()
    projected = project_to_simplex(weights, upper)
    for _ in range(constraints.k):
        small = (projected > 0) & (projected < constraints.min_weight)
        reduced = np.where(small, 0.0, upper)
        can_zero = small.any(axis=1) & (reduced.sum(axis=1) >= 1 - _PROJECTION_TOLERANCE)
        if not can_zero.any():
            break
        upper[can_zero] = reduced[can_zero]
        projected = project_to_simplex(projected, upper)
    return projected


def mixture_keys(weights: np.ndarray, decimals: int = DEDUP_DECIMALS) -> list[bytes]:
    """Hashable keys: mixtures with equal keys are treated as the same mixture."""
    rounded = np.round(np.atleast_2d(np.asarray(weights, dtype=float)), decimals) + 0.0
    return [row.tobytes() for row in rounded]


def unique_rows(weights: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Rows in first-seen order with duplicates (and rows of `exclude`) removed."""
    seen = set(mixture_keys(exclude)) if exclude is not None else set()
    return stack_rows(take_new(weights, seen, len(weights)), np.atleast_2d(weights).shape[1])


def take_new(rows: np.ndarray, seen: set[bytes], limit: int) -> list[np.ndarray]:
    """Up to `limit` rows whose keys are not in `seen` (adds their keys to it)."""
    taken: list[np.ndarray] = []
    for row, key in zip(rows, mixture_keys(rows), strict=True):
        if len(taken) >= limit:
            break
        if key not in seen:
            seen.add(key)
            taken.append(row)
    return taken


def validate_mixture_table(
    df: pl.DataFrame, weight_columns: Iterable[str], atol: float = 1e-6
) -> np.ndarray:
    """Weights of `df` as an (n, k) float array; ValueError naming the first bad row and column.

    Each row must be finite, non-negative and sum to 1 within `atol`. Rows are numbered from 1.
    """
    columns = list(weight_columns)
    missing = [name for name in columns if name not in df.columns]
    if missing:
        raise ValueError(f"unknown weight columns {missing}; available columns: {df.columns}")
    if not columns:
        raise ValueError("no weight columns given")
    for name in columns:
        if not df.schema[name].is_numeric():
            raise ValueError(f"weight column {name!r} is {df.schema[name]}, not numeric")
    weights = df.select(pl.col(columns).cast(pl.Float64)).to_numpy()
    _check_cells(weights, columns, "finite", ~np.isfinite(weights))
    _check_cells(weights, columns, "non-negative", weights < 0)
    totals = weights.sum(axis=1)
    bad_rows = np.flatnonzero(np.abs(totals - 1) > atol)
    if bad_rows.size:
        row = int(bad_rows[0])
        raise ValueError(
            f"row {row + 1}: weights {columns} sum to {totals[row]:.8g}, not 1 (tolerance "
            f"{atol:g}); {bad_rows.size} row(s) affected"
        )
    return weights


def _check_cells(weights: np.ndarray, columns: list[str], rule: str, bad: np.ndarray) -> None:
    if bad.any():
        row, col = (int(index) for index in np.argwhere(bad)[0])
        raise ValueError(
            f"row {row + 1}, column {columns[col]!r}: weight {weights[row, col]} is not {rule}"
        )


def _normalized(values: np.ndarray) -> np.ndarray:
    return values / values.sum(axis=-1, keepdims=True)


def stack_rows(rows: list[np.ndarray], k: int) -> np.ndarray:
    return np.vstack(rows) if rows else np.empty((0, k))


WEIGHTS_TEXT = "super-cluster: weight"  # the header of a column of `weights_text`


def weights_text(weights: Sequence[float], shown: float = 0.0005) -> str:
    """A mixture as '2: 0.844, 0: 0.088': weight by super-cluster number, largest first, those
    under `shown` left out. Wraps where a table has a column per super-cluster cannot."""
    ranked = sorted(enumerate(weights), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{i}: {w:.3f}" for i, w in ranked if w >= shown)
