"""Successive halving's decisions, as pure functions: who goes on, who is repeated, and what a
stopped candidate's objective is estimated to be."""

import numpy as np
import pytest

from climb_assets.core.search.halving import (
    estimate_full_objectives,
    halving_plan,
    kept_candidates,
    repeats_among_kept,
)
from climb_assets.settings import ProxySettings, SearchSettings

PROXY = ProxySettings(tokens_per_proxy=200_000, batch_size=16, seq_len=128)  # 98 steps


def test_the_plan_stops_at_a_logged_step_and_keeps_at_least_two() -> None:
    plan = halving_plan(24, SearchSettings(rung_fraction=0.3, rung_keep=0.5), PROXY)
    assert plan is not None and plan.keep == 12
    assert plan.stop_after == 29 and plan.rung_tokens == 29 * 16 * 128
    assert halving_plan(5, SearchSettings(rung_keep=0.1), PROXY).keep == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("candidates", "search"),
    [
        (24, SearchSettings(rung_fraction=1.0)),  # turned off
        (3, SearchSettings()),  # too few to halve
        (4, SearchSettings(rung_keep=1.0)),  # everyone goes on anyway
        (24, SearchSettings(rung_fraction=0.999)),  # the rung is the last step
    ],
)
def test_no_halving_where_it_would_save_nothing(candidates: int, search: SearchSettings) -> None:
    assert halving_plan(candidates, search, PROXY) is None


def test_the_best_at_the_rung_go_on_and_ties_go_to_the_earlier_candidate() -> None:
    kept = kept_candidates([-3.0, -2.5, -2.5, -4.0, -2.0], 3)
    assert kept.tolist() == [4, 1, 2]
    with pytest.raises(ValueError, match="finite"):
        kept_candidates([-3.0, float("nan")], 1)


def test_repeats_are_the_planned_ones_that_went_on_then_the_best_kept() -> None:
    assert repeats_among_kept([0, 3], kept=[4, 3, 1], count=2) == [3, 4]
    assert repeats_among_kept([0, 2], kept=[4, 3], count=2) == [4, 3]
    assert repeats_among_kept([1], kept=[4, 1], count=3) == [1, 4]


def test_estimates_follow_the_line_of_the_finished_runs_below_the_round_s_worst() -> None:
    finished_rung = np.array([-3.0, -2.8, -2.6, -2.4])
    finished_full = 0.5 * finished_rung - 1.0  # full = -1 + 0.5 * rung, exactly
    estimates = estimate_full_objectives(
        np.array([-3.4, -3.2]), finished_rung, finished_full, ceiling=-1.0
    )
    np.testing.assert_allclose(estimates, [-2.7, -2.6])
    capped = estimate_full_objectives(np.array([-3.4]), finished_rung, finished_full, -2.75)
    assert capped[0] < -2.75


def test_a_falling_or_unfit_line_keeps_the_rung_s_order() -> None:
    rung, full = np.array([-3.0, -2.0, -2.5]), np.array([-2.0, -2.4, -2.2])  # falls
    estimates = estimate_full_objectives(np.array([-3.5, -3.2]), rung, full, ceiling=0.0)
    assert estimates[0] < estimates[1]  # slope 1: a plain shift
    shifted = estimate_full_objectives(np.array([-3.5]), np.array([-3.0]), np.array([-2.0]), 0.0)
    np.testing.assert_allclose(shifted, [-2.5])
    with pytest.raises(ValueError, match="no finished run"):
        estimate_full_objectives(np.array([-3.0]), np.array([]), np.array([]), 0.0)
