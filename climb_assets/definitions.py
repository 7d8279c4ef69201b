"""The one Definitions object of the code location: assets, checks, sensors, resources."""

from __future__ import annotations

import dagster as dg

from climb_assets.assets import clustering, corpus, dataset, evaluation, search
from climb_assets.automation import (
    climb_automation,
    corpus_shard_sensor,
    scheduled_search_sensors,
    with_schedule,
)
from climb_assets.resources import ClimbSettings
from climb_assets.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """Definitions for `settings` (tests) or for $CLIMB_CONFIG / the defaults (dagster dev)."""
    climb = ClimbSettings.from_settings(settings) if settings else ClimbSettings()
    settings = settings or load_settings()
    return dg.Definitions(
        assets=with_schedule(
            [
                corpus.corpus_shard_files,
                *dg.load_assets_from_modules([corpus, clustering]),
                search.proxy_pool,
                *search.build_search_assets(settings),
                dataset.climbmix_dataset,
                evaluation.mixture_evaluation,
            ],
            settings,
        ),
        sensors=[corpus_shard_sensor, climb_automation, *scheduled_search_sensors(settings)],
        resources={"climb": climb},
    )


defs = build_definitions()
