"""The `ray` backend on a real multi-node Ray started on this machine (a head with no CPUs and
worker nodes of 1 CPU each, `ray.cluster_utils.Cluster`): an iteration, the embedding and the
ingest spread over the nodes and match the local backend, a node removed mid-iteration costs
only the proxy it was training, and the output-folder probe reads on every node."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest

from climb_assets.core.search.proxy_jobs import ProxyJob, ProxyTrainer
from climb_assets.core.shared.execution import worker_identity
from climb_assets.definitions import build_definitions
from climb_assets.settings import Settings
from climb_assets.store import Layout
from climb_assets_tests import test_ray_execution as single_node
from climb_assets_tests.conftest import small_settings
from climb_assets_tests.test_ray_execution import (
    RAY_ONE_THREAD,
    assert_same_ingest_files,
    ingest_every_shard,
    iteration_metadata,
    scores,
    upstream_copy,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

WORKER_NODES = 2
STALL_S = 180  # the stalled proxy's wait for its node's removal; the test fails if it ends

# The single-node file's local-backend run, as a fixture of this module (its `local_ray` is not).
local_run = single_node.local_run


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """Head (0 CPUs, the driver's node) + WORKER_NODES nodes of 1 CPU, each its own raylet."""
    from ray.cluster_utils import Cluster

    # A private Ray temp folder: Cluster writes its address to <temp>/ray/ray_current_cluster,
    # which any address-less `ray.init()` on this machine (other tests, other users) would join.
    # Short, since Ray's socket paths live under it.
    temp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
    saved = {key: os.environ.get(key) for key in ("RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_TMPDIR=temp, RAY_USAGE_STATS_ENABLED="0")
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        for _ in range(WORKER_NODES):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(temp, ignore_errors=True)


def worker_node_ids(cluster: Any) -> set[str]:
    return {node.node_id for node in cluster.worker_nodes}


def materialize_iteration(
    settings: Settings, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """bootstrap_iteration iter-001 only: what follows it does not run on Ray."""
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        partition_key="iter-001",
        asset_selection=[dg.AssetKey("bootstrap_iteration")],
    )


def on_ray(local_run: tuple[Settings, Any], target: Path) -> tuple[Settings, Any]:
    settings, local = local_run
    layout = upstream_copy(local, target)
    return settings.model_copy(
        update={"output_dir": layout.root, "execution": RAY_ONE_THREAD}
    ), layout


def test_an_iteration_spreads_over_the_nodes_and_matches_the_local_scores(
    ray_cluster, local_run, tmp_path: Path
) -> None:
    settings, layout = on_ray(local_run, tmp_path / "ray")
    with dg.instance_for_test() as instance:
        result = materialize_iteration(settings, instance)
    assert result.success
    metadata = iteration_metadata(result)
    # 4 candidates to their rung, the best 2 on to the end, 2 seed repeats.
    assert metadata["proxies_trained"].value == 8
    nodes = metadata["nodes"].value
    assert len(nodes) == WORKER_NODES and set(nodes) == worker_node_ids(ray_cluster)
    assert scores(layout).equals(scores(local_run[1]))


def test_embedding_workers_sit_on_different_nodes_and_match_the_local_encoder(
    ray_cluster, local_run
) -> None:
    from climb_assets.core.clustering.embedding import encode, encode_on_ray
    from climb_assets.core.clustering.encoder import load_encoder

    settings, local = local_run
    texts = pl.read_parquet(local.documents("a.jsonl"))["text"].to_list()[:90]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as many as each embedding worker has
    try:
        expected = encode(load_encoder(settings.embedding), texts, settings.embedding.batch_size)
    finally:
        torch.set_num_threads(threads)
    chunked = RAY_ONE_THREAD.model_copy(update={"embed_chunk_docs": 30, "embed_workers": 2})
    vectors, workers = encode_on_ray(texts, settings.embedding, chunked)
    assert vectors.shape == expected.shape and vectors.dtype == np.float16
    assert len(workers) == 3 and {w["node"] for w in workers} == worker_node_ids(ray_cluster)
    cosine = np.sum(vectors.astype(np.float32) * expected.astype(np.float32), axis=1)
    assert cosine.min() > 0.999  # chunks of 30 batch texts differently from one call of 90


def test_ingest_runs_on_the_worker_nodes_and_matches_the_local_files(
    ray_cluster, slice_corpus: Path, tmp_path: Path
) -> None:
    """Each shard's ingest is a task on a worker node (the head, the driver's, has no CPUs)."""
    settings = small_settings(slice_corpus, tmp_path / "local")
    ingest_every_shard(settings)
    on_ray = settings.model_copy(
        update={"output_dir": tmp_path / "ray", "execution": RAY_ONE_THREAD}
    )
    metadata = ingest_every_shard(on_ray)
    assert len(metadata) == 3
    nodes = {node for values in metadata.values() for node in values["nodes"].value}
    assert nodes and nodes <= worker_node_ids(ray_cluster)
    assert_same_ingest_files(Layout(tmp_path / "ray"), Layout(tmp_path / "local"), list(metadata))


def test_the_output_folder_probe_reads_on_every_node_and_leaves_nothing(
    ray_cluster, tmp_path: Path
) -> None:
    from climb_assets.core.shared.ray_backend import check_shared_folder

    assert len([n for n in ray.nodes() if n["Alive"]]) == WORKER_NODES + 1
    check_shared_folder(tmp_path, RAY_ONE_THREAD)
    assert list(tmp_path.iterdir()) == []


@dataclass(frozen=True)
class StallsAroundARemoval(ProxyTrainer):
    """Logs every start (with its rank: the order proxies started in, over all nodes) and every
    finish to `events`, outside the iteration's work folder, which the iteration removes. The
    first start stalls until the test removes its node; the second trains at once; later ones
    wait for the removal, so it lands on a running proxy while others still wait for a CPU."""

    events: Path = Path()

    def __call__(self, job: ProxyJob) -> dict:
        node = worker_identity()["node"]
        rank = _next_rank(self.events.with_suffix(".rank"))
        self._log({"event": "start", "job": job.name, "node": node, "rank": rank})
        if rank == 0:
            self._record_attempt(job)  # as the real start would have, before its node died
            time.sleep(STALL_S)
            raise RuntimeError(f"node {node} was not removed within {STALL_S} s")
        if rank >= 2:
            removed = self.events.with_suffix(".removed")
            deadline = time.monotonic() + STALL_S
            while not removed.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no node was removed within {STALL_S} s")
                time.sleep(0.1)
        done = super().__call__(job)
        self._log({"event": "done", "job": job.name, "node": node})
        return done

    def _log(self, event: dict) -> None:
        with self.events.open("a") as log:
            log.write(json.dumps(event) + "\n")


def _next_rank(prefix: Path) -> int:
    """0 for the first caller, 1 for the next, ...: exclusive creation is atomic across the
    processes of every node (they share this machine's filesystem)."""
    rank = 0
    while True:
        try:
            os.close(os.open(f"{prefix}.{rank}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            rank += 1
            continue
        return rank


def _read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_a_node_removed_mid_iteration_retries_only_its_proxy_elsewhere(
    ray_cluster, local_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import climb_assets.defs.assets.search as search

    settings, layout = on_ray(local_run, tmp_path / "ray")
    events = tmp_path / "events.jsonl"

    def trainer(*args: object) -> StallsAroundARemoval:
        return StallsAroundARemoval(*args, events=events)  # type: ignore[arg-type]

    monkeypatch.setattr(search, "ProxyTrainer", trainer)
    # One node more than the fixture's, so as many remain after the removal. Added here: Ray
    # starts a node only from the main thread (it installs a signal handler).
    ray_cluster.add_node(num_cpus=1)
    ray_cluster.wait_for_nodes()
    removal: dict[str, Any] = {}

    def remove_the_stalled_node() -> None:
        """Once the second proxy has finished, remove the node of the stalled first one."""
        try:
            deadline = time.monotonic() + STALL_S
            while time.monotonic() < deadline:
                seen = _read_events(events)
                stalled = [e for e in seen if e.get("rank") == 0]
                if stalled and any(e["event"] == "done" for e in seen):
                    [node] = [
                        n for n in ray_cluster.worker_nodes if n.node_id == stalled[0]["node"]
                    ]
                    removal["started"] = {e["job"] for e in seen}
                    ray_cluster.remove_node(node)
                    removal["node"] = node.node_id
                    events.with_suffix(".removed").touch()
                    return
                time.sleep(0.1)
        except Exception as err:  # noqa: BLE001 - re-raised by the test
            removal["error"] = err

    remover = threading.Thread(target=remove_the_stalled_node, daemon=True)
    remover.start()
    with dg.instance_for_test() as instance:
        result = materialize_iteration(settings, instance)
        warnings = [
            event.message
            for event in instance.all_logs(result.run_id)
            if event.level == 30 and "worker was lost" in (event.message or "")
        ]
    remover.join(timeout=30)
    assert "error" not in removal, removal.get("error")
    assert result.success
    assert len(removal["started"]) < 6  # proxies were still waiting for a CPU

    seen = _read_events(events)
    starts = pl.DataFrame([e for e in seen if e["event"] == "start"])
    [stalled] = [e for e in seen if e.get("rank") == 0]
    counts = dict(starts["job"].value_counts().iter_rows())
    assert len(counts) == 4 + 2 + 2  # rungs, the 2 kept on to the end, 2 seed repeats
    # Only the stalled proxy started again; what had finished (checkpointed) never retrained.
    assert counts == {job: 2 if job == stalled["job"] else 1 for job in counts}
    retried = starts.filter(pl.col("job") == stalled["job"])["node"].to_list()
    assert retried[0] == removal["node"] and retried[1] != removal["node"]
    [warning] = warnings
    candidate = re.match(r"candidate-(\d+)", stalled["job"])
    assert candidate and f"candidate {candidate[1]}" in warning and "retried" in warning
    nodes = iteration_metadata(result)["nodes"].value
    assert nodes and removal["node"] not in nodes and set(nodes) <= worker_node_ids(ray_cluster)
    assert scores(layout).equals(scores(local_run[1]))
