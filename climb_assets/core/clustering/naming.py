"""Names and numbers as a person reads them: super-clusters by their top terms, floats rounded."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

TERMS_IN_NAME = 3


def super_cluster_name(super_cluster: int, top_terms: Sequence[str] | None) -> str:
    """'3: bible, lord, god' (the id keeps names unique when terms repeat)."""
    terms = ", ".join(list(top_terms or [])[:TERMS_IN_NAME])
    return f"{super_cluster}: {terms}" if terms else str(super_cluster)


def super_cluster_names(rows: Iterable[tuple[int, Sequence[str] | None]]) -> dict[int, str]:
    """Super-cluster id -> name, from (id, top terms) pairs."""
    return {int(i): super_cluster_name(int(i), terms) for i, terms in rows}


def round_for_reading(value: float, digits: int = 4) -> float | None:
    """`digits` significant digits (0.1234, 12.35, 1235.0); None for NaN and infinities, which
    JSON readers such as the Dagster UI reject."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")
