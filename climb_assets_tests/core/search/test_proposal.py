from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from climb_assets.core.search.final_choice import choose_final
from climb_assets.core.search.predictor import fit_predictor
from climb_assets.core.search.proposal import (
    proposal_constraints,
    proposal_pool,
    proposal_record,
    propose,
)
from climb_assets.core.search.run_table import RunTable, RunTableSource, load_run_table
from climb_assets.settings import PredictorSettings, SearchSettings

TARGET = np.array([0.5, 0.3, 0.2, 0.0])
FAST = PredictorSettings(rounds=20, ensemble_size=2)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> RunTable:
    """30 runs that never use w_3, a loss lowest at TARGET, and a run id column."""
    weights = np.random.default_rng(0).dirichlet(np.ones(3), 30)
    loss = 2 + ((weights - TARGET[:3]) ** 2).sum(axis=1)
    df = pl.DataFrame({f"w_{j}": weights[:, j] for j in range(3)}).with_columns(
        w_3=pl.lit(0.0), loss=pl.Series(loss), run=pl.Series([f"r{i}" for i in range(30)])
    )
    folder = tmp_path_factory.mktemp("runs")
    df.select("run", "w_0", "w_1", "w_2", "w_3").write_csv(folder / "weights.csv")
    df.select("run", "loss").write_csv(folder / "scores.csv")
    source = RunTableSource(
        weights_file=folder / "weights.csv", scores=folder / "scores.csv", key="run", score=["loss"]
    )
    return load_run_table(source)


def test_constraints_keep_unused_groups_at_zero(table: RunTable) -> None:
    constraints = proposal_constraints(table.weights)
    np.testing.assert_array_equal(constraints.upper, [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(constraints.prior, table.weights.mean(axis=0))
    assert constraints.min_weight == 0.0


def test_pool_is_seeded_unique_and_inside_the_used_groups(table: RunTable) -> None:
    pool = proposal_pool(table.weights, 400, seed=3)
    np.testing.assert_array_equal(pool, proposal_pool(table.weights, 400, seed=3))
    assert 0 < len(pool) <= 400 and len(np.unique(pool.round(4), axis=0)) == len(pool)
    np.testing.assert_allclose(pool.sum(axis=1), 1.0)
    assert (pool[:, 3] == 0).all() and (pool >= 0).all()


def test_record_of_a_choice(table: RunTable) -> None:
    predictor = fit_predictor(table.weights, table.objective, 0, False, table.weight_columns, FAST)
    pool = proposal_pool(table.weights, 500, seed=0)
    choice = choose_final(predictor, pool, table.weights, table.objective, 8, False)
    record = proposal_record(table, predictor, choice, 0.01, len(pool) + 30)
    assert record["direction"] == "minimize" and record["method"] == choice.method
    assert list(record["weights"]) == ["w_0", "w_1", "w_2", "w_3"]
    assert record["pool_size"] == len(pool) + 30 and record["trust_region"] is None
    assert record["predicted_spread"] >= 0 and record["min_weight"] == 0.01
    observed = record["best_observed"]
    best = int(np.argmin(table.objective))
    assert (observed["row"], observed["key"]) == (best + 1, f"r{best}")
    assert observed["objective"] == pytest.approx(table.objective[best])


def test_propose_moves_toward_the_best_and_follows_the_search_settings(table: RunTable) -> None:
    search = SearchSettings(candidate_pool_size=1000, final_top_k=8, final_min_weight=0.05)
    record = propose(table, False, search, FAST, seed=0)
    proposed = np.array(list(record["weights"].values()))
    assert proposed.sum() == pytest.approx(1.0) and proposed[3] == 0
    assert ((proposed == 0) | (proposed >= 0.05)).all() and not record["kept_slivers"]
    mean_distance = np.abs(table.weights - TARGET).sum(axis=1).mean()
    assert np.abs(proposed - TARGET).sum() < mean_distance
    assert record["predicted"] <= record["best_observed"]["predicted"]
    assert record["trust_region"]["chosen"]["inside"]
    without = propose(table, False, search.model_copy(update={"final_trust_radius": 0}), FAST, 0)
    assert without["trust_region"] is None
