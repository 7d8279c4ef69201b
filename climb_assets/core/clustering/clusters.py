"""Cluster profiles (size, tokens, quality, c-TF-IDF terms, examples) and super-clusters.

Profiles stream: `ProfileAccumulator` folds in the corpus a batch at a time, keeping per-cluster
sums, merged (cluster, term) counts and a running top n of example snippets, so its memory
follows the batch size and the vocabulary, never the corpus' text. Slices of the corpus (shards)
accumulated apart, in other processes, merge into the same profiles.

CLIMB prunes clusters of low quality and merges clusters whose centroids are close into
super-clusters, the units the mixture search weighs. Here merging is agglomerative (scipy's
hierarchy: ward, complete, average or single linkage) over the Euclidean distances between kept
centroids. Ward is the default and complete the other non-chaining choice: single (and, less
so, average) linkage chains neighbouring domains into one super-cluster through bridging
clusters (benchmarks/cluster_purity.py measures it on the sample).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from climb_assets.core.shared.sampling import is_kept, keep_fraction

Linkage = Literal["complete", "ward", "average", "single"]
LINKAGES: tuple[Linkage, ...] = ("complete", "ward", "average", "single")

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


# ---------------------------------------------------------------------------------------------
# Pruning and merging
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Super-cluster summary
# ---------------------------------------------------------------------------------------------


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
    rows = []
    for (super_id,), group in members.group_by("super_cluster", maintain_order=True):
        n_docs = int(group["n_docs"].sum())
        quality = (group["mean_quality"].fill_null(0.0) * group["n_docs"]).sum()
        n_terms = max(len(t) for t in group["top_terms"].to_list())
        rows.append(
            {
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
        )
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
