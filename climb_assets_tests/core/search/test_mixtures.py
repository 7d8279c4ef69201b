from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from climb_assets.core.search.mixtures import (
    InfeasibleBudgetError,
    MixtureConstraints,
    build_constraints,
    enforce_constraints,
    mixture_keys,
    project_to_simplex,
    regmix_prior,
    sample_around,
    sample_initial,
    validate_mixture_table,
)
from climb_assets.settings import SearchSettings

SETTINGS = SearchSettings()
# Skewed groups: with a 100k-token constraint budget and repetition 4, groups 3 and 4 are capped by
# availability (0.2 and 0.08), group 0 only by the prior cap.
TOKEN_COUNTS = {0: 2_000_000, 1: 300_000, 2: 90_000, 3: 5_000, 4: 2_000}
BUDGET_TOKENS = 100_000


def _initial(n: int = 200, seed: int = 0, **kwargs: object) -> np.ndarray:
    return sample_initial(TOKEN_COUNTS, n, SETTINGS, BUDGET_TOKENS, seed, **kwargs)


def test_initial_mixtures_lie_on_the_simplex_and_are_distinct() -> None:
    weights = _initial()
    assert weights.shape == (200, 5)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert len(set(mixture_keys(weights))) == len(weights)


def test_caps_from_availability_and_prior_hold() -> None:
    constraints = build_constraints(TOKEN_COUNTS, SETTINGS, BUDGET_TOKENS)
    availability = np.array(list(TOKEN_COUNTS.values())) * SETTINGS.repetition_factor
    np.testing.assert_allclose(constraints.upper[3:], availability[3:] / BUDGET_TOKENS)
    weights = _initial()
    # A proxy never asks a group for more than its tokens times the repetition factor.
    assert (weights * BUDGET_TOKENS <= availability + 1e-6).all()
    prior = regmix_prior(np.array(list(TOKEN_COUNTS.values()), float), 0.5)
    assert (weights <= prior * SETTINGS.max_weight_multiplier + 1e-9).all()
    assert constraints.feasible(weights).all()


def test_weights_below_min_weight_are_zeroed() -> None:
    weights = _initial(n=300)
    nonzero = weights[weights > 0]
    assert nonzero.min() >= SETTINGS.min_weight
    assert (weights == 0).any()  # low Dirichlet concentrations do produce tiny weights


def test_sampling_is_deterministic_for_a_seed() -> None:
    np.testing.assert_array_equal(_initial(seed=7), _initial(seed=7))
    assert not np.array_equal(_initial(seed=7), _initial(seed=8))


def test_excluded_mixtures_are_not_drawn_again() -> None:
    first = _initial(n=50, seed=3)
    again = _initial(n=50, seed=3, exclude=first)
    assert not set(mixture_keys(first)) & set(mixture_keys(again))


def test_dict_token_counts_are_ordered_by_group_id() -> None:
    shuffled = dict(reversed(list(TOKEN_COUNTS.items())))
    in_order = build_constraints(TOKEN_COUNTS, SETTINGS, BUDGET_TOKENS)
    from_shuffled = build_constraints(shuffled, SETTINGS, BUDGET_TOKENS)
    np.testing.assert_array_equal(in_order.upper, from_shuffled.upper)


def test_budget_larger_than_all_tokens_times_repetition_is_infeasible() -> None:
    total = sum(TOKEN_COUNTS.values())
    too_many = int(total * SETTINGS.repetition_factor) + 1
    with pytest.raises(InfeasibleBudgetError, match=f"budget_tokens={too_many:,}"):
        sample_initial(TOKEN_COUNTS, 4, SETTINGS, too_many, 0)


def test_prior_cap_that_leaves_no_mixture_is_reported() -> None:
    # Prior [0.75, 0.25] capped at 1x; availability caps group 1 at 0.1: caps sum to 0.85.
    settings = SearchSettings(max_weight_multiplier=1.0, repetition_factor=1.0)
    with pytest.raises(InfeasibleBudgetError, match="max_weight_multiplier"):
        build_constraints([900, 100], settings, 1000)


def test_tight_caps_fall_back_to_projection_and_still_hold() -> None:
    # Caps of 0.3 per group: almost every low-concentration Dirichlet draw breaks one.
    settings = SearchSettings(repetition_factor=1.0)
    weights = sample_initial([30, 30, 30, 30], 40, settings, 100, seed=0)
    assert weights.shape == (40, 4)
    assert (weights <= 0.3 + 1e-9).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)


def test_a_single_group_has_a_single_mixture() -> None:
    np.testing.assert_array_equal(sample_initial([500], 5, SETTINGS, 100, 0), [[1.0]])


def test_projection_matches_known_points_and_is_closest() -> None:
    np.testing.assert_allclose(project_to_simplex(np.array([[0.5, 0.5, 0.5]])), [[1 / 3] * 3])
    np.testing.assert_allclose(project_to_simplex(np.array([[2.0, 0.0, 0.0]])), [[1, 0, 0]])
    upper = np.array([0.5, 1.0, 1.0])
    np.testing.assert_allclose(
        project_to_simplex(np.array([[1.0, 0, 0]]), upper), [[0.5, 0.25, 0.25]]
    )
    rng = np.random.default_rng(0)
    point = rng.normal(size=(1, 3))
    projected = project_to_simplex(point, upper)
    others = project_to_simplex(rng.normal(size=(500, 3)), upper)  # feasible points
    assert (
        np.linalg.norm(others - point, axis=1) >= np.linalg.norm(projected - point) - 1e-9
    ).all()


def test_enforce_constraints_zeroes_small_weights_within_caps() -> None:
    constraints = MixtureConstraints(
        prior=np.full(3, 1 / 3), upper=np.array([0.7, 0.7, 0.7]), min_weight=0.05
    )
    fixed = enforce_constraints(np.array([[0.69, 0.3, 0.01]]), constraints)
    np.testing.assert_allclose(fixed, [[0.695, 0.305, 0.0]])


def test_samples_around_centers_stay_close_and_feasible() -> None:
    constraints = build_constraints(TOKEN_COUNTS, SETTINGS, BUDGET_TOKENS)
    centers = _initial(n=3, seed=1)
    tight = sample_around(centers, 300, constraints, seed=0, concentration=(500.0, 1000.0))
    loose = sample_around(centers, 300, constraints, seed=0, concentration=(2.0, 5.0))
    assert constraints.feasible(tight).all() and constraints.feasible(loose).all()

    def mean_distance(samples: np.ndarray) -> float:
        return float(np.abs(samples[:, None, :] - centers[None]).sum(axis=2).min(axis=1).mean())

    assert mean_distance(tight) < 0.1 < mean_distance(loose)


def test_validate_mixture_table_names_row_and_column() -> None:
    good = pl.DataFrame({"a": [0.5, 0.2], "b": [0.5, 0.8], "score": [1.0, 2.0]})
    np.testing.assert_allclose(validate_mixture_table(good, ["a", "b"]), [[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match=r"row 2: weights \['a', 'b'\] sum to 0\.9"):
        validate_mixture_table(pl.DataFrame({"a": [0.5, 0.2], "b": [0.5, 0.7]}), ["a", "b"])
    with pytest.raises(ValueError, match="row 1, column 'b'.*non-negative"):
        validate_mixture_table(pl.DataFrame({"a": [1.2], "b": [-0.2]}), ["a", "b"])
    with pytest.raises(ValueError, match="row 2, column 'a'.*finite"):
        validate_mixture_table(
            pl.DataFrame({"a": [0.5, float("nan")], "b": [0.5, 0.5]}), ["a", "b"]
        )
    with pytest.raises(ValueError, match=r"unknown weight columns \['c'\].*score"):
        validate_mixture_table(good, ["a", "c"])
