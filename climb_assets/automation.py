"""Sensors and automation: new or changed shard files become partitions and runs by themselves."""

import json

import dagster as dg

from climb_assets.partitions import CORPUS_SHARDS
from climb_assets.resources import ClimbSettings

# Per-shard work requested for every new or changed shard file.
SHARD_ASSETS = ["corpus_documents", "shard_embeddings"]
# Hashing stops after this long in one tick (the daemon times a sensor out at 60 s); the
# shards left are hashed in the next ticks.
HASH_SECONDS_PER_TICK = 30.0


def eager_after(*triggers: str) -> dg.AutomationCondition:
    """Like `eager()`, but only an update of `triggers` starts a run. The asset's other parents
    lie upstream of a trigger, so reacting to them would build from a half-updated state (e.g.
    cluster profiles from a new document index but assignments to the old centroids)."""
    return (
        dg.AutomationCondition.any_deps_updated()
        .allow(dg.AssetSelection.assets(*triggers))
        .since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"eager after {', '.join(triggers)}")


def shard_run_request(shard: str, fingerprint: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{shard}@{fingerprint}",
        partition_key=shard,
        asset_selection=[dg.AssetKey(a) for a in SHARD_ASSETS],
        tags={"climb/shard": shard},
    )


@dg.sensor(
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=[*SHARD_ASSETS, "document_index"],
    description="Registers every new shard file under the corpus folder as a partition and "
    "requests its documents and embeddings; a file whose bytes changed is re-ingested (a stat "
    "change only triggers hashing it again); a "
    "removed file's partition is deleted so no later asset reads it.",
)
def corpus_shard_sensor(
    context: dg.SensorEvaluationContext, climb: ClimbSettings
) -> dg.SensorResult:
    from climb_assets.core.shards import (
        content_of,
        diff_shards,
        discover_shards,
        fingerprint_shards,
    )

    settings = climb.get()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    stats = discover_shards(settings.corpus.path, settings.corpus.patterns)
    now = fingerprint_shards(settings.corpus.path, stats, seen, HASH_SECONDS_PER_TICK)
    changes = diff_shards(seen, now)
    registered = set(context.instance.get_dynamic_partitions(CORPUS_SHARDS.name))
    to_add = [s for s in now if s not in registered]
    to_remove = [s for s in changes.removed if s in registered]
    requests: list[dg.DynamicPartitionsRequest] = []
    if to_add:
        requests.append(CORPUS_SHARDS.build_add_request(to_add))
    if to_remove:
        requests.append(CORPUS_SHARDS.build_delete_request(to_remove))
    if changes.any:
        context.log.info(
            f"shards added {changes.added}, changed {changes.changed}, removed {changes.removed}"
        )
    runs = [shard_run_request(s, content_of(now[s])) for s in changes.added + changes.changed]
    if to_remove and not runs:
        # Nothing upstream changes when a file goes, so start the corpus-wide chain here.
        runs.append(
            dg.RunRequest(
                run_key=f"removed:{','.join(to_remove)}@{context.cursor}",
                asset_selection=[dg.AssetKey("document_index")],
                tags={"climb/removed_shards": ",".join(to_remove)[:200]},
            )
        )
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=requests,
        cursor=json.dumps(now, sort_keys=True),
    )


# Everything downstream of the per-shard work follows by declarative automation (each asset's
# `automation_condition`); Dagster's default automation sensor starts stopped, so declare one
# that starts running.
climb_automation = dg.AutomationConditionSensorDefinition(
    "climb_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Brings corpus-wide assets up to date after new or changed shards.",
)
