"""What the rest of the code asks of the asset graph, answered from the graph itself.

The Definitions (`definitions.build_definitions`) are the one description of the pipeline: the
runner's stages, the shard assets, the scheduled search and the assets the dataset card records
are derived here from the dependencies, partitions and tags they declare, so a new or moved asset
needs no second list to be kept in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import dagster as dg

from climb_assets.defs.partitions import CORPUS_SHARDS, ITERATION_FORMAT

# On assets `climb run` materializes only when asked (`--evaluate`): they train larger models.
OPTIONAL_TAG = "climb/optional"
# On assets that publish what another asset of the same run computed (value: that asset): the
# dataset card records the run of the asset that did the work, not one row per view of it.
PUBLISHES_TAG = "climb/publishes"
# The first asset of the scheduled search; its parents are the clustering chain.
SCHEDULE_ENTRY = "proxy_pool"

Axis = Literal["shards", "iterations", "none"]


@dataclass(frozen=True)
class Stage:
    """Assets that `climb run` materializes in one run per partition of `axis`."""

    assets: tuple[str, ...]
    axis: Axis
    optional: bool = False


def axis_of(partitions_def: dg.PartitionsDefinition | None) -> Axis:
    """The partition axis an asset is run along, from its partitions definition."""
    if partitions_def is None:
        return "none"
    if partitions_def == CORPUS_SHARDS:
        return "shards"
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition) and (
        partitions_def.fmt == ITERATION_FORMAT
    ):
        return "iterations"
    raise ValueError(f"no run axis for partitions {partitions_def}")


def _ordered(defs: dg.Definitions) -> list[dg.AssetKey]:
    """The assets runs can materialize (not the external shard files), parents before children."""
    graph = defs.resolve_asset_graph()
    return [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]


def _tags(defs: dg.Definitions, key: dg.AssetKey) -> dict[str, str]:
    return dict(defs.resolve_asset_graph().get(key).tags)


def _names(keys: list[dg.AssetKey]) -> tuple[str, ...]:
    return tuple(k.to_user_string() for k in keys)


def stages(defs: dg.Definitions) -> tuple[Stage, ...]:
    """`climb run`'s plan: the assets in dependency order, cut into as few runs as the partitions
    allow (Dagster runs one partition per run). A stage starts at the first asset whose parents
    are done and takes each later asset of the same partitions and optionality whose parents are
    done or in the stage; optional assets thus get stages of their own, which `climb run` skips
    unless asked."""
    graph = defs.resolve_asset_graph()
    remaining, done = _ordered(defs), set[dg.AssetKey]()
    plan: list[Stage] = []
    while remaining:
        first = graph.get(remaining[0])
        optional = OPTIONAL_TAG in first.tags
        stage: list[dg.AssetKey] = []
        for key in remaining:
            node = graph.get(key)
            parents = {p for p in node.parent_keys - {key} if graph.get(p).is_materializable}
            if (
                node.partitions_def == first.partitions_def
                and (OPTIONAL_TAG in node.tags) == optional
                and parents <= done.union(stage)
            ):
                stage.append(key)
        done.update(stage)
        remaining = [k for k in remaining if k not in done]
        plan.append(Stage(_names(stage), axis_of(first.partitions_def), optional))
    return tuple(plan)


def shard_assets(defs: dg.Definitions) -> tuple[str, ...]:
    """The per-shard assets: those partitioned by the corpus shards (one run makes them all)."""
    graph = defs.resolve_asset_graph()
    return _names([k for k in _ordered(defs) if graph.get(k).partitions_def == CORPUS_SHARDS])


def scheduled_assets(defs: dg.Definitions) -> tuple[str, ...]:
    """SCHEDULE_ENTRY and what lies downstream of it but is not optional: the search and the
    dataset, rebuilt on the schedule of `automation.search_cron`."""
    below = dg.AssetSelection.assets(SCHEDULE_ENTRY).downstream()
    keys = below.resolve(defs.resolve_asset_graph())
    return _names([k for k in _ordered(defs) if k in keys and OPTIONAL_TAG not in _tags(defs, k)])


def dataset_upstream(defs: dg.Definitions, dataset: str = "climbmix_dataset") -> tuple[str, ...]:
    """The assets whose latest runs the dataset card records: the dataset's ancestors, less those
    that only publish what another of them computed (PUBLISHES_TAG)."""
    above = dg.AssetSelection.assets(dataset).upstream(include_self=False)
    keys = above.resolve(defs.resolve_asset_graph())
    return _names([k for k in _ordered(defs) if k in keys and PUBLISHES_TAG not in _tags(defs, k)])
