"""Running every bootstrap iteration in order is one action in the UI: a backfill of the search
and dataset assets over all iterations (what *Materialize all* launches) runs iteration k only
after k-1 and ends with the optimal mixture and the dataset."""

from __future__ import annotations

import dagster as dg
import pytest

from climb_assets.definitions import build_definitions
from climb_assets.runner import PLAN, run_pipeline
from climb_assets_tests.live import DagsterDev

pytestmark = pytest.mark.slow

SEARCH_ASSETS = (
    "bootstrap_iteration", "mixture_candidates", "proxy_scores", "mixture_predictor",
    "optimal_mixture", "climbmix_dataset",
)  # fmt: skip
LAUNCH = """
mutation($assets: [AssetKeyInput!]!) {
  launchPartitionBackfill(backfillParams: {assetSelection: $assets, allPartitions: true}) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status error { message } }
  }
}"""
BACKFILL_TIMEOUT_S = 420


def test_backfill_of_all_iterations_runs_them_in_order(live_dagster: DagsterDev) -> None:
    dev = live_dagster
    upstream = tuple(
        s for s in PLAN if s.axis != "iterations" and "optimal_mixture" not in s.assets
    )
    with dg.DagsterInstance.from_config(str(dev.home)) as instance:
        run_pipeline(build_definitions(dev.settings), dev.settings, instance, upstream,
                     echo=lambda _: None)  # fmt: skip

    launched = dev.graphql(LAUNCH, {"assets": [{"path": [a]} for a in SEARCH_ASSETS]})
    answer = launched["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer

    def finished() -> str | None:
        data = dev.graphql(STATUS, {"id": answer["backfillId"]})["partitionBackfillOrError"]
        return data["status"] if data["status"].startswith("COMPLETED") else None

    status = dev.wait_until(finished, "the search backfill", BACKFILL_TIMEOUT_S, interval=5)
    assert status == "COMPLETED_SUCCESS"

    iterations = sorted(
        (m for m in dev.materializations("bootstrap_iteration")), key=lambda m: m.timestamp_ms
    )
    assert [m.partition for m in iterations] == ["iter-001", "iter-002"], dev.run_timeline()
    dataset = dev.latest_materialization("climbmix_dataset")
    assert dataset is not None and dataset.timestamp_ms > iterations[-1].timestamp_ms
