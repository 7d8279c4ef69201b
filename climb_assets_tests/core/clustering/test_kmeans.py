"""K-means sampling, fitting and assignment with real faiss on small clustered data."""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np
import pytest

from climb_assets.core.clustering.kmeans import (
    assign,
    fit_kmeans,
    proportional_quotas,
    sample_for_fit,
)
from climb_assets.core.shared.atomic import write_npy

DIM = 32


def clustered(n: int, centers: np.ndarray, seed: int, noise: float = 0.05) -> np.ndarray:
    """Unit vectors scattered around `centers` (float16, like stored embeddings)."""
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, len(centers), n)] + noise * rng.normal(size=(n, centers.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


@pytest.fixture(scope="module")
def centers() -> np.ndarray:
    c = np.random.default_rng(0).normal(size=(6, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


@pytest.fixture
def shards(tmp_path: Path, centers: np.ndarray) -> list[np.ndarray]:
    """Three memory-mapped shards of different sizes."""
    arrays = []
    for index, n in enumerate([3000, 1000, 500]):
        path = tmp_path / f"shard{index}.npy"
        write_npy(clustered(n, centers, seed=index + 1), path)
        arrays.append(np.load(path, mmap_mode="r"))
    return arrays


def test_quotas_are_proportional_and_exact() -> None:
    assert proportional_quotas([3000, 1000, 500], 900).tolist() == [600, 200, 100]
    assert proportional_quotas([1, 1, 1], 2).tolist() == [1, 1, 0]  # ties -> lower index
    assert proportional_quotas([5, 0, 7], 100).tolist() == [5, 0, 7]  # all rows when few
    assert proportional_quotas([10, 20, 33], 17).sum() == 17


def test_sample_is_bounded_proportional_and_deterministic(shards: list[np.ndarray]) -> None:
    sample = sample_for_fit(shards, sample_size=900, seed=3)
    assert sample.shape == (900, DIM) and sample.dtype == np.float32
    assert np.array_equal(sample, sample_for_fit(shards, sample_size=900, seed=3))
    assert not np.array_equal(sample, sample_for_fit(shards, sample_size=900, seed=4))
    # rows come from their shard, in the proportions 600/200/100, without repeats
    first = {row.tobytes() for row in np.asarray(shards[0], dtype=np.float32)}
    from_first = sum(row.tobytes() in first for row in sample[:600])
    assert from_first == 600
    assert len({row.tobytes() for row in sample}) == 900


def test_sample_takes_everything_when_corpus_is_small(shards: list[np.ndarray]) -> None:
    sample = sample_for_fit(shards, sample_size=10_000, seed=0)
    expected = np.vstack([np.asarray(s, dtype=np.float32) for s in shards])
    assert np.array_equal(sample, expected)


def test_sample_rejects_mismatched_shards(shards: list[np.ndarray]) -> None:
    bad = np.zeros((10, DIM + 1), dtype=np.float16)
    with pytest.raises(ValueError, match="web/part-2: dimension 33"):
        sample_for_fit([shards[0], bad], 100, 0, names=["web/part-1", "web/part-2"])
    with pytest.raises(ValueError, match="no embedding arrays"):
        sample_for_fit([], 100, 0)


def test_fit_recovers_clusters_and_is_deterministic(shards, centers) -> None:
    sample = sample_for_fit(shards, sample_size=2000, seed=1)
    first = fit_kmeans(sample, k=12, niter=20, seed=7, use_gpu="never")
    second = fit_kmeans(sample, k=12, niter=20, seed=7, use_gpu="never")
    assert first.shape == (12, DIM) and first.dtype == np.float32
    assert np.array_equal(first, second)
    # over-clustered 2x, so no true center is left without a nearby centroid
    nearest = np.linalg.norm(centers[:, None, :] - first[None, :, :], axis=2).min(axis=1)
    assert nearest.max() < 0.2  # a missed center is ~0.5 away


def test_fit_is_identical_across_thread_counts(shards) -> None:
    sample = sample_for_fit(shards, sample_size=2000, seed=1)
    previous = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        single = fit_kmeans(sample, k=12, niter=10, seed=5, use_gpu="never")
        faiss.omp_set_num_threads(4)
        multi = fit_kmeans(sample, k=12, niter=10, seed=5, use_gpu="never")
    finally:
        faiss.omp_set_num_threads(previous)
    assert np.array_equal(single, multi)


def test_fit_reduces_k_to_number_of_points(caplog: pytest.LogCaptureFixture) -> None:
    x = np.random.default_rng(0).normal(size=(5, DIM)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        centroids = fit_kmeans(x, k=48, niter=5, seed=0, use_gpu="never")
    assert centroids.shape == (5, DIM)
    assert "k reduced to 5" in caplog.text


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no points"):
        fit_kmeans(np.zeros((0, DIM), np.float32), k=4, niter=5, seed=0)
    x = np.ones((10, DIM), np.float32)
    x[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_kmeans(x, k=2, niter=5, seed=0)


def test_assign_in_chunks_matches_brute_force(shards, centers) -> None:
    centroids = fit_kmeans(sample_for_fit(shards, 2000, 1), k=6, niter=20, seed=7, use_gpu="never")
    x = shards[0]  # memory-mapped float16
    labels, distances = assign(x, centroids, chunk_size=700, use_gpu="never")
    assert labels.dtype == np.int32 and distances.dtype == np.float32
    assert labels.shape == distances.shape == (x.shape[0],)
    full = np.linalg.norm(np.asarray(x, np.float64)[:, None, :] - centroids[None], axis=2)
    agree = labels == full.argmin(axis=1)
    assert agree.mean() > 0.999  # float32 ties aside
    # Euclidean, not squared: compare with the true distance to the chosen centroid
    np.testing.assert_allclose(distances, full[np.arange(len(x)), labels], atol=1e-3)


def test_assign_handles_empty_and_mismatched_input() -> None:
    centroids = np.eye(3, DIM, dtype=np.float32)
    labels, distances = assign(np.zeros((0, DIM), np.float16), centroids, chunk_size=10)
    assert labels.shape == distances.shape == (0,)
    with pytest.raises(ValueError, match="do not match"):
        assign(np.zeros((4, DIM + 1), np.float16), centroids, chunk_size=10)
