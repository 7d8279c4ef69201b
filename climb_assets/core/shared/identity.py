"""Content identities of the artifacts others are built from, and the checks that a consumer's
inputs still belong together.

A derived artifact records the identity of what it was built from (`SUPER_CLUSTERS_ID` in every
iteration summary and in optimal_mixture.json, `SEARCH_ID` in the evaluation summary and the
dataset card); a consumer compares the recorded identity with the current one. Outputs written
before identities were recorded have none: they are "unknown", warned about, never refused, so
an existing output folder stays usable.

Imports no Dagster: the CLI and the report use it as well as the assets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import polars as pl


class Layout(Protocol):
    """Where the super-clusters and the search result lie (the store's Layout has both; core
    does not import the store)."""

    @property
    def super_clusters(self) -> Path: ...

    @property
    def optimal_mixture(self) -> Path: ...


SUPER_CLUSTERS_ID = "super_clusters_id"
SEARCH_ID = "search_id"
_ID_CHARS = 12  # 48 bits: enough to tell a handful of versions of one folder apart, short to read
RERUN_SEARCH = (
    "rematerialize the search (bootstrap_iteration, every partition in order, then "
    "optimal_mixture), e.g. `climb run`"
)


class StaleInput(RuntimeError):
    """A consumer's inputs were built from different versions of an upstream artifact. A
    RuntimeError, so `climb` prints it as its one-line error."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_ID_CHARS]


def super_clusters_id(path: Path) -> str:
    """The identity of the super-cluster set: a hash of super_clusters.parquet's rows.

    A mixture's weights are indexed by super-cluster number, and this table says what each
    number is: its member clusters (the cluster -> super-cluster mapping of every kept cluster),
    token counts (the search's caps), top terms and examples. So any change to it means a weight
    may now land on something else. The rows are hashed, not the file's bytes: a new polars or
    another compression rewrites the bytes without changing what any number means."""
    frame = pl.read_parquet(path).sort("super_cluster")
    rows = json.dumps(frame.to_dicts(), sort_keys=True, ensure_ascii=False, default=str)
    return _digest(rows)


def search_id(optimal: Mapping[str, Any]) -> str:
    """The identity of a search result: a hash of optimal_mixture.json's content (canonical
    JSON, so indentation or key order do not count). It covers the super-clusters' identity it
    records."""
    return _digest(json.dumps(optimal, sort_keys=True, ensure_ascii=False, default=str))


def current_super_clusters_id(layout: Layout) -> str:
    return super_clusters_id(layout.super_clusters)


def read_optimal(layout: Layout) -> dict[str, Any]:
    return json.loads(layout.optimal_mixture.read_text())


@dataclass(frozen=True)
class Comparison:
    """A recorded identity against the current one; `recorded` None: recorded before ids were."""

    recorded: str | None
    current: str

    @property
    def unknown(self) -> bool:
        return self.recorded is None

    @property
    def stale(self) -> bool:
        return self.recorded is not None and self.recorded != self.current


def compare(record: Mapping[str, Any], key: str, current: str) -> Comparison:
    recorded = record.get(key)
    return Comparison(None if recorded is None else str(recorded), current)


@dataclass(frozen=True)
class Verdict:
    """What a consumer learns from `check_*`: a one-line warning (unknown identities) or
    nothing; a mismatch raises `StaleInput` instead."""

    warning: str | None = None


def check_search(layout: Layout, consumer: str, optimal: Mapping[str, Any]) -> Verdict:
    """Raise StaleInput when `optimal` (optimal_mixture.json) was searched on other
    super-clusters than the current ones; a warning when it records none."""
    found = compare(optimal, SUPER_CLUSTERS_ID, current_super_clusters_id(layout))
    if found.stale:
        raise StaleInput(
            f"{consumer}: optimal_mixture was searched on super-clusters {found.recorded}, but "
            f"the current super-clusters are {found.current}; {RERUN_SEARCH}"
        )
    if found.unknown:
        return Verdict(
            f"{consumer}: optimal_mixture records no super-cluster identity (written by an "
            f"older climb-assets), so it cannot be checked against the current super-clusters "
            f"{found.current}; rerun `climb run` to be sure"
        )
    return Verdict()


def check_iterations(
    consumer: str, summaries: Iterable[tuple[str, Mapping[str, Any]]], current: str
) -> Verdict:
    """Raise StaleInput naming the first iteration (key, summary.json) built on other
    super-clusters than `current`; a warning naming those that record none."""
    unknown = []
    for key, summary in summaries:
        found = compare(summary, SUPER_CLUSTERS_ID, current)
        if found.stale:
            raise StaleInput(
                f"{consumer}: bootstrap_iteration {key} was built on super-clusters "
                f"{found.recorded}, but the current super-clusters are {current}; rematerialize "
                f"bootstrap_iteration from {key} on, every partition in order (e.g. `climb run`)"
            )
        if found.unknown:
            unknown.append(key)
    if unknown:
        return Verdict(
            f"{consumer}: {', '.join(unknown)} record no super-cluster identity (written by an "
            "older climb-assets), so they cannot be checked against the current super-clusters "
            f"{current}; rerun `climb run` to be sure"
        )
    return Verdict()


def search_identity(
    layout: Layout,
    consumer: str,
    warn: Callable[[str], None],
    optimal: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The identities of the search (`optimal`, read from the layout when None) and of the
    super-clusters a consumer of it is built on, to record with what it writes. Raises
    StaleInput when the search was made on other super-clusters than the current ones (weights
    by number would land on other super-clusters); `warn` gets a line when it records none."""
    optimal = read_optimal(layout) if optimal is None else optimal
    if warning := check_search(layout, consumer, optimal).warning:
        warn(warning)
    return {SUPER_CLUSTERS_ID: current_super_clusters_id(layout), SEARCH_ID: search_id(optimal)}
