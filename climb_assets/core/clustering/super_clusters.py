"""Super-clusters, the units the mixture search weighs: clusters of low quality pruned, the rest
merged by their centroids, and each super-cluster summed up from its clusters' profiles.

CLIMB prunes clusters of low quality and merges clusters whose centroids are close into
super-clusters. Here merging is agglomerative (scipy's hierarchy: ward, complete, average or
single linkage) over the Euclidean distances between kept centroids. Ward is the default and
complete the other non-chaining choice: single (and, less so, average) linkage chains
neighbouring domains into one super-cluster through bridging clusters
(benchmarks/cluster_purity.py measures it on the sample).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

Linkage = Literal["complete", "ward", "average", "single"]
LINKAGES: tuple[Linkage, ...] = ("complete", "ward", "average", "single")


def _prune_reason(
    n_docs: int, mean_quality: float | None, min_quality: float, min_docs: int
) -> str | None:
    """Why a cluster is pruned, or None to keep it. Size first: a tiny cluster's mean is noise."""
    if n_docs < min_docs:
        return f"{n_docs} docs < min {min_docs}"
    if n_docs == 0 or mean_quality is None:
        return "empty cluster"
    if math.isnan(mean_quality):
        return "mean quality is NaN (check the quality scores)"
    if mean_quality < min_quality:
        return f"mean quality {mean_quality:.2f} < {min_quality:.2f}"
    return None


@dataclass(frozen=True)
class Agglomeration:
    groups: list[list[int]]  # indices into the input points, each group sorted
    first_join: np.ndarray  # linkage distance at which each point first merged (NaN: never)


def agglomerate(
    points: np.ndarray,
    merge_distance: float,
    target_groups: int | None = None,
    linkage: Linkage = "ward",
) -> Agglomeration:
    """Agglomerative clustering of `points` with scipy's hierarchy (Euclidean distances).

    Replays scipy's merges, closest first, while their linkage height is strictly below
    merge_distance, or, when target_groups is set, until min(target_groups, m) groups remain
    whatever the height. Heights are the linkage's own: complete = farthest pair, average =
    mean pair, single = closest pair of member points; ward = sqrt(2 * increase of the
    within-group sum of squares) = sqrt(2 n_a n_b / (n_a + n_b)) * |centroid_a - centroid_b|,
    which equals the point distance for two single points and grows with group size.
    """
    if linkage not in LINKAGES:
        raise ValueError(f"clustering.linkage must be one of {LINKAGES}, got {linkage!r}")
    from scipy.cluster import hierarchy  # imported here: only the merge step needs scipy

    m = len(points)
    first_join = np.full(m, np.nan)
    if m < 2:  # scipy needs two observations
        return Agglomeration([[i] for i in range(m)], first_join)
    tree = hierarchy.linkage(np.asarray(points, dtype=np.float64), method=linkage)
    heights = tree[:, 2]
    if target_groups is not None:
        n_merges = m - min(max(target_groups, 1), m)
    else:
        # these four linkages are monotone (no inversions) and scipy lists merges by height,
        # so the merges below the threshold are a prefix of the tree
        below = ~(heights < merge_distance)
        n_merges = int(np.argmax(below)) if below.any() else m - 1
    members: dict[int, list[int]] = {i: [i] for i in range(m)}
    for step in range(n_merges):
        left, right, height = int(tree[step, 0]), int(tree[step, 1]), float(tree[step, 2])
        merged = members.pop(left) + members.pop(right)
        for member in merged:
            if np.isnan(first_join[member]):
                first_join[member] = height
        members[m + step] = merged
    groups = sorted(sorted(g) for g in members.values())
    return Agglomeration(groups, first_join)


def _check_profiles(profiles: pl.DataFrame, centroids: np.ndarray) -> None:
    needed = ("cluster", "n_docs", "n_tokens", "mean_quality")
    missing = [c for c in needed if c not in profiles.columns]
    if missing:
        raise ValueError(f"prune_and_merge: profiles lack column(s) {missing}")
    k = centroids.shape[0]
    if sorted(profiles["cluster"].to_list()) != list(range(k)):
        raise ValueError(
            f"prune_and_merge: profiles must have one row per cluster 0..{k - 1} "
            f"(centroids has {k} rows, profiles {profiles.height})"
        )


def _merge_reason(
    super_id: int, height: float, merge_distance: float, target: int | None, linkage: Linkage
) -> str:
    joined = f"merged into super-cluster {super_id} ({linkage}-linkage distance {height:.2f}"
    if target is not None:
        return f"{joined}, target {target})"
    return f"{joined} < {merge_distance:.2f})"


def prune_and_merge(
    profiles: pl.DataFrame,
    centroids: np.ndarray,
    min_mean_quality: float,
    min_cluster_docs: int,
    merge_distance: float,
    target_super_clusters: int | None = None,
    linkage: Linkage = "ward",
) -> pl.DataFrame:
    """Map every cluster to a super-cluster (or prune it).

    Columns: cluster (Int32), super_cluster (Int32, null when pruned), status ("kept"/"pruned"),
    reason (why pruned or merged; null for a kept cluster alone in its super-cluster).
    Super-cluster ids run 0..S-1 by descending token count, ties by smallest member cluster id.
    """
    _check_profiles(profiles, centroids)
    if target_super_clusters is not None and target_super_clusters < 1:
        raise ValueError(
            f"clustering.target_super_clusters must be >= 1, got {target_super_clusters}"
        )
    rows = profiles.sort("cluster").select("cluster", "n_docs", "n_tokens", "mean_quality")
    reasons: list[str | None] = [
        _prune_reason(n, q, min_mean_quality, min_cluster_docs)
        for n, q in zip(rows["n_docs"], rows["mean_quality"], strict=True)
    ]
    kept = [c for c, r in enumerate(reasons) if r is None]
    if not kept:
        raise ValueError(
            f"every one of {len(reasons)} clusters was pruned: lower clustering.min_mean_quality "
            f"({min_mean_quality}) or clustering.min_cluster_docs ({min_cluster_docs})"
        )
    result = agglomerate(
        np.asarray(centroids)[kept], merge_distance, target_super_clusters, linkage
    )
    tokens = rows["n_tokens"].to_numpy()
    groups = [[kept[i] for i in g] for g in result.groups]
    groups.sort(key=lambda g: (-int(tokens[g].sum()), g[0]))
    super_of: list[int | None] = [None] * len(reasons)
    for super_id, group in enumerate(groups):
        for cluster in group:
            super_of[cluster] = super_id
    for local, cluster in enumerate(kept):
        height = result.first_join[local]
        if not np.isnan(height):
            reasons[cluster] = _merge_reason(
                super_of[cluster], height, merge_distance, target_super_clusters, linkage
            )
    return pl.DataFrame(
        {
            "cluster": pl.Series(range(len(reasons)), dtype=pl.Int32),
            "super_cluster": pl.Series(super_of, dtype=pl.Int32),
            "status": ["pruned" if s is None else "kept" for s in super_of],
            "reason": pl.Series(reasons, dtype=pl.String),
        }
    )


def merge_ranked_terms(
    term_lists: Sequence[list[str]], weights: Sequence[float], n: int
) -> list[str]:
    """Combine ranked term lists: a term scores weight / (rank + 1) per list; ties by term."""
    scores: Counter[str] = Counter()
    for terms, weight in zip(term_lists, weights, strict=True):
        for rank, term in enumerate(terms):
            scores[term] += weight / (rank + 1)
    return [t for t, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def round_robin(lists: Sequence[list[str]], n: int) -> list[str]:
    """First item of each list, then second items, ... up to n items."""
    out: list[str] = []
    for depth in range(max((len(x) for x in lists), default=0)):
        out.extend(x[depth] for x in lists if depth < len(x))
    return out[:n]


def _summary_row(super_id: int, group: pl.DataFrame, n_examples: int) -> dict:
    """One super-cluster's row from its member clusters' profiles (largest first)."""
    n_docs = int(group["n_docs"].sum())
    quality = (group["mean_quality"].fill_null(0.0) * group["n_docs"]).sum()
    n_terms = max(len(t) for t in group["top_terms"].to_list())
    return {
        "super_cluster": super_id,
        "n_clusters": group.height,
        "clusters": sorted(group["cluster"].to_list()),
        "n_docs": n_docs,
        "n_tokens": int(group["n_tokens"].sum()),
        "mean_quality": quality / n_docs if n_docs else None,
        "top_terms": merge_ranked_terms(
            group["top_terms"].to_list(),
            group["n_tokens"].cast(pl.Float64).to_list(),
            n_terms,
        ),
        "examples": round_robin(group["examples"].to_list(), n_examples),
    }


def super_cluster_summary(
    profiles: pl.DataFrame, mapping: pl.DataFrame, n_examples: int = 3
) -> pl.DataFrame:
    """One row per super-cluster: super_cluster, n_clusters, clusters, n_docs, n_tokens,
    token_share (of kept tokens), mean_quality (doc-weighted), top_terms, examples."""
    members = (
        profiles.join(mapping.select("cluster", "super_cluster"), on="cluster", how="inner")
        .filter(pl.col("super_cluster").is_not_null())
        .sort(["super_cluster", "n_tokens", "cluster"], descending=[False, True, False])
    )
    if members.height == 0:
        raise ValueError("super_cluster_summary: no kept cluster in the mapping")
    rows = [
        _summary_row(super_id, group, n_examples)
        for (super_id,), group in members.group_by("super_cluster", maintain_order=True)
    ]
    summary = pl.DataFrame(
        rows,
        schema={
            "super_cluster": pl.Int32,
            "n_clusters": pl.Int64,
            "clusters": pl.List(pl.Int32),
            "n_docs": pl.Int64,
            "n_tokens": pl.Int64,
            "mean_quality": pl.Float64,
            "top_terms": pl.List(pl.String),
            "examples": pl.List(pl.String),
        },
    )
    total = summary["n_tokens"].sum()
    share = pl.col("n_tokens") / total if total else pl.lit(1.0) / summary.height
    return summary.with_columns(token_share=share).select(
        "super_cluster",
        "n_clusters",
        "clusters",
        "n_docs",
        "n_tokens",
        "token_share",
        "mean_quality",
        "top_terms",
        "examples",
    )
