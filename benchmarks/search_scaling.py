"""One bootstrap iteration's proxies on the local backend (one process, then worker processes)
beside Ray, embedding throughput by Ray worker count, and a proxy's tokens/s alone beside a
second process sharing the machine.

    .venv/bin/python benchmarks/search_scaling.py [--proxies 8] [--tokens 50000] [--docs 600]
        [--parts iteration,embedding,sharing]

The proxy pool is the bundled sample tokenized by source (BPE trained on it), the target its
held-out text; proxies have the default ProxySettings shape. Ray starts inside this process with
`--workers` CPUs (`ray.init(num_cpus=...)`), the local backend spawns as many worker processes,
proxies get 1 thread each everywhere, and the scores of all three are compared. CPU time counts
this process and every process it started (Ray's workers and the local worker processes
included). Figures only, no assertions; a machine other jobs share moves them.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil

from climb_assets.core.search.proxy_jobs import ProxyJob, ProxyTrainer
from climb_assets.core.shared.execution import TaskResources, map_tasks
from climb_assets.settings import ExecutionSettings, Settings

PROJECT = Path(__file__).resolve().parents[1]
PROXY = TaskResources(1, 0, "execution.cpus_per_proxy", "execution.gpus_per_proxy")


def cpu_seconds() -> float:
    """CPU time of this process, its descendants alive now (Ray's workers) and those that ended
    (the local backend's worker processes)."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + ended.ru_utime + ended.ru_stime


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds) of fn()."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def sample_texts() -> pl.DataFrame:
    frames = []
    for path in sorted((PROJECT / "data" / "corpus").iterdir()):
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
        frames.append(frame.select("text", "source"))
    return pl.concat(frames).sort("source", "text")


def build_sample_pool(root: Path, settings: Settings) -> Path:
    from climb_assets.core.search.pool_writer import build_pool
    from climb_assets.core.search.tokenizer import train_bpe

    docs = sample_texts()
    tokenizer = train_bpe(docs["text"], settings.proxy.vocab_size, max_docs=5000, seed=0)
    groups = docs.partition_by("source", as_dict=True, maintain_order=True)
    texts = {i: frame["text"] for i, (_, frame) in enumerate(sorted(groups.items()))}
    build_pool(texts, tokenizer, root / "pool")
    return root / "pool"


def proxy_settings(tokens: int, output: Path) -> Settings:
    target = {
        "name": "held_out_text",
        "kind": "text",
        "path": str(PROJECT / "data" / "targets" / "held_out_text.jsonl"),
        "max_examples": 40,
    }
    return Settings.model_validate(
        {
            "output_dir": str(output),
            "proxy": {"tokens_per_proxy": tokens, "eval_max_tokens": 10_000, "cpu_threads": 1},
            "targets": [target],
        }
    )


def iteration_jobs(n_groups: int, proxies: int) -> list[ProxyJob]:
    rng = np.random.default_rng(0)
    return [
        ProxyJob(i, tuple(float(w) for w in rng.dirichlet(np.ones(n_groups))), 0)
        for i in range(proxies)
    ]


def compare_iteration(settings: Settings, pool: Path, proxies: int, workers: int) -> None:
    import ray

    from climb_assets.core.search.proxy_pool import ProxyPool

    jobs = iteration_jobs(len(ProxyPool.open(pool).groups), proxies)

    def trainer(name: str) -> ProxyTrainer:
        return ProxyTrainer(settings, pool, settings.output_dir / name, run_key=name)

    local = ExecutionSettings()
    on_ray = ExecutionSettings(backend="ray", cpus_per_proxy=1)
    local_runs, local_wall, local_cpu = measured(
        lambda: map_tasks(trainer("local"), jobs, local, PROXY, local_threads=1)
    )
    spread_runs, spread_wall, spread_cpu = measured(
        lambda: map_tasks(
            trainer("local-workers"), jobs, local, PROXY, local_threads=1, local_workers=workers
        )
    )
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        _, warm_wall, warm_cpu = measured(
            lambda: map_tasks(trainer("warm-up"), jobs[:workers], on_ray, PROXY)
        )
        ray_runs, ray_wall, ray_cpu = measured(
            lambda: map_tasks(trainer("ray"), jobs, on_ray, PROXY)
        )
    finally:
        ray.shutdown()
    objectives = [[run["row"]["objective"] for run in runs] for runs in (local_runs, spread_runs)]
    same = objectives[0] == objectives[1] == [run["row"]["objective"] for run in ray_runs]
    pids = {run["worker"]["pid"] for run in ray_runs}
    print(f"\none iteration of {proxies} proxies ({settings.proxy.tokens_per_proxy} tokens each)")
    print(f"{'backend':34} {'wall s':>8} {'CPU s':>8} {'tok/s per proxy':>16}")
    for name, runs, wall, cpu in (
        ("local, 1 process x 1 thread", local_runs, local_wall, local_cpu),
        (f"local, {workers} processes x 1 thread", spread_runs, spread_wall, spread_cpu),
        (f"ray, {workers} workers x 1 thread", ray_runs, ray_wall, ray_cpu),
    ):
        rate = np.mean([run["row"]["train_tokens_per_second"] for run in runs])
        print(f"{name:34} {wall:8.1f} {cpu:8.1f} {rate:16.0f}")
    print(
        f"ray warm-up ({workers} proxies while its workers start): {warm_wall:.1f} s wall, "
        f"{warm_cpu:.1f} s CPU; ray/local wall for the iteration: {ray_wall / local_wall:.2f}; "
        f"scores equal on all three: {same}; Ray worker processes: {len(pids)}"
    )


def compare_embedding(settings: Settings, docs: int, max_workers: int) -> None:
    import ray

    from climb_assets.core.clustering.embedding import encode, encode_on_ray
    from climb_assets.core.clustering.encoder import load_encoder
    from climb_assets.core.shared.execution import set_torch_threads

    texts = sample_texts()["text"].to_list()[:docs]
    set_torch_threads(1)
    model = load_encoder(settings.embedding)
    encode(model, texts[:32], 32)
    _, wall, cpu = measured(lambda: encode(model, texts, settings.embedding.batch_size))
    print(f"\nembedding {len(texts)} documents ({settings.embedding.model})")
    print(f"{'backend':34} {'docs/s':>8} {'wall s':>8} {'CPU s':>8}")
    print(f"{'local, 1 thread':34} {len(texts) / wall:8.1f} {wall:8.1f} {cpu:8.1f}")
    ray.init(num_cpus=max_workers, include_dashboard=False, log_to_driver=False)
    try:
        for workers in range(1, max_workers + 1):
            execution = ExecutionSettings(
                backend="ray",
                embed_workers=workers,
                embed_chunk_docs=max(1, len(texts) // (2 * workers)),
            )
            # Every actor loads the encoder on its first chunk: warm them all up first.
            warm_up = texts[: execution.embed_chunk_docs * workers]
            encode_on_ray(warm_up, settings.embedding, execution)
            _, wall, cpu = measured(lambda e=execution: encode_on_ray(texts, settings.embedding, e))
            name = f"ray, {workers} worker(s) x 1 thread"
            print(f"{name:34} {len(texts) / wall:8.1f} {wall:8.1f} {cpu:8.1f}")
    finally:
        ray.shutdown()


def one_proxy_tokens_per_second(pool: Path, tokens: int, threads: int) -> float:
    from climb_assets.core.search.proxy_pool import ProxyPool
    from climb_assets.core.search.proxy_training import train_proxy
    from climb_assets.core.shared.execution import set_torch_threads

    set_torch_threads(threads)
    opened = ProxyPool.open(pool)
    settings = proxy_settings(tokens, Path(".")).proxy
    mixture = {group: 1.0 for group in opened.groups}
    return train_proxy(opened, mixture, settings, seed=0).tokens_per_second


def compare_sharing(pool: Path, tokens: int) -> None:
    """A proxy alone, then two at once in two processes, at 1 thread and at 2 threads each."""
    print(f"\none proxy's tokens/s ({tokens} tokens), alone vs beside a second process")
    print(f"{'threads per proxy':18} {'alone':>8} {'shared':>8} {'other':>8}")
    for threads in (1, 2):
        alone = one_proxy_tokens_per_second(pool, tokens, threads)
        other = subprocess.Popen(
            [sys.executable, __file__, "--one-proxy", str(pool), str(tokens), str(threads)],
            stdout=subprocess.PIPE,
            text=True,
        )
        shared = one_proxy_tokens_per_second(pool, tokens, threads)
        other_rate = float((other.communicate()[0] or "nan").strip().splitlines()[-1])
        print(f"{threads:<18} {alone:8.0f} {shared:8.0f} {other_rate:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=8, help="proxies in the iteration")
    parser.add_argument("--tokens", type=int, default=50_000, help="training tokens per proxy")
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs (1 thread each)")
    parser.add_argument("--docs", type=int, default=600, help="documents to embed")
    parser.add_argument(
        "--parts",
        default="iteration,embedding,sharing",
        help="comma-separated: which comparisons to run",
    )
    parser.add_argument("--one-proxy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.one_proxy:  # the second process of compare_sharing
        pool, tokens, threads = args.one_proxy
        print(one_proxy_tokens_per_second(Path(pool), int(tokens), int(threads)))
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before starting")
    with tempfile.TemporaryDirectory() as tmp:
        settings = proxy_settings(args.tokens, Path(tmp))
        pool = build_sample_pool(Path(tmp), settings)
        parts = set(args.parts.split(","))
        if "iteration" in parts:
            compare_iteration(settings, pool, args.proxies, args.workers)
        if "embedding" in parts:
            compare_embedding(settings, args.docs, args.workers)
        if "sharing" in parts:
            compare_sharing(pool, args.tokens)


if __name__ == "__main__":
    main()
