"""Cluster profiles, pruning/merging into super-clusters, summaries and the metadata plots."""

from __future__ import annotations

import base64
import itertools
import re
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from climb_assets.core.clustering.clusters import (
    ProfileAccumulator,
    ProfilePartial,
    cluster_profiles,
    term_sample_fractions,
    top_terms_ctfidf,
)
from climb_assets.core.clustering.super_clusters import (
    agglomerate,
    prune_and_merge,
    super_cluster_summary,
)
from climb_assets.core.shared.plots import (
    bar_chart,
    histogram,
    line_chart,
    loss_curves,
    pca_2d,
    png_markdown,
    scatter_2d,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CAT_TEXTS = [
    "The cat chased the mouse around the kitchen.",
    "My cat sleeps all day; cats love warm blankets.",
    "A cat and a kitten shared the milk.",
    "The kitten purred while the cat watched the birds.",
]
BANK_TEXTS = [
    "The bank raised interest rates again this quarter.",
    "Interest on the loan depends on the bank and the rates.",
    "Markets fell after the bank announced higher rates.",
]
CODE_TEXTS = ["import numpy as np; the array function returns values.", "def parse(): return 42"]


def make_docs() -> pl.DataFrame:
    texts = CAT_TEXTS + BANK_TEXTS + CODE_TEXTS
    clusters = [0] * 4 + [1] * 3 + [3] * 2  # cluster 2 stays empty
    return pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(len(texts))],
            "text": texts,
            "cluster": clusters,
            "n_tokens": [10, 12, 9, 11, 10, 12, 11, 300, 5],
            "quality_score": [0.8, 0.6, 0.7, 0.9, 0.5, 0.4, 0.3, 0.1, 0.2],
        }
    )


CENTROIDS4 = np.eye(4, 8, dtype=np.float32)


# --------------------------------------------------------------------------- profiles


def test_profiles_cover_every_cluster_with_correct_stats() -> None:
    profiles = cluster_profiles(make_docs(), CENTROIDS4, n_terms=5, seed=0)
    assert profiles["cluster"].to_list() == [0, 1, 2, 3]
    assert profiles["n_docs"].to_list() == [4, 3, 0, 2]
    assert profiles["n_tokens"].to_list() == [42, 33, 0, 305]
    assert profiles["mean_quality"].to_list()[:2] == pytest.approx([0.75, 0.4])
    assert profiles["mean_quality"][2] is None
    assert profiles.row(2, named=True)["top_terms"] == []
    assert profiles.row(2, named=True)["examples"] == []
    assert profiles.schema["cluster"] == pl.Int32


def test_profiles_do_not_depend_on_the_order_of_the_documents() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    docs = pl.DataFrame(
        {
            "doc_id": [f"d{i:05d}" for i in range(n)],
            "text": [f"word{i % 50} other{i % 7} text" for i in range(n)],
            "cluster": rng.integers(0, 4, n),
            "n_tokens": rng.integers(1, 100, n),
            "quality_score": rng.random(n),
        }
    )
    shuffled = docs.sample(fraction=1.0, shuffle=True, seed=1)
    first = cluster_profiles(docs, CENTROIDS4, n_terms=3, seed=0)
    assert first.equals(cluster_profiles(shuffled, CENTROIDS4, n_terms=3, seed=0))


def test_top_terms_are_distinctive_lowercase_words_without_stop_words() -> None:
    profiles = cluster_profiles(make_docs(), CENTROIDS4, n_terms=3, seed=0)
    cat_terms, bank_terms = profiles["top_terms"][0].to_list(), profiles["top_terms"][1].to_list()
    assert cat_terms[0] == "cat" and "kitten" in cat_terms
    assert set(bank_terms) == {"bank", "rates", "interest"}
    every_term = {t for terms in profiles["top_terms"].to_list() for t in terms}
    assert every_term.isdisjoint({"the", "and", "all", "np", "42"})
    assert all(len(t) >= 3 and t == t.lower() for t in every_term)


def test_ctfidf_ranks_shared_words_below_distinctive_ones() -> None:
    docs = pl.DataFrame(
        {
            "cluster": [0, 0, 1, 1],
            "text": ["river river water", "river water", "desert water sand", "sand water"],
        }
    )
    terms = dict(top_terms_ctfidf(docs, 2).iter_rows())
    assert terms == {0: ["river", "water"], 1: ["sand", "desert"]}


def test_examples_are_central_docs_when_distance_is_known() -> None:
    docs = make_docs().with_columns(distance=pl.Series([0.9, 0.1, 0.5, 0.2, 0.3, 0.2, 0.1, 0, 1]))
    examples = cluster_profiles(docs, CENTROIDS4, n_terms=3, n_examples=2)["examples"]
    assert examples[0].to_list() == [CAT_TEXTS[1], CAT_TEXTS[3]]
    assert examples[1].to_list() == [BANK_TEXTS[2], BANK_TEXTS[1]]


def test_seeded_examples_are_reproducible_and_short() -> None:
    long_doc = "word " * 500
    docs = make_docs().with_columns(
        text=pl.when(pl.col("doc_id") == "d0").then(pl.lit(long_doc)).otherwise(pl.col("text"))
    )
    first = cluster_profiles(docs, CENTROIDS4, n_terms=3, seed=11)["examples"].to_list()
    assert first == cluster_profiles(docs, CENTROIDS4, n_terms=3, seed=11)["examples"].to_list()
    assert [len(e) for e in first] == [3, 3, 0, 2]
    assert all(len(snippet) <= 200 for ex in first for snippet in ex)
    picks = {tuple(cluster_profiles(docs, CENTROIDS4, 3, seed=s)["examples"][0]) for s in range(8)}
    assert len(picks) > 1  # the seed matters


def test_profiles_reject_bad_documents() -> None:
    with pytest.raises(ValueError, match=r"lack column\(s\) \['quality_score'\]"):
        cluster_profiles(make_docs().drop("quality_score"), CENTROIDS4, 3)
    with pytest.raises(ValueError, match="spans 0..3, not 0..2"):
        cluster_profiles(make_docs(), CENTROIDS4[:3], 3)


def streaming_docs(n: int, with_distance: bool) -> pl.DataFrame:
    """n documents over 5 clusters (cluster 4 empty), a small vocabulary so that term scores
    tie, distances with ties, and a few null quality scores."""
    rng = np.random.default_rng(3)
    vocab = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "theta"]
    docs = pl.DataFrame(
        {
            "doc_id": [f"d{i:04d}" for i in rng.permutation(n)],
            "text": [" ".join(rng.choice(vocab, 4)) + " 42 the" for _ in range(n)],
            "cluster": rng.integers(0, 4, n),
            "n_tokens": rng.integers(1, 100, n),
            "quality_score": [
                None if i % 11 == 0 else float(q) for i, q in enumerate(rng.random(n))
            ],
        }
    )
    if with_distance:
        docs = docs.with_columns(distance=pl.Series(rng.integers(0, 4, n) / 4))
    return docs


def stream(docs: pl.DataFrame, rows: int, n_examples: int = 3) -> pl.DataFrame:
    accumulator = ProfileAccumulator(5, 3, n_examples, seed=2)
    for batch in docs.iter_slices(rows):
        accumulator.add(batch)
    return accumulator.result()


@pytest.mark.parametrize("with_distance", [True, False])
def test_streamed_profiles_do_not_depend_on_the_batches(with_distance: bool) -> None:
    docs = streaming_docs(60, with_distance)
    whole = cluster_profiles(docs, np.eye(5, 3), n_terms=3, seed=2)
    assert whole["n_docs"].to_list()[4] == 0 and whole["examples"].list.len().max() == 3
    for rows in (1, 3, 7):
        streamed = stream(docs, rows)
        assert streamed.drop("mean_quality").equals(whole.drop("mean_quality"))
        assert streamed.schema == whole.schema
        assert streamed["mean_quality"].to_list() == pytest.approx(
            whole["mean_quality"].to_list(), abs=1e-12
        )


def test_streamed_examples_are_the_most_central_ties_by_doc_id() -> None:
    docs = streaming_docs(60, with_distance=True)
    nearest = (
        docs.sort("cluster", "distance", "doc_id")
        .group_by("cluster", maintain_order=True)
        .head(3)
        .group_by("cluster", maintain_order=True)
        .agg("text")
    )
    examples = stream(docs, 7)["examples"].to_list()
    for cluster, texts in nearest.iter_rows():
        assert examples[cluster] == texts


def test_accumulator_keeps_no_text_beyond_its_snippets() -> None:
    rng = np.random.default_rng(0)
    vocab = ["alpha", "beta", "gamma", "delta", "omega"]
    accumulator = ProfileAccumulator(4, 3, n_examples=2)
    for step in range(200):
        accumulator.add(
            pl.DataFrame(
                {
                    "doc_id": [f"b{step}-{i}" for i in range(5)],
                    "text": [" ".join(rng.choice(vocab, 300)) for _ in range(5)],
                    "cluster": rng.integers(0, 4, 5),
                    "n_tokens": [300] * 5,
                    "quality_score": rng.random(5),
                    "distance": rng.random(5),
                }
            )
        )
    held = [v for v in vars(accumulator).values() if isinstance(v, pl.DataFrame)]
    assert all("text" not in frame.columns for frame in held)
    assert accumulator._examples is not None and accumulator._examples.height <= 4 * 2
    assert all(len(s) <= 200 for s in accumulator._examples["snippet"])
    assert accumulator._counts.height <= 4 * len(vocab)  # merged, not one row per batch
    assert accumulator.result()["n_docs"].sum() == 1000


def profiled_apart(docs: pl.DataFrame, cuts: list[int], rows: int) -> ProfileAccumulator:
    """The slices docs[cuts[i]:cuts[i + 1]] each streamed into its own accumulator (`rows` a
    batch), their partials saved to files (as a shard's task does) and merged in order."""
    merged = ProfileAccumulator(5, 3, seed=2)
    with tempfile.TemporaryDirectory() as work:
        for index, (start, end) in enumerate(itertools.pairwise(cuts)):
            apart = ProfileAccumulator(5, 3, seed=2)
            for batch in docs[start:end].iter_slices(rows):
                apart.add(batch)
            apart.partial().save(Path(work) / str(index))
            merged.merge(ProfilePartial.load(Path(work) / str(index)))
    return merged


@pytest.mark.parametrize("with_distance", [True, False])
def test_partials_merged_in_order_equal_one_pass(with_distance: bool) -> None:
    docs = streaming_docs(60, with_distance)
    whole = stream(docs, 7)
    for cuts in ([0, 60], [0, 13, 13, 41, 60], list(range(0, 61, 4))):  # 13:13: an empty slice
        merged = profiled_apart(docs, cuts, rows=5).result()
        assert merged.drop("mean_quality").equals(whole.drop("mean_quality"))
        assert merged.schema == whole.schema
        assert merged["mean_quality"].to_list() == pytest.approx(
            whole["mean_quality"].to_list(), abs=1e-12
        )
    # the same partials merged in the same order: the same bytes, whoever computed them
    again = profiled_apart(docs, [0, 13, 41, 60], rows=5).result()
    assert again.equals(profiled_apart(docs, [0, 13, 41, 60], rows=5).result())


def test_merging_partials_ranked_differently_is_refused() -> None:
    by_distance, by_hash = ProfileAccumulator(5, 3), ProfileAccumulator(5, 3)
    by_distance.add(streaming_docs(20, with_distance=True))
    by_hash.add(streaming_docs(20, with_distance=False))
    with pytest.raises(ValueError, match="some batches have column 'distance'"):
        by_distance.merge(by_hash.partial())
    by_distance.merge(ProfileAccumulator(5, 3).partial())  # an empty slice changes nothing
    assert by_distance.result()["n_docs"].sum() == 20


def test_accumulator_rejects_bad_batches() -> None:
    docs = streaming_docs(20, with_distance=True)
    accumulator = ProfileAccumulator(5, 3)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['n_tokens'\]"):
        accumulator.add(docs.drop("n_tokens"))
    with pytest.raises(ValueError, match="'cluster' has nulls"):
        accumulator.add(docs.with_columns(cluster=pl.lit(None, dtype=pl.Int64)))
    with pytest.raises(ValueError, match=r"spans -1\.\.\d, not 0\.\.4"):
        accumulator.add(docs.with_columns(cluster=pl.col("cluster") - 1))
    accumulator.add(docs)
    with pytest.raises(ValueError, match="some batches have column 'distance'"):
        accumulator.add(docs.drop("distance"))
    assert accumulator.result()["n_docs"].sum() == 20  # the rejected batches left no trace


# --------------------------------------------------------------------------- merging


def grouped_centroids() -> tuple[np.ndarray, list[set[int]]]:
    """9 centroids in 3 tight, well separated groups (interleaved ids)."""
    rng = np.random.default_rng(4)
    anchors = 3.0 * np.eye(3, 16)
    labels = [0, 1, 2, 0, 1, 2, 0, 1, 2]
    points = anchors[labels] + 0.05 * rng.normal(size=(9, 16))
    groups = [{i for i, g in enumerate(labels) if g == group} for group in range(3)]
    return points.astype(np.float32), groups


def profiles_for(n: int, tokens: list[int], quality: list[float | None], docs: list[int]):
    return pl.DataFrame(
        {
            "cluster": pl.Series(range(n), dtype=pl.Int32),
            "n_docs": docs,
            "n_tokens": tokens,
            "mean_quality": pl.Series(quality, dtype=pl.Float64),
        }
    )


def test_threshold_merge_finds_the_groups_and_numbers_by_tokens() -> None:
    centroids, groups = grouped_centroids()
    tokens = [10, 1, 500, 10, 1, 500, 10, 1, 500]  # group {2,5,8} biggest, {1,4,7} smallest
    profiles = profiles_for(9, tokens, [0.9] * 9, [5] * 9)
    mapping = prune_and_merge(profiles, centroids, 0.35, 3, merge_distance=1.0)
    found = {s: set(mapping.filter(pl.col("super_cluster") == s)["cluster"]) for s in range(3)}
    assert found == {0: groups[2], 1: groups[0], 2: groups[1]}
    assert mapping["status"].unique().to_list() == ["kept"]
    assert mapping["reason"][2].startswith("merged into super-cluster 0 (ward-linkage distance 0.")
    assert mapping["reason"][2].endswith("< 1.00)")


def test_pruning_reasons_and_ties_broken_by_smallest_cluster() -> None:
    centroids, _ = grouped_centroids()
    quality = [0.2, 0.9, 0.9, 0.9, None, 0.9, float("nan"), 0.9, 0.9]
    docs = [5, 5, 2, 5, 0, 5, 5, 5, 5]
    profiles = profiles_for(9, [7] * 9, quality, docs)
    mapping = prune_and_merge(profiles, centroids, 0.35, 3, merge_distance=0.01)  # no merging
    reasons = mapping["reason"].to_list()
    assert reasons[0] == "mean quality 0.20 < 0.35"
    assert reasons[2] == "2 docs < min 3"
    assert reasons[4] == "0 docs < min 3"
    assert reasons[6].startswith("mean quality is NaN")
    assert mapping.filter(pl.col("status") == "pruned")["cluster"].to_list() == [0, 2, 4, 6]
    kept = mapping.filter(pl.col("status") == "kept")
    assert kept["super_cluster"].to_list() == list(range(5))  # equal tokens: by cluster id
    assert kept["reason"].null_count() == 5
    assert mapping.filter(pl.col("status") == "pruned")["super_cluster"].null_count() == 4


def test_target_count_overrides_distance() -> None:
    centroids, groups = grouped_centroids()
    profiles = profiles_for(9, [10] * 9, [0.9] * 9, [5] * 9)
    for target in (1, 2, 3, 5, 20):
        mapping = prune_and_merge(profiles, centroids, 0.35, 3, 0.0, target_super_clusters=target)
        ids = mapping["super_cluster"]
        assert ids.n_unique() == min(target, 9)
        assert sorted(ids.unique().to_list()) == list(range(min(target, 9)))
    mapping = prune_and_merge(profiles, centroids, 0.35, 3, 0.0, target_super_clusters=3)
    assert {frozenset(g["cluster"]) for _, g in mapping.group_by("super_cluster")} == {
        frozenset(g) for g in groups
    }
    assert "target 3" in mapping["reason"][0]


def test_every_cluster_pruned_is_an_error() -> None:
    centroids, _ = grouped_centroids()
    profiles = profiles_for(9, [10] * 9, [0.1] * 9, [5] * 9)
    with pytest.raises(ValueError, match="min_mean_quality"):
        prune_and_merge(profiles, centroids, 0.35, 3, 1.0)


def test_profiles_must_match_centroids() -> None:
    centroids, _ = grouped_centroids()
    with pytest.raises(ValueError, match="one row per cluster 0..8"):
        prune_and_merge(profiles_for(3, [1] * 3, [1.0] * 3, [5] * 3), centroids, 0.3, 1, 1.0)


def planted_chain() -> tuple[np.ndarray, set[int], set[int]]:
    """Two tight, well separated groups (x near 0 and near 10) bridged by a chain of points
    spaced 1 apart: every gap along the line is at most 1, the groups are 10 apart."""
    rng = np.random.default_rng(7)
    left = np.c_[0.05 * rng.normal(size=5), 0.05 * rng.normal(size=5)]
    right = left + [10.0, 0.0]
    bridge = np.c_[np.arange(1.0, 10.0), np.zeros(9)]
    points = np.vstack([left, bridge, right])
    return points, set(range(5)), set(range(14, 19))


@pytest.mark.parametrize("linkage", ["complete", "ward", "average", "single"])
def test_every_linkage_matches_scipy_fcluster(linkage: str) -> None:
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    points = np.random.default_rng(1).normal(size=(40, 6))
    tree = hierarchy.linkage(points, linkage)
    heights = tree[:, 2]
    for step in (5, 20, 32, 38):
        # midway between merge heights: fcluster cuts at <= threshold, ours at <, so no tie
        threshold = float(heights[step - 1] + heights[step]) / 2
        ours = agglomerate(points, threshold, linkage=linkage).groups  # type: ignore[arg-type]
        labels = hierarchy.fcluster(tree, threshold, "distance")
        theirs = {frozenset(np.flatnonzero(labels == label)) for label in set(labels)}
        assert {frozenset(g) for g in ours} == theirs
        assert len(ours) == 40 - step


def test_single_linkage_chains_the_bridge_where_complete_and_ward_do_not() -> None:
    points, left, right = planted_chain()
    single = agglomerate(points, merge_distance=1.5, linkage="single")
    assert single.groups == [list(range(len(points)))]  # chained into one super-cluster
    for linkage in ("complete", "ward"):
        groups = agglomerate(points, merge_distance=1.5, linkage=linkage).groups  # type: ignore[arg-type]
        assert sorted(i for g in groups for i in g) == list(range(len(points)))
        assert not any(left & set(g) and right & set(g) for g in groups), linkage
        assert any(left <= set(g) for g in groups) and any(right <= set(g) for g in groups)


def test_target_two_splits_the_chain_between_the_groups() -> None:
    points, left, right = planted_chain()
    for linkage in ("complete", "ward"):
        groups = agglomerate(points, 0.0, target_groups=2, linkage=linkage).groups  # type: ignore[arg-type]
        assert len(groups) == 2
        assert {frozenset(left & set(g)) for g in groups} == {frozenset(left), frozenset()}
        assert not any(left & set(g) and right & set(g) for g in groups), linkage


@pytest.mark.parametrize("linkage", ["complete", "ward", "average", "single"])
def test_threshold_is_strict(linkage: str) -> None:
    pair = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])  # exactly 1 apart, then far
    at = agglomerate(pair, merge_distance=1.0, linkage=linkage)  # type: ignore[arg-type]
    assert at.groups == [[0], [1], [2]]
    assert np.isnan(at.first_join).all()
    above = agglomerate(pair, merge_distance=1.0 + 1e-9, linkage=linkage)  # type: ignore[arg-type]
    assert above.groups == [[0, 1], [2]]
    assert above.first_join[:2] == pytest.approx([1.0, 1.0]) and np.isnan(above.first_join[2])


def test_ward_heights_grow_with_group_size() -> None:
    # a third point at distance 1 from the centroid of a merged pair: sqrt(2 * 2 * 1 / 3) * 1
    points = np.array([[-0.05, 0.0], [0.05, 0.0], [0.0, 1.0]])
    assert agglomerate(points, 1.05, linkage="ward").groups == [[0, 1], [2]]
    assert agglomerate(points, 1.17, linkage="ward").groups == [[0, 1, 2]]
    assert agglomerate(points, 1.05, linkage="complete").groups == [[0, 1, 2]]


def test_target_count_is_exact_for_every_linkage() -> None:
    points = np.random.default_rng(3).normal(size=(25, 4))
    for linkage in ("complete", "ward", "average", "single"):
        for target in (1, 4, 7, 25, 40):
            groups = agglomerate(points, 0.0, target_groups=target, linkage=linkage).groups  # type: ignore[arg-type]
            assert len(groups) == min(target, 25)
            assert sorted(i for g in groups for i in g) == list(range(25))


def test_tiny_inputs_and_bad_linkage() -> None:
    assert agglomerate(np.zeros((0, 3)), 1.0).groups == []
    assert agglomerate(np.zeros((1, 3)), 1.0, target_groups=1).groups == [[0]]
    with pytest.raises(ValueError, match="clustering.linkage must be one of"):
        agglomerate(np.zeros((3, 2)), 1.0, linkage="centroid")  # type: ignore[arg-type]


def test_merge_is_deterministic() -> None:
    centroids = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
    profiles = profiles_for(30, list(range(30)), [0.9] * 30, [5] * 30)
    first = prune_and_merge(profiles, centroids, 0.35, 3, merge_distance=4.5)
    assert first.equals(prune_and_merge(profiles, centroids, 0.35, 3, merge_distance=4.5))
    assert 1 < first["super_cluster"].n_unique() < 30


def test_super_cluster_ids_are_stable_under_input_order() -> None:
    """Ids by descending tokens, then smallest member; relabelled input, same partition."""
    centroids = np.random.default_rng(5).normal(size=(20, 6))
    profiles = profiles_for(20, [10] * 20, [0.9] * 20, [5] * 20)
    mapping = prune_and_merge(profiles, centroids, 0.35, 3, merge_distance=4.0)
    groups = [
        g["cluster"].to_list()
        for _, g in mapping.sort("super_cluster").group_by("super_cluster", maintain_order=True)
    ]
    assert 2 < len(groups) < 20
    assert groups == sorted(groups, key=lambda g: (-10 * len(g), min(g)))
    order = np.random.default_rng(6).permutation(20)
    shuffled = prune_and_merge(profiles, centroids[order], 0.35, 3, merge_distance=4.0)
    partition = {frozenset(g["cluster"]) for _, g in mapping.group_by("super_cluster")}
    relabelled = {
        frozenset(int(order[c]) for c in g["cluster"])
        for _, g in shuffled.group_by("super_cluster")
    }
    assert relabelled == partition


def test_prune_and_merge_keeps_the_planted_groups_apart_by_default() -> None:
    points, left, right = planted_chain()
    n = len(points)
    profiles = profiles_for(n, [10] * n, [0.9] * n, [5] * n)
    mapping = prune_and_merge(profiles, points, 0.35, 3, merge_distance=1.5)
    left_ids = set(mapping.filter(pl.col("cluster").is_in(list(left)))["super_cluster"])
    right_ids = set(mapping.filter(pl.col("cluster").is_in(list(right)))["super_cluster"])
    assert len(left_ids) == 1 and left_ids.isdisjoint(right_ids)
    chained = prune_and_merge(profiles, points, 0.35, 3, 1.5, linkage="single")
    assert chained["super_cluster"].n_unique() == 1
    reasons = chained["reason"].to_list()
    assert all(
        re.fullmatch(r"merged into super-cluster 0 \(single-linkage distance \d\.\d\d < 1\.50\)", r)
        for r in reasons
    )


# --------------------------------------------------------------------------- summary


def test_super_cluster_summary() -> None:
    docs = make_docs()
    profiles = cluster_profiles(docs, CENTROIDS4, n_terms=4, seed=0)
    centroids = np.array([[0, 0], [0.1, 0], [5, 5], [9, 9]], dtype=np.float32)
    mapping = prune_and_merge(profiles, centroids, 0.35, 1, merge_distance=1.0)
    # cluster 3 (quality 0.15) and the empty cluster 2 are pruned; 0 and 1 merge
    assert mapping["super_cluster"].to_list() == [0, 0, None, None]
    summary = super_cluster_summary(profiles, mapping)
    row = summary.row(0, named=True)
    assert summary.height == 1
    assert row["clusters"] == [0, 1] and row["n_clusters"] == 2
    assert row["n_docs"] == 7 and row["n_tokens"] == 75
    assert row["token_share"] == pytest.approx(1.0)
    assert row["mean_quality"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.9 + 0.5 + 0.4 + 0.3) / 7)
    assert {"cat", "bank"} <= set(row["top_terms"])
    assert len(row["examples"]) == 3


def test_summary_token_shares_sum_to_one() -> None:
    centroids, _ = grouped_centroids()
    profiles = profiles_for(9, [10, 1, 500, 10, 1, 500, 10, 1, 500], [0.9] * 9, [5] * 9)
    profiles = profiles.with_columns(
        top_terms=pl.lit(["a"], dtype=pl.List(pl.String)),
        examples=pl.lit(["x"], dtype=pl.List(pl.String)),
    )
    summary = super_cluster_summary(profiles, prune_and_merge(profiles, centroids, 0.3, 1, 1.0))
    assert summary["super_cluster"].to_list() == [0, 1, 2]
    assert summary["n_tokens"].to_list() == [1500, 30, 3]
    assert summary["token_share"].sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- plots


def test_charts_are_small_pngs() -> None:
    xy = pca_2d(np.random.default_rng(0).normal(size=(12, 5)))
    pngs = [
        bar_chart([f"s{i}" for i in range(15)], list(range(15)), "tokens"),
        histogram(np.r_[np.random.default_rng(0).normal(size=100), np.nan], 10, "distances"),
        scatter_2d(xy, [0, 0, 1, 1, 2, 2, None, None, 3, 3, 4, 4], "centroids"),
        line_chart([1, 2, 3], {"a": [1.0, 2.0, 1.5], "b": [0.5, 0.4, 0.3]}, "loss"),
        # A proxy stopped at its rung has a shorter loss curve than the ones that finished.
        loss_curves(
            pl.DataFrame(
                {"candidate_id": [0, 0, 0, 1], "tokens": [10, 20, 30, 10], "loss": [3.0, 2, 1, 3]}
            ),
            "iter-001",
        ),
    ]
    for png in pngs:
        assert png.startswith(PNG_MAGIC)
        assert len(png) < 100_000
    markdown = png_markdown(pngs[0], "tokens [per cluster]")
    assert markdown.startswith("![tokens (per cluster)](data:image/png;base64,")
    assert base64.b64decode(markdown.split(",", 1)[1].rstrip(")")) == pngs[0]


def test_plot_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="need"):
        scatter_2d(np.zeros((3, 2)), [0, 1], "bad")
    with pytest.raises(ValueError, match="series 'a'"):
        line_chart([1, 2], {"a": [1.0]}, "bad")
    with pytest.raises(ValueError, match="series 'b'"):
        line_chart({"a": [1], "b": [1, 2]}, {"a": [1.0], "b": [1.0]}, "bad")


def test_pca_finds_the_main_axis() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    x = np.outer(t, [3.0, 0, 0, 4.0]) + 0.01 * rng.normal(size=(200, 4))
    projected = pca_2d(x)
    assert projected.shape == (200, 2)
    assert abs(np.corrcoef(projected[:, 0], t)[0, 1]) > 0.999
    assert projected[:, 0].std() > 100 * projected[:, 1].std()
    assert pca_2d(np.zeros((1, 4))).shape == (1, 2)


def test_large_clusters_count_their_terms_on_a_seeded_sample_of_their_documents() -> None:
    """Clusters over clustering.term_sample_docs count words on a sample chosen by document id:
    the same whatever the batches, fewer (cluster, term) pairs than counting every document,
    and sizes, quality and examples still cover every document."""
    rng = np.random.default_rng(5)
    words = [f"w{a}{b}{c}" for a in "abcdefghij" for b in "abcdefghij" for c in "abcdefghij"]
    n = 3_000
    docs = pl.DataFrame(
        {
            "doc_id": [f"d{i:05d}" for i in range(n)],
            "text": [" ".join(rng.choice(words, 6)) for _ in range(n)],
            "cluster": rng.integers(0, 3, n),
            "n_tokens": rng.integers(1, 50, n),
            "quality_score": rng.random(n),
            "distance": rng.random(n),
        }
    )
    sizes = dict(docs.group_by("cluster").len().iter_rows())
    fractions = term_sample_fractions(sizes, 100)
    assert all(0.05 < f < 0.2 for f in fractions.values())

    def profiled(rows: int, fractions: dict[int, float] | None) -> ProfileAccumulator:
        accumulator = ProfileAccumulator(3, 5, term_fractions=fractions)
        for batch in docs.iter_slices(rows):
            accumulator.add(batch)
        return accumulator

    full, sampled = profiled(3_000, None), profiled(3_000, fractions)
    in_batches = profiled(7, fractions).result().drop("mean_quality")  # float sums: by batch
    assert in_batches.equals(sampled.result().drop("mean_quality"))
    assert sampled._counts.height < full._counts.height / 2
    counted = sampled._counts.group_by("cluster").agg(pl.col("count").sum()).sort("cluster")
    assert all(400 < words_counted < 900 for words_counted in counted["count"])  # ~100 docs x 6
    whole, part = full.result(), sampled.result()
    assert part.drop("top_terms").equals(whole.drop("top_terms"))
