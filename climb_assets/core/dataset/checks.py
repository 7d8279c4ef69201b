"""Checks of a written dataset against what was asked of it: its token budget, each
super-cluster's share of the tokens against its weight, and membership in the kept super-clusters.
Each returns whether it passed and the details a reader needs to see why.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import polars as pl

from climb_assets.core.dataset.build import normalize_weights


def check_budget(
    df: pl.DataFrame, token_budget: int, tolerance: float
) -> tuple[bool, dict[str, Any]]:
    """Total tokens within `tolerance` (relative) of the budget."""
    total = int(df["n_tokens"].sum()) if df.height else 0
    deviation = abs(total - token_budget) / token_budget
    details = {
        "total_tokens": total,
        "token_budget": int(token_budget),
        "relative_deviation": deviation,
        "tolerance": tolerance,
        "rows": df.height,
    }
    return deviation <= tolerance, details


def realized_shares(df: pl.DataFrame) -> dict[int, float]:
    """Super-cluster -> its share of the dataset's tokens."""
    total = int(df["n_tokens"].sum()) if df.height else 0
    if total == 0:
        return {}
    per = df.group_by("super_cluster").agg(pl.col("n_tokens").sum()).sort("super_cluster")
    return {int(s): int(t) / total for s, t in per.iter_rows() if s is not None}


def check_weights(
    df: pl.DataFrame, weights: Mapping[Any, float], tolerance: float
) -> tuple[bool, dict[str, Any]]:
    """Realized token share per super-cluster vs its weight: max absolute deviation <= tolerance.

    A super-cluster in the data but not in `weights` counts as weight 0.
    """
    wanted = normalize_weights(weights)
    realized = realized_shares(df)
    rows = [
        {
            "super_cluster": s,
            "weight": wanted.get(s, 0.0),
            "realized_share": realized.get(s, 0.0),
            "abs_deviation": abs(realized.get(s, 0.0) - wanted.get(s, 0.0)),
        }
        for s in sorted(set(wanted) | set(realized))
    ]
    worst = max(rows, key=lambda r: r["abs_deviation"], default=None)
    max_deviation = worst["abs_deviation"] if worst else 0.0
    details = {
        "max_abs_deviation": max_deviation,
        "worst_super_cluster": worst["super_cluster"] if worst else None,
        "tolerance": tolerance,
        "per_super_cluster": rows,
    }
    return bool(realized) and max_deviation <= tolerance, details


def check_membership(
    df: pl.DataFrame, kept_super_clusters: Collection[int]
) -> tuple[bool, dict[str, Any]]:
    """Every row belongs to a kept super-cluster (none null, none pruned)."""
    kept = pl.Series("kept", sorted(int(s) for s in kept_super_clusters), dtype=pl.Int64)
    super_cluster = df["super_cluster"].cast(pl.Int64)
    outside = super_cluster.is_not_null() & ~super_cluster.is_in(kept.implode())
    offending = super_cluster.filter(outside).unique().sort().head(20).to_list()
    details = {
        "rows_null_super_cluster": super_cluster.null_count(),
        "rows_outside_kept": int(outside.sum()),
        "offending_super_clusters": offending,
        "kept_super_clusters": kept.to_list(),
    }
    passed = details["rows_null_super_cluster"] == 0 and details["rows_outside_kept"] == 0
    return passed, details
