"""Mixture evaluation: baselines, statistics and the check's verdict, on hand-made numbers."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import polars as pl
import pytest

from climb_assets.core.search.designs import vertex_mixtures
from climb_assets.core.search.evaluation import (
    BASELINES,
    OPTIMAL,
    Stat,
    baseline_mixtures,
    compact_mean_std_table,
    evaluation_seeds,
    margins,
    margins_table,
    mean_std_table,
    mixture_weights_table,
    optimal_beats_baselines,
    paired_stds,
    same_as,
    stat,
    summarize,
)
from climb_assets.core.search.mixtures import (
    best_single_order,
    build_constraints,
    greedy_fill,
    sample_dirichlet,
)
from climb_assets.settings import SearchSettings

TOKENS = {0: 4000, 1: 3000, 2: 2000, 3: 1000}


def constraints():
    return build_constraints(TOKENS, SearchSettings(max_weight_multiplier=1.6), 4000)


def test_greedy_fill_respects_caps_order_and_sums_to_one() -> None:
    upper = np.array([0.3, 0.5, 0.4, 0.2])
    weights = greedy_fill([2, 1, 0, 3], upper)
    assert np.allclose(weights, [0.1, 0.5, 0.4, 0.0])
    assert abs(weights.sum() - 1) < 1e-12 and (weights <= upper + 1e-12).all()
    assert np.allclose(greedy_fill([3, 0, 1, 2], upper), [0.3, 0.5, 0.0, 0.2])


def test_greedy_fill_refuses_caps_that_cannot_reach_one() -> None:
    with pytest.raises(ValueError, match="sum to"):
        greedy_fill([0, 1], np.array([0.3, 0.5, 0.4]))


def test_best_single_order_ranks_by_best_run_led() -> None:
    history = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]])
    order = best_single_order(history, np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert order == [0, 1, 3, 2]  # 0 led the best run (3.0), then 1; 2 and 3 by prior


def test_baselines_are_named_feasible_and_best_single_is_planted() -> None:
    c = constraints()
    history = sample_dirichlet(c, 40, 0)
    scores = -np.ones(len(history))
    planted = vertex_mixtures(c)[2]  # group 2 at its cap leads the best run by far
    history = np.vstack([history, planted])
    scores = np.append(scores, 5.0)
    optimal = np.array([0.3, 0.3, 0.3, 0.1])
    mixtures = baseline_mixtures(optimal, history, scores, TOKENS, c, seed=3)
    assert list(mixtures) == [OPTIMAL, *BASELINES]
    for name in BASELINES:
        assert c.feasible(mixtures[name]).all(), name
    single = mixtures["best_single"]
    assert math.isclose(single[2], c.upper[2])  # the planted winner first, at its cap
    assert np.count_nonzero(np.isclose(single, c.upper)) >= 2  # then the next ones at theirs
    assert np.array_equal(mixtures["best_observed"], planted)
    again = baseline_mixtures(optimal, history, scores, TOKENS, c, seed=3)
    assert np.array_equal(again["random"], mixtures["random"])


def test_same_as_keeps_every_name_and_points_to_the_first() -> None:
    a, b = np.array([0.5, 0.5]), np.array([0.2, 0.8])
    found = same_as({"optimal": a, "x": b, "y": a + 1e-7, "z": b})
    assert found == {"optimal": None, "x": None, "y": "optimal", "z": "x"}


def test_seeds_are_shared_and_stable() -> None:
    assert evaluation_seeds(7, 2) == evaluation_seeds(7, 3)[:2]
    assert len(set(evaluation_seeds(7, 3))) == 3


def test_summary_statistics() -> None:
    runs = pl.DataFrame(
        {
            "mixture": ["optimal"] * 3 + ["uniform"] * 3,
            "objective": [1.0, 2.0, 3.0, 0.0, 0.0, 0.0],
            "t/accuracy": [0.5, 0.5, 0.5, 0.1, 0.2, 0.3],
        }
    )
    table = summarize(runs, ["objective", "t/accuracy"])
    assert table["mixture"].to_list() == ["optimal", "uniform"]
    assert table["n"].to_list() == [3, 3]
    assert table["objective_mean"].to_list() == [2.0, 0.0]
    assert np.allclose(table["objective_std"].to_list(), [1.0, 0.0])
    assert np.allclose(table["t/accuracy_std"].to_list(), [0.0, 0.1])
    assert math.isnan(stat([1.0]).std)


def test_paired_spread_is_the_noise_of_the_difference_at_equal_seeds() -> None:
    """Seeds move both mixtures together here: each alone spreads by about 1, their difference
    by 0.05, and the verdict still follows the unpaired rule."""
    runs = pl.DataFrame(
        {
            "mixture": ["uniform", "optimal"] * 3,
            "seed_index": [2, 2, 0, 0, 1, 1],  # any row order
            "objective": [2.9, 3.05, 1.0, 1.1, 2.0, 2.2],
        }
    )
    paired = paired_stds(runs)
    assert set(paired) == {"uniform"}
    assert math.isclose(paired["uniform"], 0.05, rel_tol=1e-9)  # std of 0.1, 0.2, 0.15
    stats = {name: stat(g["objective"]) for (name,), g in runs.group_by("mixture")}
    (margin,) = margins(stats, paired=paired)
    assert math.isclose(margin.paired_std, 0.05, rel_tol=1e-9)
    assert margin.spread > 0.9 and math.isclose(margin.margin, 0.15) and not margin.beaten


def test_check_passes_only_beyond_the_larger_spread() -> None:
    stats = {
        OPTIMAL: Stat(3, 1.0, 0.1),
        "uniform": Stat(3, 0.5, 0.2),  # margin 0.5 > 0.2
        "natural": Stat(3, 0.85, 0.05),  # margin 0.15 > 0.1
        "twin": Stat(3, 1.0, 0.1),  # identical mixture: reported, not judged
    }
    found = margins(stats, {"twin": OPTIMAL})
    by = {m.baseline: m for m in found}
    assert by["uniform"].beaten and by["natural"].beaten
    assert by["twin"].same_as_optimal and not by["twin"].beaten
    assert math.isclose(by["uniform"].spread, 0.2) and math.isclose(by["natural"].margin, 0.15)
    assert optimal_beats_baselines(found)

    close = margins({OPTIMAL: Stat(3, 1.0, 0.1), "uniform": Stat(3, 0.95, 0.3)})
    assert not close[0].beaten and not optimal_beats_baselines(close)
    one_seed = margins({OPTIMAL: Stat(1, 1.0, math.nan), "uniform": Stat(1, 0.0, math.nan)})
    assert not optimal_beats_baselines(one_seed)  # no spread known: nothing is proven
    worse = margins({OPTIMAL: Stat(3, 0.0, 0.01), "uniform": Stat(3, 1.0, 0.01)})
    assert worse[0].margin == -1.0 and not optimal_beats_baselines(worse)


def test_the_tables_shown_in_the_ui_are_short_and_say_the_verdict() -> None:
    found = margins(
        {OPTIMAL: Stat(3, 1.0, 0.1), "uniform": Stat(3, 0.5, 0.2), "twin": Stat(3, 1.0, 0.1)},
        {"twin": OPTIMAL},
        {"uniform": 0.05},
    )
    shown = margins_table([asdict(m) for m in found])
    assert shown.columns == ["baseline", "margin", "± seeds", "± paired", "verdict"]
    assert shown.row(0) == ("uniform", "+0.5000", "0.2000", "0.0500", "beaten")
    assert shown.row(1) == ("twin", "+0.0000", "0.1000", "n/a", "same as optimal")
    assert margins_table([]).columns == shown.columns  # no baselines: an empty table

    text = {"text/bits_per_byte_mean": 0.81234, "text/bits_per_byte_std": 0.01}
    first = {"same_as": None, "n": 3, "objective_mean": 1.0, "objective_std": 0.1, **text}
    summary = {
        "order": [OPTIMAL, "twin"],
        "headline_metrics": ["text/bits_per_byte"],
        "mixtures": {OPTIMAL: first, "twin": first | {"same_as": OPTIMAL, "objective_std": None}},
    }
    summary["mixtures"][OPTIMAL]["weights"] = [0.25, 0.75]
    summary["mixtures"]["twin"]["weights"] = [0.0001, 0.9999]
    weights = mixture_weights_table(summary)
    assert weights.rows() == [(OPTIMAL, "1: 0.750, 0: 0.250"), ("twin", "1: 1.000")]
    assert mean_std_table(summary).rows() == [
        (OPTIMAL, 3, "1.0000 ± 0.1000", "0.8123 ± 0.0100"),
        (f"twin (= {OPTIMAL})", 3, "1.0000 ± n/a", "0.8123 ± 0.0100"),
    ]
    assert compact_mean_std_table(summary).rows(named=True)[1] == {
        "mixture": f"twin (= {OPTIMAL})",
        "objective": "1.000 ± n/a",
        "text bpb": "0.812",
    }
