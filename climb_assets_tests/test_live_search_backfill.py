"""Running every bootstrap iteration in order is one action in the UI: a backfill of the search
and dataset assets over all iterations (what *Materialize all* launches) runs iteration k only
after k-1 and ends with the optimal mixture and the dataset."""

from __future__ import annotations

import pytest

from climb_assets_tests.live import DagsterDev

pytestmark = pytest.mark.slow


def test_backfill_of_all_iterations_runs_them_in_order(
    live_dagster: DagsterDev, live_search: str
) -> None:
    dev = live_dagster
    assert live_search == "COMPLETED_SUCCESS"
    iterations = sorted(
        (m for m in dev.materializations("bootstrap_iteration")), key=lambda m: m.timestamp_ms
    )
    assert [m.partition for m in iterations] == ["iter-001", "iter-002"], dev.run_timeline()
    dataset = dev.latest_materialization("climbmix_dataset")
    assert dataset is not None and dataset.timestamp_ms > iterations[-1].timestamp_ms
