"""Sensors and automation: new or changed shard files become partitions and runs by themselves.

Which assets are per shard and which are rebuilt on the schedule comes from the asset graph
(`graph.shard_assets`, `graph.scheduled_assets`): `definitions.py` derives the lists and passes
them to the builders here.
"""

import json

import dagster as dg

from climb_assets.defs.graph import SCHEDULE_ENTRY
from climb_assets.defs.resources import ClimbSettings
from climb_assets.defs.shard_state import shard_is_current, shard_registration
from climb_assets.settings import Settings

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


def shard_run_request(
    shard: str, input_fingerprint: str, shard_assets: tuple[str, ...]
) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{shard}@{input_fingerprint}",
        partition_key=shard,
        asset_selection=[dg.AssetKey(a) for a in shard_assets],
        tags={"climb/shard": shard, "climb/input_fingerprint": input_fingerprint},
    )


def build_corpus_shard_sensor(shard_assets: tuple[str, ...]) -> dg.SensorDefinition:
    """The corpus sensor, requesting runs of `shard_assets` (the per-shard assets)."""

    @dg.sensor(
        name="corpus_shard_sensor",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[*shard_assets, "document_index"],
        description="Keeps the corpus_shards partitions equal to the shard files under the "
        "corpus folder and requests documents and embeddings for every shard whose latest "
        "materialization in this instance was made from other bytes, settings or code (its "
        "input_fingerprint), whoever made it: climb run, the UI or this sensor. A removed "
        "file's partition is deleted and the corpus-wide chain rebuilt without it.",
    )
    def corpus_shard_sensor(
        context: dg.SensorEvaluationContext, climb: ClimbSettings
    ) -> dg.SensorResult:
        return corpus_shard_tick(context, climb.get(), shard_assets)

    return corpus_shard_sensor


def corpus_shard_tick(
    context: dg.SensorEvaluationContext, settings: Settings, shard_assets: tuple[str, ...]
) -> dg.SensorResult:
    from climb_assets.core.corpus.shards import content_of, fingerprint_shards
    from climb_assets.defs.shard_state import shard_input_fingerprint

    # The cursor only caches content hashes by file stat, so unchanged files are not re-read;
    # what is processed is read from the instance.
    hashes: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    found = shard_registration(settings, context.instance)
    to_add, to_remove = found.to_add, found.to_remove
    now = fingerprint_shards(settings.corpus.path, found.files, hashes, HASH_SECONDS_PER_TICK)
    runs = []
    for shard, fingerprint in now.items():
        expected = shard_input_fingerprint(settings, shard, content_of(fingerprint))
        if not shard_is_current(context.instance, settings, shard, expected, shard_assets):
            runs.append(shard_run_request(shard, expected, shard_assets))
    if to_add or to_remove or runs:
        context.log.info(
            f"shards registered {to_add}, removed {to_remove}, "
            f"to process {[r.partition_key for r in runs]}"
        )
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
        dynamic_partitions_requests=found.requests(),
        cursor=json.dumps(now, sort_keys=True),
    )


SCHEDULED_TAG = "climb/scheduled_search"  # on the runs the scheduled search launches


def settled() -> dg.AutomationCondition:
    """No parent is missing or running, and none waits on its own parents (a shard registered
    but not processed yet, a clustering chain still catching up)."""
    catching_up = (
        dg.AutomationCondition.any_deps_missing()
        | dg.AutomationCondition.any_deps_in_progress()
        | dg.AutomationCondition.any_deps_updated().since_last_handled()
    ).with_label("catching up")
    return (
        ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.any_deps_match(catching_up)
    ).with_label("upstream settled")


def on_schedule(cron: str, timezone: str) -> dg.AutomationCondition:
    """The entry of the scheduled search: at a tick of `cron`, if a parent was updated since this
    asset was last built and everything upstream has settled."""
    inputs_changed = (
        dg.AutomationCondition.any_deps_updated().since_last_handled().with_label("inputs changed")
    )
    tick = dg.AutomationCondition.cron_tick_passed(cron, timezone)
    return (tick & inputs_changed & settled()).with_label(
        f"at {cron} ({timezone}) if inputs changed"
    )


def after_scheduled_parents(
    cron: str, timezone: str, scheduled_assets: tuple[str, ...]
) -> dg.AutomationCondition:
    """Once per tick of `cron`, when a parent was rebuilt by a run of the schedule since the tick
    (or is requested with this asset) and every parent within the scheduled assets has been
    rebuilt since it: the iterations thus run one after the other, then the optimal mixture,
    then the dataset. Runs of `climb run` lack the schedule's tag, so the daemon never follows
    (and repeats) them."""
    scheduled = dg.AssetSelection.assets(*scheduled_assets)
    tick = dg.AutomationCondition.cron_tick_passed(cron, timezone)
    # "No parent left behind" rather than all_deps_match: the first iteration has no previous
    # one, and all_deps_match is false for a dependency with no partitions.
    behind = ~(
        dg.AutomationCondition.newly_updated().since(tick)
        | dg.AutomationCondition.will_be_requested()
    )
    rebuilt = (~dg.AutomationCondition.any_deps_match(behind).allow(scheduled)).with_label(
        "scheduled parents rebuilt since the tick"
    )
    by_schedule = (
        dg.AutomationCondition.any_deps_match(
            (
                dg.AutomationCondition.newly_updated().since(tick)
                & dg.AutomationCondition.executed_with_tags(tag_values={SCHEDULED_TAG: "true"})
            )
            | dg.AutomationCondition.will_be_requested()
        )
        .allow(scheduled)
        .with_label("a parent rebuilt by the schedule")
    )
    return (
        tick.since_last_handled()
        & by_schedule
        & rebuilt
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"after the {cron} ({timezone}) rerun of its parents")


def scheduled_search_sensors(
    settings: Settings, scheduled_assets: tuple[str, ...]
) -> list[dg.AutomationConditionSensorDefinition]:
    """The sensor that evaluates the scheduled condition of `scheduled_assets` (none when the
    schedule is off)."""
    conf = settings.automation
    if conf.search_cron is None:
        return []
    return [
        dg.AutomationConditionSensorDefinition(
            "climb_scheduled_search",
            target=dg.AssetSelection.assets(*scheduled_assets),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=30,
            run_tags={SCHEDULED_TAG: "true"},
            description=f"At '{conf.search_cron}' ({conf.timezone}), reruns the search (proxy "
            "pool, every bootstrap iteration in order, optimal mixture) and the dataset as one "
            "backfill if their inputs changed since they were last built and nothing upstream is "
            "still being processed. The setting automation.search_cron sets the schedule; null "
            "turns it off.",
        )
    ]


def with_schedule(assets: list, settings: Settings, scheduled_assets: tuple[str, ...]) -> list:
    """`assets` with the scheduled condition on `scheduled_assets` (unchanged when it is off)."""
    conf = settings.automation
    if conf.search_cron is None:
        return assets
    cron, timezone = conf.search_cron, conf.timezone

    def scheduled(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        if name not in scheduled_assets:
            return spec
        condition = (
            on_schedule(cron, timezone)
            if name == SCHEDULE_ENTRY
            else after_scheduled_parents(cron, timezone, scheduled_assets)
        )
        return spec.replace_attributes(automation_condition=condition)

    return list(dg.map_asset_specs(scheduled, assets))


def climb_automation(scheduled_assets: tuple[str, ...]) -> dg.AutomationConditionSensorDefinition:
    """Everything downstream of the per-shard work but `scheduled_assets` follows by declarative
    automation (each asset's `automation_condition`); Dagster's default automation sensor starts
    stopped, so declare one that starts running."""
    return dg.AutomationConditionSensorDefinition(
        "climb_automation",
        target=dg.AssetSelection.all() - dg.AssetSelection.assets(*scheduled_assets),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Brings the corpus-wide clustering assets up to date after new or changed "
        "shards.",
    )
