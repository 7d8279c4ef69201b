"""K-means speed: fit time on a sample and chunked assignment throughput.

Data: N x D float16 unit vectors scattered around 2k random centers (clustered, like sentence
embeddings), memory-mapped from a temporary .npy file as the pipeline stores them.

    PYTHONPATH=. .venv/bin/python benchmarks/kmeans_speed.py --n 200000 --k 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from climb_assets.core.clustering.kmeans import assign, fit_kmeans, gpu_available, sample_for_fit
from climb_assets.core.shared.atomic import write_npy

GENERATE_CHUNK = 50_000


def clustered_vectors(n: int, dim: int, n_centers: int, seed: int) -> np.ndarray:
    """float16 unit vectors around random centers, generated in chunks to bound float64 memory."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_centers, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, GENERATE_CHUNK):
        size = min(GENERATE_CHUNK, n - start)
        x = centers[rng.integers(0, n_centers, size)] + 0.04 * rng.normal(size=(size, dim))
        out[start : start + size] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="vectors")
    parser.add_argument("--k", type=int, default=1000, help="clusters")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--sample-size", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=65_536)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embeddings.npy"
        write_npy(clustered_vectors(args.n, args.dim, 2 * args.k, args.seed), path)
        x = np.load(path, mmap_mode="r")
        print(
            f"N={args.n} d={args.dim} k={args.k} niter={args.niter} "
            f"faiss threads={faiss.omp_get_max_threads()} gpu={gpu_available('auto')}"
        )

        start = time.perf_counter()
        sample = sample_for_fit([x], args.sample_size, args.seed)
        sample_s = time.perf_counter() - start

        start = time.perf_counter()
        centroids = fit_kmeans(sample, args.k, args.niter, args.seed)
        fit_s = time.perf_counter() - start

        start = time.perf_counter()
        labels, distances = assign(x, centroids, args.chunk_size)
        assign_s = time.perf_counter() - start

    print(f"sample {len(sample)} rows   {sample_s:7.2f} s")
    print(
        f"fit                  {fit_s:7.2f} s  ({len(sample) * args.niter / fit_s:,.0f} "
        "point-iterations/s)"
    )
    print(f"assign               {assign_s:7.2f} s  ({args.n / assign_s:,.0f} vectors/s)")
    print(f"clusters used {np.unique(labels).size}/{args.k}, mean distance {distances.mean():.3f}")


if __name__ == "__main__":
    main()
