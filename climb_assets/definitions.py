"""The one Definitions object of the code location: assets, checks, sensors, resources."""

from __future__ import annotations

import dagster as dg

from climb_assets.defs.assets import clustering, corpus, dataset, evaluation, search
from climb_assets.defs.automation import (
    build_corpus_shard_sensor,
    climb_automation,
    scheduled_search_sensors,
    with_schedule,
)
from climb_assets.defs.graph import dataset_upstream, scheduled_assets, shard_assets
from climb_assets.defs.resources import ClimbSettings
from climb_assets.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """Definitions for `settings` (tests) or for $CLIMB_CONFIG / the defaults (dagster dev).

    The assets are the one description of the pipeline: the sensors' and the schedule's asset
    lists are derived from their graph (see graph.py), as are `climb run`'s stages."""
    climb = ClimbSettings.from_settings(settings) if settings else ClimbSettings()
    settings = settings or load_settings()
    assets = [
        corpus.corpus_shard_files,
        *dg.load_assets_from_modules([corpus, clustering]),
        search.proxy_pool,
        *search.build_search_assets(settings),
        placeholder := dataset.build_climbmix_dataset(),
        evaluation.mixture_evaluation,
    ]
    resources = {"climb": climb}
    graph = dg.Definitions(assets=assets, resources=resources)
    # The card records its upstream runs: which assets those are, the graph says.
    at = next(i for i, asset in enumerate(assets) if asset is placeholder)
    assets[at] = dataset.build_climbmix_dataset(dataset_upstream(graph))
    scheduled, shards = scheduled_assets(graph), shard_assets(graph)
    return dg.Definitions(
        assets=with_schedule(assets, settings, scheduled),
        sensors=[
            build_corpus_shard_sensor(shards),
            climb_automation(scheduled),
            *scheduled_search_sensors(settings, scheduled),
        ],
        resources=resources,
    )


defs = build_definitions()
