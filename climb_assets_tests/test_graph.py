"""What is derived from the Definitions' asset graph equals what was once written by hand."""

from __future__ import annotations

import dagster as dg
import pytest

from climb_assets.definitions import build_definitions
from climb_assets.defs import graph
from climb_assets.defs.graph import Stage
from climb_assets.settings import Settings

# `climb run`'s stages as they were listed by hand before they were derived: the same grouping
# of assets per run keeps run counts, ids and tags unchanged.
EXPECTED_PLAN = (
    Stage(("corpus_documents", "shard_embeddings"), "shards"),
    Stage(
        (
            "document_index",
            "centroids",
            "cluster_assignments",
            "cluster_profiles",
            "super_clusters",
            "proxy_pool",
        ),
        "none",
    ),
    Stage(
        ("bootstrap_iteration", "mixture_candidates", "proxy_scores", "mixture_predictor"),
        "iterations",
    ),
    Stage(("optimal_mixture", "climbmix_dataset"), "none"),
    Stage(("mixture_evaluation",), "none", optional=True),
)
SEARCH_AND_DATASET = (
    "proxy_pool",
    "bootstrap_iteration",
    "mixture_candidates",
    "proxy_scores",
    "mixture_predictor",
    "optimal_mixture",
    "climbmix_dataset",
)
DATASET_UPSTREAM = (
    "corpus_documents",
    "document_index",
    "shard_embeddings",
    "centroids",
    "cluster_assignments",
    "cluster_profiles",
    "super_clusters",
    "proxy_pool",
    "bootstrap_iteration",
    "optimal_mixture",
)


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions(Settings())


def test_the_plan_is_derived_from_the_graph(defs: dg.Definitions) -> None:
    assert graph.stages(defs) == EXPECTED_PLAN


def test_every_stage_runs_after_its_parents(defs: dg.Definitions) -> None:
    asset_graph = defs.resolve_asset_graph()
    done = {"corpus_shard_files"}
    for stage in graph.stages(defs):
        for name in stage.assets:
            node = asset_graph.get(dg.AssetKey(name))
            parents = {p.to_user_string() for p in node.parent_keys - {node.key}}
            assert parents <= done | set(stage.assets), (name, parents - done)
        done |= set(stage.assets)


def test_the_lists_are_derived_from_the_graph(defs: dg.Definitions) -> None:
    assert graph.shard_assets(defs) == ("corpus_documents", "shard_embeddings")
    assert graph.scheduled_assets(defs) == SEARCH_AND_DATASET
    # The card records the round (bootstrap_iteration), not the assets publishing its results.
    assert graph.dataset_upstream(defs) == DATASET_UPSTREAM


def test_the_dataset_card_records_the_derived_upstream() -> None:
    from climb_assets.defs.assets.dataset import upstream_runs

    with dg.instance_for_test() as instance:
        runs = upstream_runs(instance, DATASET_UPSTREAM)
    assert tuple(runs) == DATASET_UPSTREAM
    assert set(runs.values()) == {"never materialized"}


def test_an_unknown_partitioning_has_no_axis() -> None:
    with pytest.raises(ValueError, match="no run axis"):
        graph.axis_of(dg.StaticPartitionsDefinition(["x"]))
