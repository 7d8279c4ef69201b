"""Cluster profiles: each cluster's size, tokens, quality, c-TF-IDF terms and examples.

Profiles stream: `ProfileAccumulator` folds in the corpus a batch at a time, keeping per-cluster
sums, merged (cluster, term) counts and a running top n of example snippets, so its memory
follows the batch size and the vocabulary, never the corpus' text. Slices of the corpus (shards)
accumulated apart, in other processes, merge into the same profiles.

`core.clustering.super_clusters` prunes and merges the profiled clusters into super-clusters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from climb_assets.core.shared.sampling import is_kept, keep_fraction

REQUIRED_DOC_COLUMNS = ("doc_id", "text", "cluster", "n_tokens", "quality_score")
SNIPPET_CHARS = 200
# Letters only (no digits or underscores), at least 3 of them: drops numbers and most markup.
WORD_PATTERN = r"[^\W\d_]{3,}"

# A compact English stop-word list (function words; words under 3 letters never reach it).
_STOP_WORDS_TEXT = """
    about above across after afterwards again against all almost alone along already also although
    always among amongst and another any anyhow anyone anything anyway anywhere are around because
    been before beforehand behind being below beside besides between beyond both but can cannot
    could did does doing done down during each either else elsewhere enough etc even ever every
    everyone everything everywhere except few for former formerly from further had has have having
    her here hereafter hereby herein hers herself him himself his how however into its itself just
    last latter least less many may might mine more moreover most mostly much must myself neither
    never nevertheless next nobody none noone nor not nothing now nowhere off often once one only
    onto other others otherwise our ours ourselves out over own per perhaps please put rather same
    see seem seemed seeming seems several she should since some somehow someone something sometime
    sometimes somewhere still such than that the their theirs them themselves then thence there
    thereafter thereby therefore therein thereupon these they this those though through throughout
    thru thus together too toward towards under until upon very via was were what whatever when
    whence whenever where whereafter whereas whereby wherein whereupon wherever whether which while
    whither who whoever whole whom whose why will with within without would yet you your yours
    yourself yourselves also get got make made say said shall unto thee thou thy thine hath doth
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


def _check_docs(docs: pl.DataFrame, k: int) -> None:
    missing = [c for c in REQUIRED_DOC_COLUMNS if c not in docs.columns]
    if missing:
        raise ValueError(f"cluster_profiles: documents lack column(s) {missing}")
    if docs.height and docs["cluster"].null_count():
        raise ValueError("cluster_profiles: column 'cluster' has nulls")
    if docs.height:
        low, high = docs["cluster"].min(), docs["cluster"].max()
        if low < 0 or high >= k:  # type: ignore[operator]
            raise ValueError(
                f"cluster_profiles: column 'cluster' spans {low}..{high}, not 0..{k - 1}"
            )


def _class_term_counts(docs: pl.DataFrame) -> pl.DataFrame:
    """(cluster, term, count): each cluster's documents as one class document."""
    return (
        docs.select(
            pl.col("cluster"),
            pl.col("text").str.to_lowercase().str.extract_all(WORD_PATTERN).alias("term"),
        )
        .explode("term")
        .drop_nulls("term")
        .filter(~pl.col("term").is_in(list(STOP_WORDS)))
        .group_by("cluster", "term")
        .agg(pl.len().cast(pl.Int64).alias("count"))  # Int64: merged counts may pass 2**32
    )


def _ctfidf(counts: pl.DataFrame, n_terms: int) -> pl.DataFrame:
    """(cluster, top_terms) from (cluster, term, count) with each (cluster, term) once."""
    if counts.height == 0:
        return pl.DataFrame(
            schema={"cluster": counts.schema["cluster"], "top_terms": pl.List(pl.String)}
        )
    mean_words = counts["count"].sum() / counts["cluster"].n_unique()
    return (
        counts.with_columns(
            class_words=pl.col("count").sum().over("cluster"),
            term_total=pl.col("count").sum().over("term"),
        )
        .with_columns(
            score=pl.col("count")
            / pl.col("class_words")
            * (1 + mean_words / pl.col("term_total")).log()
        )
        .sort(["cluster", "score", "term"], descending=[False, True, False])
        .group_by("cluster", maintain_order=True)
        .agg(pl.col("term").head(n_terms).alias("top_terms"))
    )


def top_terms_ctfidf(docs: pl.DataFrame, n_terms: int) -> pl.DataFrame:
    """(cluster, top_terms) by c-TF-IDF (BERTopic's class TF-IDF).

    weight(t, c) = tf(t, c) / |c| * log(1 + A / f(t)), with |c| the words of cluster c, f(t) the
    frequency of t over all clusters and A the mean words per cluster. Ties go to the term that
    sorts first, so the result is deterministic.
    """
    return _ctfidf(_class_term_counts(docs), n_terms)


def snippets(text: pl.Expr, limit: int = SNIPPET_CHARS) -> pl.Expr:
    """Whitespace collapsed, cut to `limit` characters with an ellipsis."""
    flat = text.str.replace_all(r"\s+", " ").str.strip_chars()
    cut = flat.str.slice(0, limit - 1).str.strip_chars_end() + pl.lit("…")
    return pl.when(flat.str.len_chars() <= limit).then(flat).otherwise(cut)


_EXAMPLE_ORDER = ["cluster", "_key", "doc_id"]


@dataclass(frozen=True)
class ProfilePartial:
    """What a `ProfileAccumulator` has folded in, as a plain picklable value: a slice of the
    corpus (a shard) profiled in another process, for the driver to `merge`."""

    stats: pl.DataFrame  # cluster, n_docs, n_tokens, quality_sum, quality_n
    counts: pl.DataFrame  # cluster, term, count
    examples: pl.DataFrame | None  # the running top n: cluster, _key, doc_id, snippet
    by_distance: bool | None  # None: nothing folded in yet

    def save(self, folder: Path) -> None:
        """Written as Parquet files under `folder`, so a driver merging many shards' partials
        reads one at a time instead of holding them all."""
        folder.mkdir(parents=True, exist_ok=True)
        self.stats.write_parquet(folder / "stats.parquet")
        self.counts.write_parquet(folder / "counts.parquet")
        if self.examples is not None:
            self.examples.write_parquet(folder / "examples.parquet")
        (folder / "ranking.json").write_text(json.dumps({"by_distance": self.by_distance}))

    @classmethod
    def load(cls, folder: Path) -> ProfilePartial:
        examples = folder / "examples.parquet"
        return cls(
            stats=pl.read_parquet(folder / "stats.parquet"),
            counts=pl.read_parquet(folder / "counts.parquet"),
            examples=pl.read_parquet(examples) if examples.exists() else None,
            by_distance=json.loads((folder / "ranking.json").read_text())["by_distance"],
        )


def term_sample_fractions(cluster_docs: Mapping[int, int], sample_docs: int) -> dict[int, float]:
    """Per cluster, the share of its documents whose words c-TF-IDF counts, so that about
    `sample_docs` of each count (clustering.term_sample_docs): the term counts then follow k
    times that, not the corpus, and a cluster's top terms come from thousands of its documents,
    plenty to rank its most distinctive words."""
    return {int(c): keep_fraction(n, sample_docs) for c, n in cluster_docs.items()}


class ProfileAccumulator:
    """Cluster profiles built batch by batch: memory follows the batch, k and the distinct
    (cluster, term) pairs, never the corpus; no text is kept beyond k * n_examples snippets.
    With `term_fractions`, a large cluster's words are counted on a seeded sample of its
    documents (`term_sample_fractions`); its sizes, quality and examples still cover them all.

    Every result but mean_quality (a float sum, rounded by batch) is independent of where the
    batches split, and of whether slices of the stream were accumulated apart and merged
    (`partial`, `merge`). Examples are the docs nearest their centroid (smallest `distance`,
    nulls last, ties by doc_id); batches without `distance` rank by a hash of doc_id seeded with
    `seed` instead, and all batches must agree on which.
    """

    def __init__(
        self,
        k: int,
        n_terms: int,
        n_examples: int = 3,
        seed: int = 0,
        term_fractions: Mapping[int, float] | None = None,
    ) -> None:
        self.k, self.n_terms, self.n_examples, self.seed = k, n_terms, n_examples, seed
        # cluster -> share of its documents whose words are counted (`term_sample_fractions`)
        self.term_fractions = {c: f for c, f in (term_fractions or {}).items() if f < 1.0}
        self._by_distance: bool | None = None
        self._stats = pl.DataFrame(
            schema={
                "cluster": pl.Int32,
                "n_docs": pl.Int64,
                "n_tokens": pl.Int64,
                "quality_sum": pl.Float64,
                "quality_n": pl.Int64,
            }
        )
        self._counts = pl.DataFrame(
            schema={"cluster": pl.Int32, "term": pl.String, "count": pl.Int64}
        )
        self._examples: pl.DataFrame | None = None  # doc_id's dtype comes with the first batch

    def add(self, batch: pl.DataFrame) -> None:
        """Fold in one batch of documents (doc_id, text, cluster, n_tokens, quality_score and
        optionally distance); raises before changing anything if the batch is invalid."""
        _check_docs(batch, self.k)
        self._check_ranking("distance" in batch.columns)
        if batch.height == 0:
            return
        self._by_distance = "distance" in batch.columns
        batch = batch.with_columns(pl.col("cluster").cast(pl.Int32))
        counted = _class_term_counts(self._term_sample(batch))
        self._fold(_batch_stats(batch), counted, self._candidates(batch))

    def _term_sample(self, batch: pl.DataFrame) -> pl.DataFrame:
        """The batch's documents whose words are counted: all of a cluster within its sample
        size, else the seeded sample of its documents (the same whatever the batches)."""
        if not self.term_fractions:
            return batch
        fraction = [self.term_fractions.get(c, 1.0) for c in batch["cluster"]]
        keep = [is_kept(d, f, self.seed) for d, f in zip(batch["doc_id"], fraction, strict=True)]
        return batch.filter(pl.Series(keep, dtype=pl.Boolean))

    def partial(self) -> ProfilePartial:
        """Everything folded in so far, to `merge` into another accumulator."""
        return ProfilePartial(self._stats, self._counts, self._examples, self._by_distance)

    def merge(self, partial: ProfilePartial) -> None:
        """Fold in another accumulator's `partial` (of the same k, n_terms, n_examples and
        seed). Partials of consecutive slices of a stream merged in order give one pass over it,
        mean_quality up to float rounding; merged in a fixed order, always the same bytes."""
        if partial.by_distance is None or partial.examples is None:  # an empty slice
            return
        self._check_ranking(partial.by_distance)
        self._by_distance = partial.by_distance
        self._fold(partial.stats, partial.counts, partial.examples)

    def _check_ranking(self, by_distance: bool) -> None:
        if self._by_distance not in (None, by_distance):
            raise ValueError("cluster_profiles: some batches have column 'distance', others not")

    def _fold(self, stats: pl.DataFrame, counts: pl.DataFrame, examples: pl.DataFrame) -> None:
        self._stats = _sum_by([self._stats, stats], ["cluster"], self._stats.columns[1:])
        self._counts = _sum_by([self._counts, counts], ["cluster", "term"])
        held = examples if self._examples is None else pl.concat([self._examples, examples])
        self._examples = _top_n(held, self.n_examples)

    def _candidates(self, batch: pl.DataFrame) -> pl.DataFrame:
        """The batch's own top n examples per cluster, with snippets made for those only."""
        ranked = batch.select("cluster", self._rank_key().alias("_key"), "doc_id", "text")
        return _top_n(ranked, self.n_examples).select(
            "cluster", "_key", "doc_id", snippets(pl.col("text")).alias("snippet")
        )

    def _rank_key(self) -> pl.Expr:
        if self._by_distance:
            return pl.col("distance").cast(pl.Float64)
        return pl.col("doc_id").hash(self.seed)

    def result(self) -> pl.DataFrame:
        """One row per cluster 0..k-1 (empty clusters with n_docs 0, empty lists and null
        mean_quality): cluster (Int32), n_docs, n_tokens (Int64), mean_quality (Float64),
        top_terms, examples (list[str]), sorted by cluster."""
        stats = self._stats.select(
            "cluster",
            "n_docs",
            "n_tokens",
            mean_quality=pl.when(pl.col("quality_n") > 0).then(
                pl.col("quality_sum") / pl.col("quality_n")
            ),
        )
        examples = (
            pl.DataFrame(schema={"cluster": pl.Int32, "snippet": pl.String})
            if self._examples is None
            else self._examples
        )
        examples = examples.group_by("cluster", maintain_order=True).agg(
            pl.col("snippet").alias("examples")
        )
        empty_list = pl.lit([], dtype=pl.List(pl.String))
        return (
            pl.DataFrame({"cluster": pl.Series(range(self.k), dtype=pl.Int32)})
            .join(stats, on="cluster", how="left")
            .join(_ctfidf(self._counts, self.n_terms), on="cluster", how="left")
            .join(examples, on="cluster", how="left")
            .with_columns(
                pl.col("n_docs").fill_null(0),
                pl.col("n_tokens").fill_null(0),
                pl.col("top_terms").fill_null(empty_list),
                pl.col("examples").fill_null(empty_list),
            )
            .sort("cluster")
        )


def _batch_stats(batch: pl.DataFrame) -> pl.DataFrame:
    """Per cluster: documents, tokens, and the sum and count of non-null quality scores (a mean
    of the non-null scores, as polars' mean, once summed over every batch)."""
    quality = pl.col("quality_score").cast(pl.Float64)
    return batch.group_by("cluster").agg(
        n_docs=pl.len().cast(pl.Int64),
        n_tokens=pl.col("n_tokens").sum().cast(pl.Int64),
        quality_sum=quality.sum(),
        quality_n=quality.count().cast(pl.Int64),
    )


def _sum_by(
    frames: list[pl.DataFrame], keys: list[str], values: Sequence[str] = ("count",)
) -> pl.DataFrame:
    """Partial sums merged: one row per key."""
    return pl.concat(frames).group_by(keys).agg(pl.col(v).sum() for v in values)


def _top_n(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    """The first n rows per cluster by (_key nulls last, doc_id), kept sorted."""
    return (
        frame.sort(_EXAMPLE_ORDER, nulls_last=True, maintain_order=True)
        .group_by("cluster", maintain_order=True)
        .head(n)
    )


def cluster_profiles(
    docs: pl.DataFrame,
    centroids: np.ndarray,
    n_terms: int,
    n_examples: int = 3,
    seed: int = 0,
) -> pl.DataFrame:
    """Profiles of documents all in memory: one batch through `ProfileAccumulator`.

    docs needs doc_id, text, cluster, n_tokens, quality_score (and optionally distance to the
    centroid, which makes examples the most central docs); see `ProfileAccumulator.result`.
    """
    accumulator = ProfileAccumulator(int(centroids.shape[0]), n_terms, n_examples, seed)
    # one row order whatever order the caller's joins produced: float sums depend on it
    accumulator.add(docs.sort("doc_id") if "doc_id" in docs.columns else docs)
    return accumulator.result()
