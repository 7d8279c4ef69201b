"""The final ClimbMix-style dataset: documents sampled to a token budget by mixture weights.

Each super-cluster s gets `weights[s] * token_budget` tokens. Its documents are taken in a seeded
random order without replacement; when they run out, a new seeded pass repeats them, up to
`repetition_factor` times its available tokens (2.5 = two full passes and half a third). What
the cap cannot supply is reported as a shortfall, never silently moved to other super-clusters.

The dataset streams: sampling sees only the documents' metadata (no text), one super-cluster at
a time (`spill_by_super_cluster`, `sample_super_clusters`); `core.dataset.writer` then writes the
sample with its text, and `core.dataset.checks` checks what was written. Memory follows the batch
size, the largest super-cluster's metadata and the sample, never the corpus's text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

# What sampling reads of each document: no text.
META_COLUMNS: tuple[str, ...] = (
    "doc_id",
    "shard",
    "row",
    "cluster",
    "super_cluster",
    "quality_score",
    "n_tokens",
)
SAMPLED_COLUMNS: tuple[str, ...] = (*META_COLUMNS, "repeat")
# Weights come from a search over the simplex; more drift than this means a wiring mistake.
WEIGHT_SUM_TOLERANCE = 1e-6
_UINT64_MASK = (1 << 64) - 1


class DatasetError(ValueError):
    """Input to the dataset sampler or writer that cannot be used as given."""


@dataclass(frozen=True)
class SuperClusterSample:
    """What one super-cluster was asked for and what it gave."""

    super_cluster: int
    weight: float
    target_tokens: float
    available_tokens: int
    available_docs: int
    realized_tokens: int
    docs: int  # rows in the output, repeats included
    unique_docs: int
    passes: int  # passes started over the super-cluster's documents (1 = no repetition)
    capped: bool  # stopped by the repetition cap before reaching the target
    shortfall_tokens: float  # target - realized when capped, else 0

    @property
    def epochs(self) -> float:
        """Realized tokens over available tokens: how often the data was seen on average."""
        return self.realized_tokens / self.available_tokens if self.available_tokens else 0.0


@dataclass(frozen=True)
class SamplingReport:
    """Per-super-cluster outcome of `sample_dataset`, plus the documents it never considered."""

    token_budget: int
    repetition_factor: float
    seed: int
    super_clusters: list[SuperClusterSample] = field(default_factory=list)
    excluded_docs: int = 0  # docs whose super-cluster is null or has no weight

    @property
    def total_tokens(self) -> int:
        return sum(s.realized_tokens for s in self.super_clusters)

    @property
    def total_docs(self) -> int:
        return sum(s.docs for s in self.super_clusters)

    @property
    def shortfalls(self) -> dict[int, float]:
        """Super-cluster -> tokens the repetition cap kept it from supplying."""
        return {s.super_cluster: s.shortfall_tokens for s in self.super_clusters if s.capped}

    def to_frame(self) -> pl.DataFrame:
        rows = [{**asdict(s), "epochs": s.epochs} for s in self.super_clusters]
        return pl.DataFrame(rows, schema=_REPORT_SCHEMA)

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_budget": self.token_budget,
            "repetition_factor": self.repetition_factor,
            "seed": self.seed,
            "total_tokens": self.total_tokens,
            "total_docs": self.total_docs,
            "excluded_docs": self.excluded_docs,
            "super_clusters": self.to_frame().to_dicts(),
        }


_REPORT_SCHEMA: dict[str, type[pl.DataType]] = {
    "super_cluster": pl.Int64,
    "weight": pl.Float64,
    "target_tokens": pl.Float64,
    "available_tokens": pl.Int64,
    "available_docs": pl.Int64,
    "realized_tokens": pl.Int64,
    "docs": pl.Int64,
    "unique_docs": pl.Int64,
    "passes": pl.Int64,
    "capped": pl.Boolean,
    "shortfall_tokens": pl.Float64,
    "epochs": pl.Float64,
}


# --------------------------------------------------------------------------- validation


def normalize_weights(weights: Mapping[Any, float]) -> dict[int, float]:
    """Integer super-cluster keys (JSON gives strings) and finite non-negative weights summing
    to 1."""
    normalized: dict[int, float] = {}
    for key, value in weights.items():
        try:
            super_cluster = int(key)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"weights: key {key!r} is not a super-cluster id (int)") from err
        weight = float(value)
        if not math.isfinite(weight) or weight < 0:
            raise DatasetError(f"weights[{key!r}] = {value!r}: must be finite and >= 0")
        if super_cluster in normalized:
            raise DatasetError(f"weights: super-cluster {super_cluster} appears twice")
        normalized[super_cluster] = weight
    total = sum(normalized.values())
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise DatasetError(f"weights sum to {total!r}, expected 1 (a mixture on the simplex)")
    return normalized


def _validate_docs(docs: pl.DataFrame) -> None:
    missing = [c for c in META_COLUMNS if c not in docs.columns]
    if missing:
        raise DatasetError(f"docs: missing column(s) {missing}; have {docs.columns}")
    if docs["n_tokens"].null_count():
        raise DatasetError("docs: column 'n_tokens' has null values")
    if not docs["n_tokens"].dtype.is_integer():
        raise DatasetError(f"docs: column 'n_tokens' must be integer, is {docs['n_tokens'].dtype}")
    if docs.height and docs["n_tokens"].min() < 0:  # type: ignore[operator]
        raise DatasetError("docs: column 'n_tokens' has negative values")
    if docs["doc_id"].null_count():
        raise DatasetError("docs: column 'doc_id' has null values")
    if docs["doc_id"].n_unique() != docs.height:
        dupes = docs["doc_id"].filter(docs["doc_id"].is_duplicated()).unique().head(5).to_list()
        raise DatasetError(f"docs: 'doc_id' is not unique, e.g. {dupes}")


def check_corpus_supply(corpus_tokens: int, token_budget: int, repetition_factor: float) -> None:
    """Fail early, naming the settings to change, when the kept corpus cannot fill the budget
    even with every document repeated `repetition_factor` times."""
    supply = corpus_tokens * repetition_factor
    if token_budget > supply:
        raise DatasetError(
            f"dataset.token_budget={token_budget:,} is more than the kept super-clusters can "
            f"supply: {corpus_tokens:,} tokens x dataset.repetition_factor={repetition_factor:g} "
            f"= {supply:,.0f}; lower dataset.token_budget (to at most {int(supply):,}) or raise "
            "dataset.repetition_factor"
        )


def _check_repetition_factor(repetition_factor: float) -> None:
    if not math.isfinite(repetition_factor) or repetition_factor < 1.0:
        raise DatasetError(f"repetition_factor = {repetition_factor!r}: must be >= 1 and finite")


# --------------------------------------------------------------------------- sampling


def _rng(seed: int, *parts: int) -> np.random.Generator:
    """Independent stream per (seed, parts); negative ids are folded into uint64 range."""
    return np.random.default_rng([p & _UINT64_MASK for p in (seed, *parts)])


def _pass_limits(tokens: np.ndarray, taken: int, target: float, pass_cap: float) -> tuple[int, int]:
    """How many of this pass's documents (in order) the target and the cap each allow.

    A document is taken while its midpoint still lands within the target, so a super-cluster
    ends within half a document of it; a pass never exceeds `pass_cap` tokens.
    """
    cumulative = np.cumsum(tokens, dtype=np.int64)
    midpoints = taken + cumulative - tokens / 2.0
    by_target = int(np.searchsorted(midpoints, target, side="right"))
    by_cap = int(np.searchsorted(cumulative, pass_cap, side="right"))
    return by_target, by_cap


def _sample_super_cluster(
    tokens: np.ndarray, target: float, repetition_factor: float, seed: int, super_cluster: int
) -> tuple[list[np.ndarray], bool]:
    """Positions (into `tokens`) taken in each pass, and whether the repetition cap (rather than
    the target) ended the sampling."""
    available = int(tokens.sum())
    taken = 0
    picks: list[np.ndarray] = []
    for pass_index in range(math.ceil(repetition_factor)):
        if taken >= target:
            return picks, False
        pass_cap = available * min(1.0, repetition_factor - pass_index)
        order = _rng(seed, super_cluster, pass_index).permutation(len(tokens))
        by_target, by_cap = _pass_limits(tokens[order], taken, target, pass_cap)
        count = min(by_target, by_cap)
        picks.append(order[:count])
        taken += int(tokens[order[:count]].sum())
        if by_target < len(tokens) and by_target <= by_cap:
            return picks, False  # the target is met (to within half a document)
        if by_cap < by_target:
            return picks, True  # the partial last pass is spent
    return picks, taken < target  # every allowed pass was used in full


@dataclass(frozen=True)
class _Run:
    token_budget: int
    repetition_factor: float
    seed: int


def _candidates(docs: pl.DataFrame, weights: Mapping[int, float]) -> pl.DataFrame:
    """Documents of weighted super-clusters."""
    kept = pl.Series("kept", list(weights), dtype=pl.Int64)
    return docs.select(META_COLUMNS).filter(
        pl.col("super_cluster").cast(pl.Int64).is_in(kept.implode())
    )


def _sample_one(
    group: pl.DataFrame, super_cluster: int, weight: float, run: _Run
) -> tuple[pl.DataFrame, SuperClusterSample]:
    # Sorted so the input row order cannot matter (doc ids are unique corpus-wide).
    group = group.select(META_COLUMNS).sort("doc_id")
    tokens = group["n_tokens"].to_numpy().astype(np.int64)
    target = weight * run.token_budget
    picks, capped = _sample_super_cluster(
        tokens, target, run.repetition_factor, run.seed, super_cluster
    )
    # The pass index is the number of earlier uses: each pass holds a document at most once.
    positions = np.concatenate([np.empty(0, dtype=np.int64), *picks])
    repeats = np.concatenate(
        [np.empty(0, dtype=np.int32), *(np.full(len(p), i, np.int32) for i, p in enumerate(picks))]
    )
    realized = int(tokens[positions].sum())
    sampled = group[positions].with_columns(pl.Series("repeat", repeats, dtype=pl.Int32))
    summary = SuperClusterSample(
        super_cluster=super_cluster,
        weight=weight,
        target_tokens=target,
        available_tokens=int(tokens.sum()),
        available_docs=len(tokens),
        realized_tokens=realized,
        docs=len(positions),
        unique_docs=len(np.unique(positions)),
        passes=len(picks),
        capped=capped,
        shortfall_tokens=max(0.0, target - realized) if capped else 0.0,
    )
    return sampled, summary


def _absent(super_cluster: int, weight: float) -> SuperClusterSample:
    """A zero-weight super-cluster without documents: listed in the report, nothing sampled."""
    return SuperClusterSample(super_cluster, weight, 0.0, 0, 0, 0, 0, 0, 0, False, 0.0)


def sample_dataset(
    docs: pl.DataFrame,
    weights: Mapping[Any, float],
    token_budget: int,
    repetition_factor: float,
    seed: int,
) -> tuple[pl.DataFrame, SamplingReport]:
    """Sample documents so each super-cluster s supplies about `weights[s] * token_budget` tokens.

    `docs` holds the documents' metadata (`META_COLUMNS`; text, if present, is dropped).
    Documents whose super-cluster is null or absent from `weights` are never sampled (counted in
    `report.excluded_docs`). A weighted super-cluster with no documents is an error. Returns the
    sampled rows in output order (`SAMPLED_COLUMNS`, shuffled with `seed`) and a per-super-cluster
    report; `write_dataset` adds their text. `sample_super_clusters` does the same from one
    super-cluster's metadata at a time.
    """
    _validate_docs(docs)
    candidates = _candidates(docs, normalize_weights(weights))
    by_key = candidates.partition_by("super_cluster", as_dict=True)
    sources = {int(key[0]): _loaded(group) for key, group in by_key.items()}
    return sample_super_clusters(
        sources,
        weights,
        token_budget,
        repetition_factor,
        seed,
        excluded_docs=docs.height - candidates.height,
    )


def _loaded(group: pl.DataFrame) -> Callable[[], pl.DataFrame]:
    return lambda: group


def sample_super_clusters(
    sources: Mapping[int, Callable[[], pl.DataFrame]],
    weights: Mapping[Any, float],
    token_budget: int,
    repetition_factor: float,
    seed: int,
    excluded_docs: int = 0,
) -> tuple[pl.DataFrame, SamplingReport]:
    """`sample_dataset` with super-cluster s's metadata given by `sources[s]()` (`META_COLUMNS`,
    any row order; doc ids unique), loaded one super-cluster at a time and only when weighted,
    so memory holds the largest super-cluster's metadata plus the sample, never the corpus's.
    `excluded_docs` is what the caller left out (reported as is)."""
    _check_repetition_factor(repetition_factor)
    if token_budget <= 0:
        raise DatasetError(f"token_budget = {token_budget!r}: must be positive")
    weights = normalize_weights(weights)
    run = _Run(int(token_budget), float(repetition_factor), int(seed))
    empty = sorted(s for s, w in weights.items() if w > 0 and s not in sources)
    if empty:
        raise DatasetError(f"weights give tokens to super-cluster(s) {empty} with no documents")
    parts: list[pl.DataFrame] = []
    summaries: list[SuperClusterSample] = []
    for super_cluster in sorted(weights):
        weight = weights[super_cluster]
        if super_cluster not in sources:
            summaries.append(_absent(super_cluster, weight))
            continue
        group = sources[super_cluster]()
        _validate_group(group, super_cluster)
        sampled, summary = _sample_one(group, super_cluster, weight, run)
        del group  # before the next super-cluster's metadata is loaded
        parts.append(sampled)
        summaries.append(summary)
    report = SamplingReport(
        token_budget=run.token_budget,
        repetition_factor=run.repetition_factor,
        seed=run.seed,
        super_clusters=summaries,
        excluded_docs=excluded_docs,
    )
    return _shuffle(pl.concat(parts), run.seed), report


def _validate_group(group: pl.DataFrame, super_cluster: int) -> None:
    try:
        _validate_docs(group)
    except DatasetError as err:
        raise DatasetError(f"super-cluster {super_cluster}: {err}") from err


def spill_by_super_cluster(batches: Iterable[pl.DataFrame], directory: Path) -> dict[int, Path]:
    """Append the metadata (`META_COLUMNS`) of each batch's documents to one Parquet file per
    super-cluster under `directory` (created; rows without a super-cluster are skipped).
    Returns super-cluster -> file, for `sample_super_clusters` to read one at a time."""
    directory.mkdir(parents=True)
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch in batches:
            rows = batch.select(META_COLUMNS).filter(pl.col("super_cluster").is_not_null())
            for key, part in rows.partition_by("super_cluster", as_dict=True).items():
                table = part.to_arrow()
                super_cluster = int(key[0])
                if super_cluster not in writers:
                    path = directory / f"{super_cluster}.parquet"
                    writers[super_cluster] = pq.ParquetWriter(path, table.schema)
                writers[super_cluster].write_table(table)
    finally:
        for writer in writers.values():
            writer.close()
    return {s: directory / f"{s}.parquet" for s in sorted(writers)}


def _shuffle(sampled: pl.DataFrame, seed: int) -> pl.DataFrame:
    """One seeded permutation of all rows, so every shard mixes every domain."""
    order = _rng(seed, -1).permutation(sampled.height)
    return sampled[order].select(SAMPLED_COLUMNS)
