"""The daemon of a live `dagster dev` started after `climb run` drives the corpus-wide assets by
itself: its first ticks launch nothing (the shard sensor reads what `climb run` processed from
the instance), and a shard dropped in later is ingested once and reaches the clusters through
eager automation without anyone launching a run.

"Up to date" is judged from the materialization history over GraphQL: along every edge of the
clustering stage the child's latest materialization (per shard, where both are per shard) is
newer than its parent's, and no run is queued or running."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from climb_assets.cli.runner import run_pipeline
from climb_assets.definitions import build_definitions
from climb_assets.defs.graph import stages
from climb_assets.store import Layout
from climb_assets_tests.conftest import small_settings
from climb_assets_tests.live import (
    ACTIVE_STATUSES,
    AUTOMATION_TAG,
    DagsterDev,
    LiveDagsterError,
    Materialization,
    dagster_dev,
    newer_materialization,
    write_first_shards,
    write_instance_yaml,
    write_late_shard,
)

pytestmark = pytest.mark.slow

FIRST_SHARDS = ("a.jsonl", "b.jsonl")
# What `climb run` does before `dagster dev` starts: everything but the search, whose scheduled
# rerun waits for its cron tick anyway (test_pipeline.py simulates that tick).
CLIMB_STAGES = 2
FIRST_TICKS = 2  # ticks of every sensor that must launch nothing after `climb run`
FIRST_TICKS_TIMEOUT_S = 240
LATE_SHARD = "late_python.jsonl"
# Bounds for the daemon on a busy 2-core machine; the sensor and automation tick every 15 s.
LATE_SHARD_TIMEOUT_S = 420
# No run for this long while still behind: automation has stopped (ticks are 15 s apart; the
# longest gap seen between runs on a busy machine was ~50 s).
IDLE_LIMIT_S = 100
SENSOR_TAG = "dagster/sensor_name"

SHARDED = {"corpus_documents", "shard_embeddings"}
# parent -> child, as declared in climb_assets/defs/assets/corpus.py and clustering.py.
EDGES = (
    ("corpus_documents", "shard_embeddings"),
    ("corpus_documents", "document_index"),
    ("shard_embeddings", "centroids"),
    ("document_index", "centroids"),
    ("shard_embeddings", "cluster_assignments"),
    ("centroids", "cluster_assignments"),
    ("cluster_assignments", "cluster_profiles"),
    ("document_index", "cluster_profiles"),
    ("centroids", "cluster_profiles"),
    ("cluster_profiles", "super_clusters"),
    ("centroids", "super_clusters"),
)
CLUSTERING = tuple(dict.fromkeys(asset for edge in EDGES for asset in edge))

# {asset: {partition (None when unpartitioned): timestamp in ms}}
State = dict[str, dict[str | None, float]]


def history(dev: DagsterDev) -> dict[str, list[Materialization]]:
    return {asset: dev.materializations(asset) for asset in CLUSTERING}


def state_before(events: dict[str, list[Materialization]], moment: float) -> State:
    """Each asset's (partition's) latest materialization strictly before `moment`."""
    state: State = {}
    for asset, materializations in events.items():
        for event in materializations:
            if event.timestamp_ms < moment:
                latest = state.setdefault(asset, {})
                latest[event.partition] = max(latest.get(event.partition, 0.0), event.timestamp_ms)
    return state


def older_than_parent(state: State, edges: tuple[tuple[str, str], ...]) -> list[str]:
    """Every (child, partition) whose latest materialization is not newer than its parent's."""
    problems = []
    for parent, child in edges:
        for key, child_ms in state.get(child, {}).items():
            parents = state.get(parent, {})
            if parent in SHARDED and child in SHARDED:  # shard to the same shard
                parent_ms = [parents[key]] if key in parents else []
            else:
                parent_ms = list(parents.values())
            if any(ms >= child_ms for ms in parent_ms):
                problems.append(f"{child}{f'[{key}]' if key else ''} older than {parent}")
    return problems


def behind(state: State, shards: set[str]) -> list[str]:
    """What keeps `state` from being up to date with `shards`: missing materializations and
    children older than their parents."""
    missing = [f"{a} lacks {sorted(shards - set(state.get(a, {})))}" for a in SHARDED
               if set(state.get(a, {})) != shards]  # fmt: skip
    missing += [f"{a} never materialized" for a in CLUSTERING
                if a not in SHARDED and None not in state.get(a, {})]  # fmt: skip
    return missing + older_than_parent(state, EDGES)


def current_state(dev: DagsterDev) -> State:
    return state_before(history(dev), float("inf"))


def wait_up_to_date(dev: DagsterDev, shards: set[str], what: str, timeout: float) -> State:
    """The clustering state once automation has carried every shard in `shards` down to
    super_clusters and no run is queued or running. Automation that goes idle while the state
    is still behind has stopped for good: that fails at once rather than at the timeout."""
    waiting_since = time.time()

    def probe() -> State | None:
        runs = dev.runs()
        if any(r["status"] in ACTIVE_STATUSES for r in runs):
            return None
        state = current_state(dev)
        if not (lagging := behind(state, shards)):
            return state
        last_activity = max([waiting_since] + [r["endTime"] or 0 for r in runs])
        if time.time() - last_activity > IDLE_LIMIT_S:
            raise LiveDagsterError(
                f"automation idle for {IDLE_LIMIT_S} s while waiting for {what}; still behind: "
                f"{lagging}\nruns, oldest first:\n{dev.run_timeline()}"
            )
        return None

    def describe() -> str:
        return f"still behind: {behind(current_state(dev), shards)}"

    return dev.wait_until(probe, what, timeout, describe=describe)


def own_shard(asset: str, latest: dict[str | None, float], shard: str | None) -> dict:
    return latest if asset not in SHARDED else {k: v for k, v in latest.items() if k == shard}


def stale_reads(events: dict[str, list[Materialization]]) -> list[str]:
    """Materializations built while one of their inputs was newer than another input it
    derives from (e.g. super_clusters from new centroids but cluster profiles of the old ones)."""
    problems = []
    for asset in CLUSTERING:
        parents = {parent for parent, child in EDGES if child == asset}
        inner = tuple((a, b) for a, b in EDGES if a in parents and b in parents)
        for event in events[asset]:
            before = state_before({p: events[p] for p in parents}, event.timestamp_ms)
            if asset in SHARDED:  # a shard's build reads its own shard of per-shard parents
                before = {p: own_shard(p, v, event.partition) for p, v in before.items()}
            label = (
                f"{asset}{f'[{event.partition}]' if event.partition else ''} (run {event.run_id})"
            )
            problems += [f"{label} read {issue}" for issue in older_than_parent(before, inner)]
    return problems


@dataclass
class Automated:
    dev: DagsterDev
    corpus: Path
    layout: Layout
    first: State  # the clustering state `climb run` left, before the daemon started
    climb_runs: set[str]  # the run ids of that `climb run`


@pytest.fixture(scope="module")
def automated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Automated]:
    """`climb run` on two shards into an instance, then `dagster dev` with its sensors and
    automation on, started on that instance (as a user does after a first run)."""
    workdir = tmp_path_factory.mktemp("live_daemon")
    corpus = workdir / "corpus"
    write_first_shards(corpus, FIRST_SHARDS)
    settings = small_settings(corpus, workdir / "outputs")
    home = workdir / "home"
    write_instance_yaml(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        defs = build_definitions(settings)
        climb_run = stages(defs)[:CLIMB_STAGES]
        runs = run_pipeline(defs, settings, instance, climb_run, echo=lambda _: None)
    with dagster_dev(settings, workdir) as dev:
        first = current_state(dev)
        assert not behind(first, set(FIRST_SHARDS)), behind(first, set(FIRST_SHARDS))
        yield Automated(dev, corpus, Layout(settings.output_dir), first, set(runs))


def daemon_runs(automated: Automated) -> list[dict]:
    """The runs the daemon launched (every run but those of `climb run`)."""
    return [r for r in automated.dev.runs() if r["runId"] not in automated.climb_runs]


@pytest.fixture(scope="module")
def first_ticks(automated: Automated) -> dict[str, list[dict]]:
    """The ticks of every sensor once each has ticked at least FIRST_TICKS times."""
    dev = automated.dev

    def ticked() -> dict[str, list[dict]] | None:
        ticks = dev.sensor_ticks()
        done = {
            name: [t for t in found if t["status"] != "STARTED"] for name, found in ticks.items()
        }
        return done if all(len(t) >= FIRST_TICKS for t in done.values()) else None

    return dev.wait_until(ticked, f"{FIRST_TICKS} ticks of every sensor", FIRST_TICKS_TIMEOUT_S)


@pytest.fixture(scope="module")
def after_late_shard(
    automated: Automated, first_ticks: dict[str, list[dict]]
) -> tuple[State, pl.DataFrame, int]:
    """The state once a shard dropped into the corpus folder reached super_clusters, the rows
    of that shard, and the profiled document count before it."""
    dev = automated.dev
    before_docs = profile_documents(automated.layout)
    late = write_late_shard(automated.corpus, LATE_SHARD)
    state = wait_up_to_date(
        dev, {*FIRST_SHARDS, LATE_SHARD},
        f"automation to bring super_clusters up to date after {LATE_SHARD} appeared",
        LATE_SHARD_TIMEOUT_S,
    )  # fmt: skip
    return state, late, before_docs


def profile_documents(layout: Layout) -> int:
    return int(pl.read_parquet(layout.cluster_profiles)["n_docs"].sum())


def test_starting_the_daemon_after_climb_run_launches_nothing(
    automated: Automated, first_ticks: dict[str, list[dict]]
) -> None:
    """One memory: the shard sensor finds every shard processed in the instance, automation
    finds everything up to date, and the scheduled search waits for its tick."""
    assert set(first_ticks) == {"corpus_shard_sensor", "climb_automation", "climb_scheduled_search"}
    launched = {
        name: [r for t in ticks for r in t["runIds"]] for name, ticks in first_ticks.items()
    }
    assert launched == {name: [] for name in first_ticks}, launched
    assert daemon_runs(automated) == []
    assert all(t["status"] != "FAILURE" for ticks in first_ticks.values() for t in ticks)


def test_first_shards_reach_the_super_clusters(automated: Automated) -> None:
    layout = automated.layout
    index = pl.read_parquet(layout.document_index)
    assert set(index["shard"]) == set(FIRST_SHARDS)
    assert profile_documents(layout) == index.height > 100
    supers = pl.read_parquet(layout.super_clusters)
    assert supers.height > 0 and int(supers["n_docs"].sum()) > 0


def test_a_new_shard_is_ingested_once_and_automation_does_the_rest(
    automated: Automated, after_late_shard: tuple[State, pl.DataFrame, int]
) -> None:
    runs = daemon_runs(automated)
    by_sensor = [r for r in runs if r["tags"].get(SENSOR_TAG) == "corpus_shard_sensor"]
    assert [r["tags"]["dagster/partition"] for r in by_sensor] == [LATE_SHARD]
    assert by_sensor[0]["assets"] == ["corpus_documents", "shard_embeddings"]
    by_automation = [r for r in runs if r["tags"].get(AUTOMATION_TAG) == "true"]
    automated_assets = {a for r in by_automation for a in r["assets"]}
    assert automated_assets == {
        "document_index", "centroids", "cluster_assignments", "cluster_profiles", "super_clusters"
    }  # fmt: skip
    assert len(runs) == len(by_sensor) + len(by_automation), "only the daemon launched runs"
    assert all(r["status"] == "SUCCESS" for r in runs)


def test_new_shard_reaches_the_clusters_without_a_manual_run(
    automated: Automated, after_late_shard: tuple[State, pl.DataFrame, int]
) -> None:
    state, late, before_docs = after_late_shard
    for asset in ("centroids", "cluster_profiles", "super_clusters"):
        assert state[asset][None] > automated.first[asset][None], f"{asset} was not rebuilt"
    layout = automated.layout
    kept = pl.read_parquet(layout.documents(LATE_SHARD))
    assert 0 < kept.height <= late.height
    assert set(kept["doc_id"]) <= set(late["id"]), "doc_ids are the shard's own ids"
    index = pl.read_parquet(layout.document_index)
    late_in_index = index.filter(pl.col("shard") == LATE_SHARD)
    assert set(late_in_index["doc_id"]) == set(kept["doc_id"])
    assigned = pl.read_parquet(layout.assignments(LATE_SHARD))
    assert set(assigned["doc_id"]) == set(kept["doc_id"])
    assert profile_documents(layout) == index.height == before_docs + late_in_index.height
    runs = daemon_runs(automated)
    assert all(SENSOR_TAG in r["tags"] or AUTOMATION_TAG in r["tags"] for r in runs)

    # The new domain is text the first shards never had: the refitted centroids give it a
    # cluster of its own rather than scattering it over the old ones.
    everything = pl.concat(
        [pl.read_parquet(layout.assignments(s)) for s in (*FIRST_SHARDS, LATE_SHARD)]
    )
    share = everything.group_by("cluster").agg((pl.col("shard") == LATE_SHARD).mean().alias("new"))
    assert share["new"].max() >= 0.8, share.sort("cluster")


def test_no_clustering_step_read_a_half_updated_upstream(
    automated: Automated, after_late_shard: tuple[State, pl.DataFrame, int]
) -> None:
    """Eager automation must not build an asset from a parent that is already updated and a
    parent that is still about to be (super_clusters from refitted centroids but the cluster
    profiles of the old ones; a new shard assigned to centroids fitted without it)."""
    problems = stale_reads(history(automated.dev))
    assert not problems, "\n".join(problems)


def test_removed_shard_leaves_the_index_and_the_clusters(
    automated: Automated, after_late_shard: tuple[State, pl.DataFrame, int]
) -> None:
    """Deleting a shard file: the sensor drops its partition and starts the corpus-wide chain,
    which forgets the shard's documents and deletes its per-shard files."""
    dev, layout = automated.dev, automated.layout
    before = dev.latest_materialization("super_clusters")
    (automated.corpus / LATE_SHARD).unlink()

    def settled() -> Materialization | None:
        latest = newer_materialization(dev, "super_clusters", before)()
        return latest if latest and not dev.active_runs() else None

    dev.wait_until(settled, f"super_clusters rebuilt after {LATE_SHARD} was removed",
                   LATE_SHARD_TIMEOUT_S)  # fmt: skip
    index = pl.read_parquet(layout.document_index)
    assert set(index["shard"]) == set(FIRST_SHARDS)
    assert profile_documents(layout) == index.height
    assert not layout.documents(LATE_SHARD).exists()
    assert not layout.assignments(LATE_SHARD).exists()
