"""Lineage as a live `dagster dev` serves it over GraphQL: every edge of the pipeline, the
partition axes and which assets automation drives."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from climb_assets_tests.live import PROJECT, DagsterDev, name

pytestmark = pytest.mark.slow

# Each asset's direct upstream assets, as declared in climb_assets/defs/assets/*.py (the
# round's published views in climb_assets/defs/iteration_views.py).
EXPECTED_DEPS: dict[str, set[str]] = {
    "corpus_shard_files": set(),
    "corpus_documents": {"corpus_shard_files"},
    "shard_embeddings": {"corpus_documents"},
    "document_index": {"corpus_documents"},
    "centroids": {"shard_embeddings", "document_index"},
    "cluster_assignments": {"shard_embeddings", "centroids"},
    "cluster_profiles": {"cluster_assignments", "document_index", "centroids"},
    "super_clusters": {"cluster_profiles", "centroids"},
    "proxy_pool": {"super_clusters", "cluster_assignments", "document_index"},
    "bootstrap_iteration": {"proxy_pool", "bootstrap_iteration"},
    "mixture_candidates": {"bootstrap_iteration"},
    "proxy_scores": {"mixture_candidates"},
    "mixture_predictor": {"proxy_scores"},
    "optimal_mixture": {"mixture_predictor", "proxy_scores", "proxy_pool"},
    "climbmix_dataset": {"optimal_mixture", "super_clusters"},
    "mixture_evaluation": {"optimal_mixture"},
}

# The pipeline's spine: each asset is a direct dependency of the next.
CHAIN = (
    "corpus_shard_files", "corpus_documents", "shard_embeddings", "centroids",
    "cluster_assignments", "cluster_profiles", "super_clusters", "proxy_pool",
    "bootstrap_iteration", "mixture_candidates", "proxy_scores", "mixture_predictor",
    "optimal_mixture", "climbmix_dataset",
)  # fmt: skip

SHARD_PARTITIONED = {"corpus_shard_files", "corpus_documents", "shard_embeddings"}
ITERATION_PARTITIONED = {"bootstrap_iteration", "mixture_candidates", "proxy_scores",
                         "mixture_predictor"}  # fmt: skip
EAGER = {"document_index", "centroids", "cluster_assignments", "cluster_profiles",
         "super_clusters"}  # fmt: skip
SCHEDULED = {"proxy_pool", "bootstrap_iteration", "mixture_candidates", "proxy_scores",
             "mixture_predictor", "optimal_mixture", "climbmix_dataset"}  # fmt: skip

GRAPH_QUERY = """
{ assetNodes { assetKey { path } dependencyKeys { path } dependedByKeys { path }
    partitionDefinition { type } automationCondition { label } } }
"""

SENSOR_DEFAULTS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {
    ... on RepositoryLocation { repositories { sensors { name defaultStatus } } } } } } } }
"""


@pytest.fixture(scope="module")
def graph(live_dagster: DagsterDev) -> dict[str, dict]:
    nodes = live_dagster.graphql(GRAPH_QUERY)["assetNodes"]
    return {name(node["assetKey"]): node for node in nodes}


def upstream(graph: dict[str, dict]) -> dict[str, set[str]]:
    return {asset: {name(k) for k in node["dependencyKeys"]} for asset, node in graph.items()}


def test_project_dagster_yaml_is_a_valid_instance(tmp_path: Path, monkeypatch) -> None:
    """`dagster dev` and `climb` in the project root load this file; its relative storage
    paths land under tmp_path here."""
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"


def test_every_asset_and_edge_of_the_pipeline(graph: dict[str, dict]) -> None:
    actual = upstream(graph)
    assert set(actual) == set(EXPECTED_DEPS), (
        f"missing assets {set(EXPECTED_DEPS) - set(actual)}, "
        f"unexpected {set(actual) - set(EXPECTED_DEPS)}"
    )
    wrong = {
        asset: {"missing": EXPECTED_DEPS[asset] - deps, "unexpected": deps - EXPECTED_DEPS[asset]}
        for asset, deps in actual.items()
        if deps != EXPECTED_DEPS[asset]
    }
    assert not wrong, f"dependency edges differ from the code: {wrong}"


def test_chain_from_shard_files_to_dataset_is_unbroken(graph: dict[str, dict]) -> None:
    actual = upstream(graph)
    broken = [
        (a, b) for a, b in zip(CHAIN[:-1], CHAIN[1:], strict=True) if a not in actual.get(b, set())
    ]
    assert not broken, f"no edge for {broken}"
    assert "bootstrap_iteration" in actual["bootstrap_iteration"], "iterations must chain"


def test_downstream_edges_mirror_upstream_edges(graph: dict[str, dict]) -> None:
    """The UI draws the graph from both directions; they must agree."""
    actual = upstream(graph)
    for asset, node in graph.items():
        downstream = {name(k) for k in node["dependedByKeys"]}
        expected = {child for child, deps in actual.items() if asset in deps}
        assert downstream == expected, f"{asset}: dependedBy {downstream} != {expected}"


def test_partition_axes_and_eager_assets(graph: dict[str, dict]) -> None:
    kinds = {a: (n["partitionDefinition"] or {}).get("type") for a, n in graph.items()}
    assert {a for a, t in kinds.items() if t == "DYNAMIC"} == SHARD_PARTITIONED
    assert {a for a, t in kinds.items() if t == "TIME_WINDOW"} == ITERATION_PARTITIONED
    automated = {a for a, n in graph.items() if n["automationCondition"]}
    assert automated == EAGER | SCHEDULED
    for asset in EAGER:
        assert "eager" in graph[asset]["automationCondition"]["label"].lower(), asset
    for asset in SCHEDULED:  # the default schedule, nightly at 02:00 UTC
        assert "0 2 * * * (UTC)" in graph[asset]["automationCondition"]["label"], asset


def test_sensors_start_running_by_default(live_dagster: DagsterDev) -> None:
    entries = live_dagster.graphql(SENSOR_DEFAULTS_QUERY)["workspaceOrError"]["locationEntries"]
    defaults = {
        sensor["name"]: sensor["defaultStatus"]
        for entry in entries
        for repository in entry["locationOrLoadError"]["repositories"]
        for sensor in repository["sensors"]
    }
    assert defaults == {
        "corpus_shard_sensor": "RUNNING",
        "climb_automation": "RUNNING",
        "climb_scheduled_search": "RUNNING",
    }
