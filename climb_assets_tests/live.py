"""A real `dagster dev` for tests: started in the project root on a free port against a
temporary DAGSTER_HOME and settings file, talked to through its GraphQL API, and stopped with
its whole process group (webserver, daemon, code server and run workers)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import yaml

from climb_assets.settings import Settings
from climb_assets_tests.conftest import SAMPLE_CORPUS, read_sample_shard, write_jsonl

PROJECT = Path(__file__).resolve().parents[1]
# Instance settings copied from the project's dagster.yaml; its storage paths are not, so the
# temporary DAGSTER_HOME keeps everything (runs, event logs, compute logs) to itself.
COPIED_INSTANCE_KEYS = ("run_coordinator", "concurrency", "telemetry")
# What `dagster dev` loads: the project's own workspace (the code location users get).
WORKSPACE_ARGS = ("-w", str(PROJECT / "workspace.yaml"))
STARTUP_TIMEOUT_S = 120.0
# The first shards leave this domain out, so a later shard of it is recognizably new text.
LATE_DOMAIN = "python_docs"
DOCS_PER_DOMAIN_PER_SHARD = 10
LATE_SHARD_DOCS = 30
STOP_GRACE_S = 10.0
AUTOMATION_TAG = "dagster/from_automation_condition"  # on runs that automation launched
ACTIVE_STATUSES = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"]

T = TypeVar("T")

LOCATIONS_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""

MATERIALIZATIONS_QUERY = """
query Events($key: AssetKeyInput!, $limit: Int) { assetOrError(assetKey: $key) { __typename
    ... on Asset { assetMaterializations(limit: $limit) { timestamp runId partition } } } }
"""

SENSORS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {
    ... on RepositoryLocation { repositories { name sensors { id name
        sensorState { status } } } } } } } } }
"""

TICKS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {
    ... on RepositoryLocation { repositories { sensors { name
        sensorState { ticks(limit: 50) { status timestamp runIds } } } } } } } } } }
"""

STOP_SENSOR_MUTATION = """
mutation Stop($id: String!) { stopSensor(id: $id) { __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message } } }
"""

RUNS_QUERY = """
query Runs($filter: RunsFilter, $limit: Int) { runsOrError(filter: $filter, limit: $limit) {
    ... on Runs { results { runId status startTime endTime assetSelection { path }
        tags { key value } } } } }
"""
RUN_STATUS_QUERY = """
query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }
"""
RUN_ERRORS_QUERY = """
query Errors($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename
    ... on ExecutionStepFailureEvent { stepKey error { message } }
    ... on RunFailureEvent { message } } } } }
"""


class LiveDagsterError(RuntimeError):
    """`dagster dev` did not start, answered with an error, or did not reach a state in time."""


@dataclass(frozen=True)
class Materialization:
    timestamp_ms: float
    run_id: str
    partition: str | None


@dataclass
class DagsterDev:
    """A running `dagster dev`; `url` serves both the UI and /graphql."""

    process: subprocess.Popen
    port: int
    home: Path
    log_path: Path
    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, timeout: float = 30
    ) -> dict:
        """The `data` of a GraphQL answer; GraphQL-level errors raise."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            payload = json.loads(answer.read())
        if payload.get("errors"):
            raise LiveDagsterError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def materializations(self, asset: str, limit: int = 1000) -> list[Materialization]:
        """Materializations of `asset` (every partition), newest first."""
        data = self.graphql(MATERIALIZATIONS_QUERY, {"key": {"path": [asset]}, "limit": limit})
        events = data["assetOrError"].get("assetMaterializations") or []
        return [Materialization(float(e["timestamp"]), e["runId"], e["partition"]) for e in events]

    def latest_materialization(self, asset: str) -> Materialization | None:
        events = self.materializations(asset, limit=1)
        return events[0] if events else None

    def runs(self, statuses: list[str] | None = None, limit: int = 200) -> list[dict]:
        """Runs, newest first: runId, status, startTime, endTime, assets (names), tags (dict)."""
        flt = {"statuses": statuses} if statuses else {}
        data = self.graphql(RUNS_QUERY, {"filter": flt, "limit": limit})["runsOrError"]
        return [
            {
                **run,
                "assets": sorted(name(k) for k in run.pop("assetSelection") or []),
                "tags": {t["key"]: t["value"] for t in run["tags"]},
            }
            for run in data["results"]
        ]

    def failed_runs(self) -> list[dict]:
        return self.runs(["FAILURE"])

    def run_errors(self, run_id: str) -> list[str]:
        """The step failures (step and error message) and run failure messages of a run."""
        events = self.graphql(RUN_ERRORS_QUERY, {"id": run_id})["logsForRun"].get("events", [])
        return [
            f"{e['stepKey']}: {e['error']['message'].strip()}" if "stepKey" in e else e["message"]
            for e in events
            if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
        ]

    def active_runs(self) -> list[dict]:
        return self.runs(ACTIVE_STATUSES)

    def run_status(self, run_id: str) -> str | None:
        run = self.graphql(RUN_STATUS_QUERY, {"id": run_id})["runOrError"]
        return run.get("status")

    def sensors(self) -> dict[str, dict]:
        """Every sensor of the workspace by name: {'id': ..., 'status': 'RUNNING' | 'STOPPED'}."""
        entries = self.graphql(SENSORS_QUERY)["workspaceOrError"]["locationEntries"]
        found = {}
        for entry in entries:
            for repository in (entry["locationOrLoadError"] or {}).get("repositories", []):
                for sensor in repository["sensors"]:
                    found[sensor["name"]] = {
                        "id": sensor["id"],
                        "status": sensor["sensorState"]["status"],
                    }
        return found

    def sensor_ticks(self) -> dict[str, list[dict]]:
        """Every sensor's ticks by name, newest first: {'status', 'timestamp', 'runIds'}."""
        entries = self.graphql(TICKS_QUERY)["workspaceOrError"]["locationEntries"]
        return {
            sensor["name"]: sensor["sensorState"]["ticks"]
            for entry in entries
            for repository in (entry["locationOrLoadError"] or {}).get("repositories", [])
            for sensor in repository["sensors"]
        }

    def stop_sensors(self) -> None:
        """Stop every sensor (and automation sensor), so nothing launches runs by itself."""
        for name, sensor in self.sensors().items():
            if sensor["status"] == "STOPPED":
                continue
            answer = self.graphql(STOP_SENSOR_MUTATION, {"id": sensor["id"]})["stopSensor"]
            if answer["__typename"] != "StopSensorMutationResult":
                raise LiveDagsterError(f"could not stop sensor {name}: {answer}")

    def wait_until(
        self,
        probe: Callable[[], T | None],
        what: str,
        timeout: float,
        interval: float = 3.0,
        fail_on_failed_run: bool = True,
        describe: Callable[[], str] | None = None,
    ) -> T:
        """Poll `probe` until it returns something truthy. A run that fails meanwhile raises
        with its errors; a timeout with `describe()`, every run so far and the tail of the
        dagster dev log, so the cause shows in the test report."""
        deadline = time.monotonic() + timeout
        failed_before = {run["runId"] for run in self.failed_runs()}  # not this wait's concern
        while True:
            self.raise_if_exited()
            result = probe()
            if result:
                return result
            failed = [r for r in self.failed_runs() if r["runId"] not in failed_before]
            if fail_on_failed_run and failed:
                run = failed[0]
                raise LiveDagsterError(
                    f"while waiting for {what}, run {run['runId']} of {run['assets']} failed "
                    f"(tags {run['tags']}): {self.run_errors(run['runId'])}"
                )
            if time.monotonic() > deadline:
                detail = describe() if describe else ""
                raise LiveDagsterError(
                    f"timed out after {timeout:.0f} s waiting for {what}\n{detail}\n"
                    f"runs, oldest first:\n{self.run_timeline()}\n{self.log_tail(1500)}"
                )
            time.sleep(interval)

    def run_timeline(self) -> str:
        """One line per run, oldest first: start, status, assets, partition, launched by."""
        lines = []
        for run in reversed(self.runs()):
            tags = run["tags"]
            by = tags.get("dagster/sensor_name") or ("automation" if AUTOMATION_TAG in tags else "")
            started = time.strftime("%H:%M:%S", time.localtime(run["startTime"] or 0))
            lines.append(
                f"  {started} {run['status']:<8} {run['assets']} "
                f"{tags.get('dagster/partition', '')} {by or 'manual'}"
            )
        return "\n".join(lines)

    def raise_if_exited(self) -> None:
        if self.process.poll() is not None:
            raise LiveDagsterError(
                f"dagster dev exited with code {self.process.returncode}\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL for whatever ignored it."""
        stop_process_group(self.process)


def name(key: dict) -> str:
    """An asset key from GraphQL ({'path': [...]}) as its user string."""
    return "/".join(key["path"])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_instance_yaml(home: Path, automation: bool = True) -> Path:
    """dagster.yaml for a temporary DAGSTER_HOME: the project's run queue and pools, default
    (home-relative) storage; without `automation` the asset daemon does not run at all."""
    project = yaml.safe_load((PROJECT / "dagster.yaml").read_text()) or {}
    copied = {key: project[key] for key in COPIED_INSTANCE_KEYS if key in project}
    if not automation:
        copied["auto_materialize"] = {"enabled": False, "use_sensors": False}
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(copied, sort_keys=False))
    return path


def check_instance_config(home: Path) -> None:
    """Fail at once, naming the project's file, when Dagster would refuse the instance config
    (dagster dev would only exit with the error buried in its log)."""
    import dagster as dg

    try:
        dg.DagsterInstance.from_config(str(home)).dispose()
    except dg.DagsterInvalidConfigError as err:
        raise LiveDagsterError(
            f"{PROJECT / 'dagster.yaml'} (its {', '.join(COPIED_INSTANCE_KEYS)} copied into "
            f"{home / 'dagster.yaml'}) is not a valid Dagster instance config: {err}"
        ) from err


def write_settings_yaml(settings: Settings, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    return path


def dagster_env(home: Path, config: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        CLIMB_CONFIG=str(config),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


def stop_process_group(process: subprocess.Popen) -> None:
    """`dagster dev` may ignore SIGTERM while its children shut down: give it a grace period,
    then SIGKILL the group it leads (it was started in a session of its own)."""
    pgid = process.pid
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        with suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
        if process.poll() is not None and not group_alive(pgid):
            return
    # Children left in the group after the leader died get the last SIGKILL too.
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_loaded(dev: DagsterDev, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Until GraphQL answers and the code location is loaded; a load error raises at once."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        dev.raise_if_exited()
        try:
            workspace = dev.graphql(LOCATIONS_QUERY, timeout=10)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
            last = repr(err)
        else:
            if workspace["__typename"] != "Workspace":
                raise LiveDagsterError(f"workspace failed to load: {workspace}")
            entries = workspace["locationEntries"]
            for entry in entries:
                loaded = entry["locationOrLoadError"] or {}
                if loaded.get("__typename") == "PythonError":
                    raise LiveDagsterError(
                        f"code location {entry['name']} failed to load: {loaded['message']}"
                    )
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
            last = f"locations {[(e['name'], e['loadStatus']) for e in entries]}"
        time.sleep(1.0)
    raise LiveDagsterError(
        f"dagster dev not ready after {timeout:.0f} s ({last})\n{dev.log_tail()}"
    )


@contextmanager
def dagster_dev(settings: Settings, workdir: Path, automation: bool = True) -> Iterator[DagsterDev]:
    """`dagster dev` in the project root for `settings`, its instance under `workdir/home`.

    Without `automation` no sensor or automation condition launches runs: the asset daemon is
    off and the sensors are stopped as soon as the code location is loaded (start it on an
    empty corpus folder so a tick before that finds nothing)."""
    home = workdir / "home"
    write_instance_yaml(home, automation)
    check_instance_config(home)
    config = write_settings_yaml(settings, workdir / "climb.yaml")
    port = free_port()
    log_path = workdir / "dagster_dev.log"
    host = ("-h", "127.0.0.1", "-p", str(port))
    command = [sys.executable, "-m", "dagster", "dev", *host, *WORKSPACE_ARGS]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=dagster_env(home, config),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    dev = DagsterDev(process, port, home, log_path, settings)
    try:
        wait_until_loaded(dev)
        if not automation:
            dev.stop_sensors()
        yield dev
    finally:
        dev.stop()


def newer_materialization(
    dev: DagsterDev, asset: str, than: Materialization | None
) -> Callable[[], Materialization | None]:
    """A probe for `wait_until`: the latest materialization of `asset` once it is newer."""

    def probe() -> Materialization | None:
        latest = dev.latest_materialization(asset)
        if latest is None or (than is not None and latest.timestamp_ms <= than.timestamp_ms):
            return None
        return latest

    return probe


def sample_documents() -> pl.DataFrame:
    """Every document of the bundled sample (id, text, source), in id order."""
    frames = [
        read_sample_shard(p).select("id", "text", "source") for p in sorted(SAMPLE_CORPUS.iterdir())
    ]
    return pl.concat(frames).sort("id")


def write_first_shards(
    folder: Path, names: tuple[str, ...] = ("a.jsonl", "b.jsonl")
) -> pl.DataFrame:
    """Shards of `DOCS_PER_DOMAIN_PER_SHARD` documents per domain, every domain but
    `LATE_DOMAIN` (60 documents each with the bundled sample); returns the rows written."""
    early = sample_documents().filter(pl.col("source") != LATE_DOMAIN)
    per_domain = DOCS_PER_DOMAIN_PER_SHARD
    picked = early.filter(pl.int_range(pl.len()).over("source") < per_domain * len(names))
    ranked = picked.with_columns(
        (pl.int_range(pl.len()).over("source") // per_domain).alias("_shard")
    )
    for number, shard in enumerate(names):
        rows = ranked.filter(pl.col("_shard") == number).drop("_shard")
        write_jsonl(rows.to_dicts(), folder / shard)
    return picked


def write_late_shard(folder: Path, name: str = "late_python.jsonl") -> pl.DataFrame:
    """A new shard of `LATE_SHARD_DOCS` documents of `LATE_DOMAIN` only; returns its rows."""
    late = sample_documents().filter(pl.col("source") == LATE_DOMAIN).head(LATE_SHARD_DOCS)
    write_jsonl(late.to_dicts(), folder / name)
    return late


SEARCH_ASSETS = (
    "bootstrap_iteration", "mixture_candidates", "proxy_scores", "mixture_predictor",
    "optimal_mixture", "climbmix_dataset",
)  # fmt: skip
LAUNCH_BACKFILL = """
mutation($assets: [AssetKeyInput!]!) {
  launchPartitionBackfill(backfillParams: {assetSelection: $assets, allPartitions: true}) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status error { message } }
  }
}"""
BACKFILL_TIMEOUT_S = 420


def search_by_backfill(dev: DagsterDev) -> str:
    """Everything the search reads by `run_pipeline` into the instance of `dev`, then the search
    and dataset assets over all iterations by one UI backfill (what *Materialize all*
    launches); returns the backfill's final status."""
    import dagster as dg

    from climb_assets.cli.runner import run_pipeline
    from climb_assets.definitions import build_definitions
    from climb_assets.defs.graph import stages

    defs = build_definitions(dev.settings)
    upstream = tuple(
        s for s in stages(defs) if s.axis != "iterations" and "optimal_mixture" not in s.assets
    )
    with dg.DagsterInstance.from_config(str(dev.home)) as instance:
        run_pipeline(defs, dev.settings, instance, upstream, echo=lambda _: None)
    launched = dev.graphql(LAUNCH_BACKFILL, {"assets": [{"path": [a]} for a in SEARCH_ASSETS]})
    answer = launched["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise LiveDagsterError(f"the search backfill was not launched: {answer}")

    def finished() -> str | None:
        data = dev.graphql(BACKFILL_STATUS, {"id": answer["backfillId"]})
        status = data["partitionBackfillOrError"]["status"]
        return status if status.startswith("COMPLETED") else None

    return dev.wait_until(finished, "the search backfill", BACKFILL_TIMEOUT_S, interval=5)
