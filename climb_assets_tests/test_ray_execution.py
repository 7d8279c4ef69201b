"""The `ray` execution backend with a real local Ray (2 CPUs, started inside this process), real
torch proxies and the real encoder: same results as the local backend (ingest included), proxies
spread over worker processes, a lost worker retried without retraining what had finished."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from climb_assets.cli.runner import run_pipeline
from climb_assets.core.search.proxy_jobs import ProxyJob, ProxyTrainer
from climb_assets.definitions import build_definitions
from climb_assets.defs.shard_state import register_shards
from climb_assets.settings import ExecutionSettings, Settings
from climb_assets.store import ASSIGNMENTS, Layout
from climb_assets_tests.conftest import small_settings

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

RAY_ONE_THREAD = ExecutionSettings(backend="ray", cpus_per_proxy=1)


@pytest.fixture(scope="module")
def local_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(slice_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """The whole pipeline on the local backend, one iteration of 4 proxies (+2 seed repeats),
    proxies on 1 thread each as the Ray workers will be."""
    out = tmp_path_factory.mktemp("local")
    settings = small_settings(slice_corpus, out, iterations=[4])
    settings = settings.model_copy(
        update={
            "proxy": settings.proxy.model_copy(update={"cpu_threads": 1}),
            # off by default; on here, so Ray's repeats are compared with the local ones
            "search": settings.search.model_copy(update={"seed_repeats": 2}),
        }
    )
    with dg.instance_for_test() as instance:
        run_pipeline(build_definitions(settings), settings, instance, echo=lambda _: None)
    return settings, Layout(out)


def upstream_copy(layout: Layout, target: Path) -> Layout:
    """The local run's output folder without the search and what follows from it."""
    shutil.copytree(layout.root, target)
    copy = Layout(target)
    shutil.rmtree(copy.iteration("iter-001").parent)
    shutil.rmtree(copy.dataset)
    copy.optimal_mixture.unlink()
    return copy


def materialize_search(settings: Settings) -> dg.ExecuteInProcessResult:
    """bootstrap_iteration iter-001, then the optimal mixture and the dataset."""
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        register_shards(settings, instance)  # the dataset reads the registered shards
        first = job.execute_in_process(
            instance=instance,
            partition_key="iter-001",
            asset_selection=[dg.AssetKey("bootstrap_iteration")],
        )
        assert first.success
        rest = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("optimal_mixture"), dg.AssetKey("climbmix_dataset")],
        )
        assert rest.success
    return first


def iteration_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata


def scores(layout: Layout) -> pl.DataFrame:
    runs = pl.read_parquet(layout.runs("iter-001"))
    timing = ["train_tokens_per_second"]  # wall-clock throughput, never equal between runs
    return runs.drop(timing).sort("candidate_id")


def test_ray_iteration_matches_local_and_uses_several_workers(
    local_ray, local_run, tmp_path: Path
) -> None:
    settings, local = local_run
    layout = upstream_copy(local, tmp_path / "ray")
    on_ray = settings.model_copy(update={"output_dir": layout.root, "execution": RAY_ONE_THREAD})
    result = materialize_search(on_ray)

    metadata = iteration_metadata(result)
    assert metadata["execution_backend"].value == "ray"
    # 4 candidates to their rung, the best 2 on to the end, 2 seed repeats.
    assert metadata["proxies_trained"].value == 8
    workers = metadata["workers"].value
    assert len(workers) >= 2 and str(os.getpid()) not in {w.split(":")[1] for w in workers}
    assert scores(layout).equals(scores(local))
    assert pl.read_parquet(layout.seed_repeats("iter-001")).equals(
        pl.read_parquet(local.seed_repeats("iter-001"))
    )
    assert json.loads(layout.optimal_mixture.read_text()) == json.loads(
        local.optimal_mixture.read_text()
    )
    shards = [p.name for p in layout.dataset_shards()]
    assert shards and shards == [p.name for p in local.dataset_shards()]
    for name in shards:
        assert (layout.dataset / name).read_bytes() == (local.dataset / name).read_bytes(), name
    assert card_without_provenance(layout) == card_without_provenance(local)


def test_corpus_wide_stages_on_ray_write_the_local_files(
    local_ray, local_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cluster_assignments, cluster_profiles and proxy_pool as one Ray task per shard write the
    very bytes the local backend wrote."""
    import climb_assets.core.shared.ray_backend as ray_backend

    settings, local = local_run
    shutil.copytree(local.root, tmp_path / "ray")
    layout = Layout(tmp_path / "ray")
    shutil.rmtree(layout.root / ASSIGNMENTS)  # rebuilt, not copied
    layout.cluster_profiles.unlink()
    shutil.rmtree(layout.proxy_pool)
    on_ray = settings.model_copy(update={"output_dir": layout.root, "execution": RAY_ONE_THREAD})
    mapped: list[int] = []
    on_cluster = ray_backend.map_ray

    def counted(fn: Callable, items: Sequence, *args: object) -> list:
        mapped.append(len(items))
        return on_cluster(fn, items, *args)

    monkeypatch.setattr(ray_backend, "map_ray", counted)
    stages = ("cluster_assignments", "cluster_profiles", "proxy_pool")
    job = build_definitions(on_ray).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        shards = register_shards(on_ray, instance)
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(name) for name in stages]
        )
    assert result.success
    assert len(shards) >= 2 and mapped == [len(shards)] * 3  # one task per shard, each stage
    made = [local.assignments(shard) for shard in shards]
    made += [local.cluster_profiles, *sorted(local.proxy_pool.iterdir())]
    for path in made:
        again = layout.root / path.relative_to(local.root)
        assert again.read_bytes() == path.read_bytes(), path.name
    pool_files = sorted(p.name for p in layout.proxy_pool.iterdir())
    assert pool_files == sorted(p.name for p in local.proxy_pool.iterdir())  # no parts left


def card_without_provenance(layout: Layout) -> str:
    """The dataset card less what names its run: run ids, output folder, settings hash (which
    covers the output folder) and the backend line of the settings."""
    import re

    card = layout.dataset_card.read_text().replace(str(layout.root), "OUT")
    card = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|never materialized", "RUN", card)
    card = re.sub(r"Settings hash: `[0-9a-f]+`", "Settings hash: HASH", card)
    assert "backend: " in card
    return re.sub(r"backend: (local|ray)", "backend: BACKEND", card)


@dataclass(frozen=True)
class KillsItsWorkerOnce(ProxyTrainer):
    """Ends its own worker process the first time it starts `victim` (as a lost node would),
    and logs every start to `starts` outside the iteration's work folder."""

    victim: int = -1
    starts: Path = Path()

    def __call__(self, job: ProxyJob) -> dict:
        first_time = not any(
            json.loads(line)["candidate"] == job.candidate_id
            for line in self._lines()
            if line.strip()
        )
        with self.starts.open("a") as log:
            entry = {"job": job.name, "candidate": job.candidate_id, "pid": os.getpid()}
            log.write(json.dumps(entry) + "\n")
        if job.candidate_id == self.victim and not job.repeat and first_time:
            self._record_attempt(job)
            os._exit(1)
        return super().__call__(job)

    def _lines(self) -> list[str]:
        return self.starts.read_text().splitlines() if self.starts.exists() else []


def test_a_worker_lost_mid_iteration_is_retried_and_nothing_finished_retrains(
    local_ray, local_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import climb_assets.defs.assets.search as search

    settings, local = local_run
    layout = upstream_copy(local, tmp_path / "ray")
    on_ray = settings.model_copy(update={"output_dir": layout.root, "execution": RAY_ONE_THREAD})
    candidates = pl.read_parquet(local.runs("iter-001"))["candidate_id"]
    victim = int(candidates.sort()[2])  # starts while the first two are training or done
    starts = tmp_path / "starts.jsonl"

    def trainer(*args: object) -> KillsItsWorkerOnce:
        return KillsItsWorkerOnce(*args, victim=victim, starts=starts)  # type: ignore[arg-type]

    monkeypatch.setattr(search, "ProxyTrainer", trainer)
    job = build_definitions(on_ray).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key="iter-001",
            asset_selection=[dg.AssetKey("bootstrap_iteration")],
        )
        warnings = [
            event.message
            for event in instance.all_logs(result.run_id)
            if event.level == 30 and "worker was lost" in (event.message or "")
        ]
    assert result.success
    logged = [json.loads(line) for line in starts.read_text().splitlines()]
    started = pl.DataFrame(logged)["job"].value_counts().sort("job")
    victim_name = f"candidate-{victim}-rung"  # its first job: successive halving's rung
    assert dict(started.iter_rows()) == {
        name: 2 if name == victim_name else 1 for name in started["job"]
    }
    assert started.height == 4 + 2 + 2  # rungs, the 2 kept on to the end, 2 seed repeats
    [warning] = warnings
    assert f"candidate {victim}:" in warning and "retried" in warning
    assert scores(layout).equals(scores(local))


def test_embeddings_on_ray_actors_match_the_local_encoder(
    local_ray, local_run, tmp_path: Path
) -> None:
    from climb_assets.core.clustering.embedding import encode, encode_file_on_ray, encode_on_ray
    from climb_assets.core.clustering.encoder import load_encoder

    settings, local = local_run
    texts = pl.read_parquet(local.documents("a.jsonl"))["text"].to_list()[:90]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as many as each embedding worker has
    try:
        model = load_encoder(settings.embedding)
        expected = encode(model, texts, settings.embedding.batch_size)
    finally:
        torch.set_num_threads(threads)
    # 5 chunks sent in windows of 4 and 1 (two per worker): both windows use the same 2 actors.
    chunked = RAY_ONE_THREAD.model_copy(update={"embed_chunk_docs": 20, "embed_workers": 2})
    vectors, workers = encode_on_ray(texts, settings.embedding, chunked)
    assert vectors.shape == expected.shape and vectors.dtype == np.float16
    assert len(workers) == 5 and len({w["pid"] for w in workers}) == 2
    cosine = np.sum(vectors.astype(np.float32) * expected.astype(np.float32), axis=1)
    assert cosine.min() > 0.999  # chunks of 20 batch texts differently from one call of 90
    # Chunks as large as the encoder's own: the same batches, so the same vectors.
    documents, out = tmp_path / "documents.parquet", tmp_path / "embeddings.npy"
    pl.DataFrame({"text": texts}).write_parquet(documents)
    encode_file_on_ray(documents, out, settings.embedding, RAY_ONE_THREAD)
    assert np.array_equal(np.load(out), expected)


def test_openvino_embeddings_on_ray_match_the_local_openvino_encoder(
    local_ray, local_run, tmp_path: Path
) -> None:
    """The openvino backend's encoder loads in the Ray actors too (one stream per worker CPU)
    and gives the local one-thread encoder's bytes."""
    pytest.importorskip("openvino")
    import torch

    from climb_assets.core.clustering.embedding import encode_file, encode_file_on_ray
    from climb_assets.core.clustering.encoder import load_encoder

    settings, local = local_run
    embedding = settings.embedding.model_copy(update={"backend": "openvino", "batch_size": 8})
    documents = tmp_path / "documents.parquet"
    texts = pl.read_parquet(local.documents("a.jsonl"))["text"].to_list()[:60]
    pl.DataFrame({"text": texts}).write_parquet(documents)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as many as each embedding worker has
    try:
        encode_file(load_encoder(embedding), documents, tmp_path / "local.npy", 8)
    finally:
        torch.set_num_threads(threads)
    workers = encode_file_on_ray(documents, tmp_path / "ray.npy", embedding, RAY_ONE_THREAD)
    assert workers and all(w["node"] for w in workers)
    assert np.array_equal(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "local.npy"))


def test_more_gpus_than_the_cluster_has_fail_at_once_naming_the_setting(local_ray) -> None:
    from climb_assets.core.shared.execution import ExecutionError, TaskResources, map_tasks

    wants_gpu = RAY_ONE_THREAD.model_copy(update={"gpus_per_proxy": 0.5})
    resources = TaskResources(1, 0.5, "execution.cpus_per_proxy", "execution.gpus_per_proxy")
    with pytest.raises(ExecutionError, match=r"execution\.gpus_per_proxy: .*0\.5 GPU"):
        map_tasks(abs, [1, -2], wants_gpu, resources)


def test_the_output_folder_probe_passes_on_a_shared_folder_and_leaves_nothing(
    local_ray, tmp_path: Path
) -> None:
    from climb_assets.core.shared.ray_backend import check_shared_folder

    check_shared_folder(tmp_path, RAY_ONE_THREAD)
    assert list(tmp_path.iterdir()) == []


def test_results_come_back_in_item_order_not_completion_order(local_ray) -> None:
    from climb_assets.core.shared.execution import TaskResources, map_tasks

    resources = TaskResources(1, 0, "execution.cpus_per_proxy", "execution.gpus_per_proxy")
    delays = [0.6, 0.0, 0.3, 0.0]
    finished: list[int] = []
    results = map_tasks(
        _sleep_then_pid,
        delays,
        RAY_ONE_THREAD,
        resources,
        on_result=lambda index, _: finished.append(index),
    )
    assert [delay for delay, _ in results] == delays
    assert finished != [0, 1, 2, 3]  # the slow first item finished later than others


def _sleep_then_pid(delay: float) -> tuple[float, int]:
    import time

    time.sleep(delay)
    return delay, os.getpid()


def messy_corpus(slice_corpus: Path, folder: Path) -> Path:
    """A gzip shard of the slice and a small JSONL shard with a reject of most kinds."""
    folder.mkdir()
    shutil.copy(slice_corpus / "b.jsonl.gz", folder)
    lines = [
        json.dumps({"id": "k1", "text": "A first document, kept."}),
        "{not json",
        json.dumps({"id": "k2", "text": "   "}),
        json.dumps({"id": "k3", "text": "A first document, kept."}),  # duplicate text
        json.dumps({"id": "k1", "text": "Another text reusing an id."}),
        json.dumps({"id": "k4"}),
        json.dumps({"id": "k5", "text": "A second document, kept too."}),
    ]
    (folder / "messy.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def ingest_every_shard(settings: Settings) -> dict[str, dict]:
    """corpus_documents materialized for each shard: its metadata by shard."""
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    metadata: dict[str, dict] = {}
    with dg.instance_for_test() as instance:
        for shard in register_shards(settings, instance):
            result = job.execute_in_process(
                instance=instance,
                partition_key=shard,
                asset_selection=[dg.AssetKey("corpus_documents")],
            )
            assert result.success
            metadata[shard] = iteration_metadata(result)
    return metadata


def assert_same_ingest_files(layout: Layout, local: Layout, shards: Sequence[str]) -> None:
    for shard in shards:
        for path in (local.documents(shard), local.rejects(shard)):
            again = layout.root / path.relative_to(local.root)
            assert again.read_bytes() == path.read_bytes(), path.name


def test_ingest_on_ray_writes_the_local_files_and_records_the_node(
    local_ray, slice_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Corpus and output folders given relative to the working directory (a Ray worker's is
    another), and rejects of most kinds: the Ray task writes the local backend's very bytes."""
    import climb_assets.core.corpus.documents as documents

    messy_corpus(slice_corpus, tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    settings = small_settings(Path("corpus"), Path("local"))
    local = ingest_every_shard(settings)
    assert {shard: m["execution_backend"].value for shard, m in local.items()} == {
        "b.jsonl.gz": "local",
        "messy.jsonl": "local",
    }
    assert local["messy.jsonl"]["rejected"].value == 5

    def not_here(*_: object) -> None:
        raise AssertionError("ingest ran in the Dagster step's process")

    monkeypatch.setattr(documents, "process_shard", not_here)  # Ray workers import their own
    on_ray = settings.model_copy(update={"output_dir": Path("ray"), "execution": RAY_ONE_THREAD})
    metadata = ingest_every_shard(on_ray)
    node = ray.get_runtime_context().get_node_id()
    for shard, values in metadata.items():
        assert values["execution_backend"].value == "ray"
        assert values["nodes"].value == [node]
        for key in ("rows_read", "documents", "rejects_by_reason", "tokens", "mean_quality"):
            assert values[key] == local[shard][key], key
    assert_same_ingest_files(Layout(tmp_path / "ray"), Layout(tmp_path / "local"), list(local))


def test_a_shard_file_a_ray_node_cannot_see_fails_naming_file_and_node(
    local_ray, tmp_path: Path
) -> None:
    from climb_assets.defs.assets.corpus import ShardIngest, ingest_shard_on_ray
    from climb_assets.defs.shard_state import map_shards

    settings = small_settings(tmp_path, tmp_path / "out")
    on_ray = settings.model_copy(update={"execution": RAY_ONE_THREAD})
    layout = Layout(tmp_path / "out")
    layout.root.mkdir()
    gone = tmp_path / "elsewhere" / "gone.jsonl"
    job = ShardIngest(
        gone,
        "gone.jsonl",
        settings.corpus,
        settings.embedding.model,
        layout.documents("gone.jsonl"),
        layout.rejects("gone.jsonl"),
    )
    node = ray.get_runtime_context().get_node_id()
    with pytest.raises(dg.Failure) as failed:
        map_shards(ingest_shard_on_ray, [job], on_ray, layout, "corpus_documents")
    message = str(failed.value)
    assert message.startswith("corpus_documents: ")
    assert f"{gone}: shard file not found on Ray node {node}" in message
    assert not layout.documents("gone.jsonl").exists()
