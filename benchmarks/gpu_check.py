"""Every GPU path of the pipeline, run once with figures: encoder, faiss K-means, proxy training,
and several proxies sharing one GPU through Ray's fractional GPUs.

    .venv/bin/python benchmarks/gpu_check.py [--docs 4000] [--points 200000] [--tokens 2000000]

1. CUDA encode: documents/s of the encoder on the GPU (fp16) and the cosine of its vectors to
   the CPU's (fp32) for the same documents.
2. faiss K-means: seconds to fit `--k` centroids on `--points` clustered vectors on the GPU and
   on the CPU, and the share of points both assign to matching clusters (clusters matched one to
   one by their overlap).
3. CUDA proxy training: tokens/s and the share of the GPU's bf16 peak (measured with a large
   matmul; the nominal dense peak beside it when the GPU is known) at the default proxy size and
   at a ~60M-parameter proxy like the paper's smallest.
4. Ray: `--proxies` proxies with `execution.gpus_per_proxy = 1/--proxies` on one GPU against the
   same proxies one after another, and their scores compared.

With no CUDA GPU it says so and exits with status 0; the checks never run in tests or CI.
Install first: pip install -e ".[gpu,ray]" (see README, Running on a cluster).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Dense bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets (no sparsity).
NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
PAPER_SMALLEST = {"d_model": 768, "n_layers": 8, "n_heads": 12, "seq_len": 512, "batch_size": 32}


def say(line: str = "") -> None:
    print(line, flush=True)


def cuda_ready() -> bool:
    import torch

    if not torch.cuda.is_available():
        say("no CUDA GPU visible to torch (torch.cuda.is_available() is False): nothing to check.")
        say(f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}")
        return False
    props = torch.cuda.get_device_properties(0)
    say(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")
    return True


def sample_texts(n: int) -> list[str]:
    import polars as pl

    frames = []
    for path in sorted((PROJECT / "data" / "corpus").iterdir()):
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
        frames.append(frame.select("text"))
    texts = pl.concat(frames)["text"].to_list()
    return (texts * (n // len(texts) + 1))[:n]


def check_encoder(docs: int) -> None:
    import torch

    from climb_assets.core.clustering.embedding import encode
    from climb_assets.core.clustering.encoder import load_encoder
    from climb_assets.settings import EmbeddingSettings

    say("\n1. encoder")
    texts = sample_texts(docs)
    gpu = load_encoder(EmbeddingSettings(device="cuda"))
    encode(gpu, texts[:256], 64)
    torch.cuda.synchronize()
    start = time.perf_counter()
    on_gpu = encode(gpu, texts, 256)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    cpu = load_encoder(EmbeddingSettings(device="cpu", precision="fp32"))
    subset = min(docs, 1000)
    on_cpu = encode(cpu, texts[:subset], 32)
    cosine = np.sum(on_gpu[:subset].astype(np.float32) * on_cpu.astype(np.float32), axis=1)
    say(f"   {docs} docs on {gpu.device} ({gpu.dtype}): {docs / seconds:.0f} docs/s")
    say(
        f"   cosine to CPU fp32 vectors ({subset} docs): min {cosine.min():.5f}, "
        f"mean {cosine.mean():.5f}"
    )


def clustered_points(n: int, dim: int, centers: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, dim)).astype(np.float32)
    labels = rng.integers(0, centers, size=n)
    points = means[labels] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def matched_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of points in clusters matched one to one by overlap (labels are arbitrary)."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((k, k), dtype=np.int64)
    np.add.at(overlap, (a, b), 1)
    rows, cols = linear_sum_assignment(-overlap)
    return float(overlap[rows, cols].sum() / len(a))


def check_kmeans(points: int, k: int) -> None:
    from climb_assets.core.clustering.kmeans import assign, fit_kmeans, gpu_available

    say("\n2. faiss K-means")
    if not gpu_available("auto"):
        say('   faiss sees no GPU (is faiss-gpu installed? pip install -e ".[gpu]"): skipped')
        return
    x = clustered_points(points, 384, k)
    timings, labels = {}, {}
    for use_gpu in ("auto", "never"):
        start = time.perf_counter()
        centroids = fit_kmeans(x, k, 25, seed=1234, use_gpu=use_gpu)  # type: ignore[arg-type]
        timings[use_gpu] = time.perf_counter() - start
        labels[use_gpu] = assign(x, centroids, 65_536, use_gpu="never")[0]
    agreement = matched_agreement(labels["auto"], labels["never"], k)
    say(f"   {points} x 384 points, k={k}, 25 iterations:")
    say(f"   GPU {timings['auto']:.1f} s, CPU {timings['never']:.1f} s")
    say(f"   assignment agreement GPU vs CPU (matched clusters): {agreement:.4f}")


def bf16_peak_tflops() -> float:
    """Best of a few 8192^3 bf16 matmuls: the rate a GEMM-bound model could reach."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    a @ b
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 8192**3 * 10 / best / 1e12


def check_proxy_training(tokens: int, root: Path) -> None:
    import torch
    from proxy_throughput import synthetic_pool

    from climb_assets.core.search.proxy_training import train_proxy
    from climb_assets.settings import ProxySettings

    say("\n3. proxy training on CUDA (bf16 autocast)")
    measured = bf16_peak_tflops()
    name = torch.cuda.get_device_name(0)
    nominal = next((v for key, v in NOMINAL_BF16_TFLOPS.items() if key in name), None)
    peak_line = f"   bf16 matmul peak measured {measured:.0f} TFLOP/s"
    say(peak_line + (f", nominal {nominal:.0f}" if nominal else ""))
    pool = synthetic_pool(ProxySettings().vocab_size, root / "pool", n_tokens=2_000_000)
    for label, shape, budget in (
        ("default proxy", {}, min(tokens, 2_000_000)),
        ("~60M-parameter proxy", PAPER_SMALLEST, tokens),
    ):
        settings = ProxySettings(**shape, tokens_per_proxy=budget)
        train_proxy(pool, {0: 1, 1: 1}, settings.model_copy(update={"tokens_per_proxy": 50_000}), 0)
        run = train_proxy(pool, {0: 1, 1: 1}, settings, seed=0)
        achieved = run.tokens_per_second * run.flops_per_token / 1e12
        share = f"{achieved / measured:.1%} of measured"
        if nominal:
            share += f", {achieved / nominal:.1%} of nominal"
        say(
            f"   {label}: {run.n_parameters / 1e6:.1f}M params, {run.tokens_per_second:,.0f} "
            f"tokens/s, {achieved:.1f} TFLOP/s ({share})"
        )


def check_ray_sharing(proxies: int, tokens: int, root: Path) -> None:
    from climb_assets.core.search.proxy_jobs import ProxyJob, ProxyTrainer
    from climb_assets.core.shared.execution import TaskResources, map_tasks
    from climb_assets.settings import ExecutionSettings, Settings

    say(f"\n4. {proxies} proxies sharing one GPU through Ray (gpus_per_proxy = 1/{proxies})")
    try:
        import ray
    except ImportError:
        say('   ray is not installed (pip install -e ".[ray]"): skipped')
        return
    settings = Settings.model_validate(
        {
            "output_dir": str(root),
            "proxy": {"tokens_per_proxy": tokens, "eval_max_tokens": 20_000},
            "targets": [
                {
                    "name": "held_out_text",
                    "kind": "text",
                    "path": str(PROJECT / "data" / "targets" / "held_out_text.jsonl"),
                }
            ],
        }
    )
    from search_scaling import build_sample_pool

    from climb_assets.core.search.proxy_pool import ProxyPool

    pool = build_sample_pool(root / "sample", settings)
    groups = len(ProxyPool.open(pool).groups)
    rng = np.random.default_rng(0)
    jobs = [ProxyJob(i, tuple(rng.dirichlet(np.ones(groups)).tolist()), 0) for i in range(proxies)]
    share = 1.0 / proxies
    resources = TaskResources(1, share, "execution.cpus_per_proxy", "execution.gpus_per_proxy")
    on_gpu = ExecutionSettings(backend="local")
    start = time.perf_counter()
    one_by_one = map_tasks(
        ProxyTrainer(settings, pool, root / "seq", "seq"), jobs, on_gpu, resources
    )
    sequential = time.perf_counter() - start
    ray.init(num_gpus=1, num_cpus=max(proxies, os.cpu_count() or 1), include_dashboard=False)
    try:
        shared = ExecutionSettings(backend="ray", gpus_per_proxy=share)
        trainer = ProxyTrainer(settings, pool, root / "ray", "ray")
        map_tasks(trainer, jobs[:1], shared, resources)  # workers start, CUDA initializes
        start = time.perf_counter()
        together = map_tasks(
            ProxyTrainer(settings, pool, root / "ray2", "ray2"), jobs, shared, resources
        )
        concurrent = time.perf_counter() - start
    finally:
        ray.shutdown()
    total = proxies * tokens
    differences = [
        abs(a["row"]["objective"] - b["row"]["objective"])
        for a, b in zip(one_by_one, together, strict=True)
    ]
    say(f"   one after another: {sequential:.1f} s ({total / sequential:,.0f} tokens/s in all)")
    say(f"   at once on Ray:    {concurrent:.1f} s ({total / concurrent:,.0f} tokens/s in all)")
    say(f"   worker processes: {len({r['worker']['pid'] for r in together})}")
    say(f"   largest objective difference: {max(differences):.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000, help="documents to encode")
    parser.add_argument("--points", type=int, default=200_000, help="K-means points (dim 384)")
    parser.add_argument("--k", type=int, default=1000, help="K-means clusters")
    parser.add_argument("--tokens", type=int, default=2_000_000, help="tokens per large proxy")
    parser.add_argument("--proxies", type=int, default=4, help="proxies sharing the GPU")
    parser.add_argument("--ray-tokens", type=int, default=500_000, help="tokens per Ray proxy")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not cuda_ready():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        check_encoder(args.docs)
        check_kmeans(args.points, args.k)
        check_proxy_training(args.tokens, Path(tmp))
        check_ray_sharing(args.proxies, args.ray_tokens, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
