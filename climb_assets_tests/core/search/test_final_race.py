"""The final race: who enters, who wins, and that it trains real proxies on fresh seeds only."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from climb_assets.core.search.evaluation import baseline_mixtures
from climb_assets.core.search.final_race import (
    RACE_SCHEMA,
    Finalist,
    RaceResult,
    describe_standings,
    finalists,
    race_winner,
    run_race,
)
from climb_assets.core.search.mixtures import MixtureConstraints, build_constraints
from climb_assets.core.search.proxy_jobs import ProxyJob, ProxyTrainer
from climb_assets_tests.core.search.tiny_search import BUDGET_TOKENS, SETTINGS, TOKEN_COUNTS

CONSTRAINTS = MixtureConstraints(
    prior=np.array([0.5, 0.3, 0.2]), upper=np.array([0.6, 0.6, 0.6]), min_weight=0.0
)
OBSERVED = np.array([[0.6, 0.4, 0.0], [0.2, 0.2, 0.6], [0.4, 0.6, 0.0]])
SCORES = np.array([-2.0, -1.5, -1.8])


def test_the_finalists_are_the_predicted_choice_the_best_run_and_the_best_single_group() -> None:
    entrants = finalists(np.array([0.3, 0.3, 0.4]), OBSERVED, SCORES, CONSTRAINTS)
    by_name = {f.name: f for f in entrants}
    assert [f.name for f in entrants] == ["predicted", "best_observed", "best_single"]
    np.testing.assert_array_equal(by_name["best_observed"].weights, OBSERVED[1])
    # Group 2 led the best run (-1.5), then group 1 (-1.8): each filled to its cap in turn.
    np.testing.assert_allclose(by_name["best_single"].weights, [0.0, 0.4, 0.6])
    assert all(f.same_as is None for f in entrants)
    # The same mixtures as the evaluation's baselines of those names.
    baselines = baseline_mixtures(
        entrants[0].weights, OBSERVED, SCORES, [500, 300, 200], CONSTRAINTS, seed=0
    )
    for name in ("best_observed", "best_single"):
        np.testing.assert_allclose(by_name[name].weights, baselines[name])


def test_a_finalist_equal_to_an_earlier_one_is_raced_once() -> None:
    entrants = finalists(OBSERVED[1], OBSERVED, SCORES, CONSTRAINTS)
    assert [(f.name, f.same_as) for f in entrants] == [
        ("predicted", None),
        ("best_observed", "predicted"),
        ("best_single", None),
    ]


def test_the_best_mean_wins_and_a_tie_keeps_the_earlier_finalist() -> None:
    names = ["predicted", "best_observed", "best_single"]
    # best_single has the best single score but the worst mean.
    scores = np.array([[-1.0, -1.2], [-1.3, -1.3], [-0.5, -2.0]])
    assert race_winner(names, scores) == 0
    assert race_winner(names, np.array([[-1.0, -1.0], [-0.9, -1.1], [-1.5, -1.5]])) == 0
    with pytest.raises(ValueError, match="not finite"):
        race_winner(names, np.array([[-1.0], [np.nan], [-1.0]]))


def test_describe_standings_names_the_winner_first_and_the_twins() -> None:
    standings = [
        {"finalist": "predicted", "raced_as": "predicted", "mean": -1.1, "std": 0.1,
         "seeds": 3, "winner": False},
        {"finalist": "best_observed", "raced_as": "predicted", "mean": -1.1, "std": 0.1,
         "seeds": 3, "winner": False},
        {"finalist": "best_single", "raced_as": "best_single", "mean": -1.0, "std": 0.05,
         "seeds": 3, "winner": True},
    ]  # fmt: skip
    assert describe_standings(standings) == (
        "final race on 3 fresh seeds (winner first): best_single -1.0000 ± 0.050; "
        "predicted -1.1000 ± 0.100; best_observed = predicted"
    )


def test_the_race_measures_the_seed_noise_pooled_over_its_finalists() -> None:
    entrants = [
        Finalist("predicted", np.array([0.5, 0.5])),
        Finalist("best_observed", np.array([0.5, 0.5]), same_as="predicted"),
        Finalist("best_single", np.array([1.0, 0.0])),
    ]
    runs = pl.DataFrame(
        {
            "finalist": ["predicted"] * 3 + ["best_single"] * 3,
            "candidate_id": [10] * 3 + [11] * 3,
            "repeat": [1, 2, 3] * 2,
            "objective": [-1.0, -1.2, -1.4, -2.0, -2.0, -2.3],
        },
        schema=RACE_SCHEMA,
    )
    race = RaceResult(entrants, runs, entrants[0])
    # Sample variances 0.04 and 0.03 on 2 degrees of freedom each: pooled sqrt(0.035).
    assert race.seed_noise() == pytest.approx(np.sqrt(0.035))
    one_seed = RaceResult(entrants, runs.filter(pl.col("repeat") == 1), entrants[0])
    assert one_seed.seed_noise() is None


def test_a_race_trains_every_distinct_finalist_on_the_same_fresh_seeds(
    pool_dir: Path, tmp_path: Path
) -> None:
    constraints = build_constraints(TOKEN_COUNTS, SETTINGS.search, BUDGET_TOKENS)
    observed = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.4, 0.3, 0.3]])
    entrants = finalists(observed[2], observed, np.array([-3.0, -2.0, -2.5]), constraints)
    assert entrants[1].same_as is None  # three distinct mixtures
    trainer = ProxyTrainer(SETTINGS, pool_dir, tmp_path / "race", "tiny-race")
    said: list[str] = []
    race = run_race(entrants, 2, 100, trainer, SETTINGS, said.append, said.append)

    assert race.runs.height == 3 * 2
    assert sorted(set(race.runs["repeat"])) == [1, 2]  # never the search's own seed (repeat 0)
    assert sorted(set(race.runs["candidate_id"])) == [100, 101, 102]
    means = race.runs.group_by("finalist").agg(pl.col("objective").mean())
    best = means.sort("objective", descending=True)["finalist"][0]
    assert race.winner.name == best
    standings = race.standings()
    assert standings["winner"].sum() == 1 and (standings["seeds"] == 2).all()
    # Seeds differ within a finalist; the same seed for every finalist (common random numbers):
    # a finalist's score is that of its mixture trained directly with that repeat's seed.
    first = race.runs.filter(pl.col("finalist") == "predicted").sort("repeat")
    assert first["objective"][0] != first["objective"][1]
    direct = ProxyTrainer(SETTINGS, pool_dir, tmp_path / "direct", "tiny-race")(
        ProxyJob(7, tuple(map(float, observed[2])), 2)
    )
    assert direct["row"]["objective"] == first["objective"][1]

    # Checkpointed: deciding the race again trains nothing.
    said.clear()
    again = run_race(entrants, 2, 100, trainer, SETTINGS, said.append, said.append)
    assert again.runs.equals(race.runs) and again.winner.name == race.winner.name
    assert len(said) == 6 and all("resumed from" in line for line in said)


def test_a_race_needs_a_seed(tmp_path: Path) -> None:
    trainer = ProxyTrainer(SETTINGS, tmp_path, tmp_path / "race", "tiny-race")
    with pytest.raises(ValueError, match="at least one seed"):
        run_race([Finalist("predicted", np.ones(3) / 3)], 0, 0, trainer, SETTINGS, print, print)
