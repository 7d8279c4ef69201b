"""Memory-bounded K-means over sharded embeddings: fit on a seeded sample, assign in chunks.

faiss K-means on CPU is deterministic for a seed whatever the OpenMP thread count (checked with
1-16 threads: faiss splits the centroid update by centroid, so each sum runs in point order), so
no thread pinning is needed. GPU fits are seeded too but not guaranteed bit-identical.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

UseGpu = Literal["auto", "never"]


def _shard_name(names: Sequence[str] | None, index: int) -> str:
    return names[index] if names is not None else f"array {index}"


def _check_shards(arrays: Sequence[np.ndarray], names: Sequence[str] | None) -> int:
    """Dimension shared by every non-empty shard; raises naming the first shard that differs."""
    if names is not None and len(names) != len(arrays):
        raise ValueError(f"sample_for_fit: {len(names)} names for {len(arrays)} arrays")
    dims = set()
    for index, array in enumerate(arrays):
        if array.ndim != 2:
            name = _shard_name(names, index)
            raise ValueError(f"{name}: expected a 2-D embedding array, got shape {array.shape}")
        dims.add(array.shape[1])
        if len(dims) > 1:
            name = _shard_name(names, index)
            raise ValueError(f"{name}: dimension {array.shape[1]} differs from other shards")
    if not dims:
        raise ValueError("sample_for_fit: no embedding arrays given")
    return dims.pop()


def proportional_quotas(sizes: Sequence[int], total: int) -> np.ndarray:
    """Split `total` across shards by `sizes` (largest remainder, ties -> lower index)."""
    sizes_arr = np.asarray(sizes, dtype=np.int64)
    population = int(sizes_arr.sum())
    if population <= total:
        return sizes_arr.copy()
    exact = sizes_arr * total / population
    quotas = np.floor(exact).astype(np.int64)
    remainder = total - int(quotas.sum())
    order = np.lexsort((np.arange(len(sizes_arr)), -(exact - quotas)))
    quotas[order[:remainder]] += 1
    return quotas


def sample_for_fit(
    arrays: Sequence[np.ndarray],
    sample_size: int,
    seed: int,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """A seeded float32 sample of at most `sample_size` rows drawn across shards in proportion.

    Works on memory-mapped arrays: only the drawn rows are read, in file order. Memory is
    O(sample_size * d) plus, per shard, at most 8 bytes per row for index drawing.
    `names` (e.g. shard keys) only label error messages.
    """
    if sample_size < 1:
        raise ValueError(f"clustering.sample_size must be positive, got {sample_size}")
    dim = _check_shards(arrays, names)
    quotas = proportional_quotas([a.shape[0] for a in arrays], sample_size)
    rng = np.random.default_rng(seed)
    sample = np.empty((int(quotas.sum()), dim), dtype=np.float32)
    filled = 0
    for array, quota in zip(arrays, quotas, strict=True):
        if quota == 0:
            continue
        rows = np.sort(rng.choice(array.shape[0], size=int(quota), replace=False))
        sample[filled : filled + quota] = array[rows]
        filled += int(quota)
    return sample


def _faiss():  # noqa: ANN202 - faiss has no type stubs
    try:
        import faiss
    except ImportError as err:  # faiss is an extra, so a bare `pip install .` lacks it
        raise ImportError(
            'faiss is not installed: pip install -e ".[cpu]" (or ".[gpu]" on a CUDA machine)'
        ) from err
    return faiss


def gpu_available(use_gpu: UseGpu) -> bool:
    """True when GPU faiss is installed, sees a GPU, and use_gpu allows it."""
    faiss = _faiss()
    return use_gpu == "auto" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _as_float32_matrix(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array, got shape {x.shape}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return out


def fit_kmeans(
    x: np.ndarray, k: int, niter: int, seed: int, use_gpu: UseGpu = "auto"
) -> np.ndarray:
    """faiss K-means (Euclidean, not spherical) centroids, float32 of shape (k', d).

    k' = min(k, n): with fewer points than clusters k is reduced and a warning is logged, so
    callers should read the cluster count from the result. Every point of `x` is used (faiss
    would otherwise subsample to 256 points per centroid; the caller's sample is the bound).
    """
    if k < 1 or niter < 1:
        raise ValueError(f"clustering.k and clustering.niter must be positive, got {k}, {niter}")
    points = _as_float32_matrix(x, "fit_kmeans input")
    n, dim = points.shape
    if n == 0:
        raise ValueError("fit_kmeans: no points to fit (is every shard empty?)")
    if n < k:
        log.warning("K-means: only %d points for k=%d clusters; k reduced to %d", n, k, n)
        k = n
    faiss = _faiss()
    kmeans = faiss.Kmeans(
        dim, k, niter=niter, seed=seed, spherical=False, gpu=gpu_available(use_gpu), verbose=False
    )
    kmeans.cp.max_points_per_centroid = max(256, -(-n // k))
    kmeans.cp.min_points_per_centroid = 1  # small samples: faiss only warns, so silence it
    kmeans.train(points)
    return np.asarray(kmeans.centroids, dtype=np.float32).reshape(k, dim)


def _flat_index(centroids: np.ndarray, use_gpu: UseGpu):  # noqa: ANN202 - faiss index
    faiss = _faiss()
    index = faiss.IndexFlatL2(centroids.shape[1])
    if gpu_available(use_gpu):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(centroids)
    return index


def assign(
    x: np.ndarray, centroids: np.ndarray, chunk_size: int, use_gpu: UseGpu = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of `x`, read `chunk_size` rows at a time (memmap is fine).

    Returns (labels int32, distances float32); distances are Euclidean, i.e. the square root of
    faiss's squared L2, so they compare directly with centroid-to-centroid merge distances.
    """
    if chunk_size < 1:
        raise ValueError(f"clustering.assign_chunk_size must be positive, got {chunk_size}")
    centers = _as_float32_matrix(centroids, "centroids")
    if x.ndim != 2 or x.shape[1] != centers.shape[1]:
        raise ValueError(f"assign: embeddings of shape {x.shape} do not match {centers.shape}")
    index = _flat_index(centers, use_gpu)
    labels = np.empty(x.shape[0], dtype=np.int32)
    distances = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], chunk_size):
        chunk = _as_float32_matrix(x[start : start + chunk_size], f"embeddings rows {start}+")
        squared, nearest = index.search(chunk, 1)
        labels[start : start + len(chunk)] = nearest[:, 0]
        distances[start : start + len(chunk)] = np.sqrt(np.maximum(squared[:, 0], 0.0))
    return labels, distances
