"""The final dataset: sampling to a budget by weights, repetition cap, shards, checks, card."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import yaml

from climb_assets.core.dataset.build import (
    SAMPLED_COLUMNS,
    DatasetError,
    sample_dataset,
    sample_super_clusters,
    spill_by_super_cluster,
)
from climb_assets.core.dataset.card import CardError, mixture_rows, render_card
from climb_assets.core.dataset.checks import check_budget, check_membership, check_weights
from climb_assets.core.dataset.writer import OUTPUT_COLUMNS, SPILL_DIR, TEXT_COLUMNS, write_dataset

WEIGHTS = {0: 0.4, 1: 0.3, 2: 0.2, 3: 0.1}


def make_corpus(sizes: dict[int | None, int], seed: int = 0) -> pl.DataFrame:
    """`sizes[s]` documents in super-cluster s (None = pruned), 10-500 tokens each, with text."""
    rng = np.random.default_rng(seed)
    labels = [s for s, n in sizes.items() for _ in range(n)]
    n = len(labels)
    return pl.DataFrame(
        {
            "doc_id": [f"doc-{i:06d}" for i in range(n)],
            "text": [f"text of document {i} in super-cluster {s}" for i, s in enumerate(labels)],
            "shard": [f"shard-{i % 3}.jsonl" for i in range(n)],
            "row": np.arange(n, dtype=np.int64),
            "cluster": pl.Series(
                [-1 if s is None else s * 10 + i % 4 for i, s in enumerate(labels)]
            ),
            "super_cluster": pl.Series(labels, dtype=pl.Int64),
            "quality_score": rng.random(n),
            "n_tokens": rng.integers(10, 500, n, dtype=np.int64),
        }
    )


def make_docs(sizes: dict[int | None, int], seed: int = 0) -> pl.DataFrame:
    """What sampling sees of `make_corpus`: the metadata, no text."""
    return make_corpus(sizes, seed).drop("text")


def text_batches(corpus: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    """The corpus's text streamed `size` documents at a time, as the store streams it."""
    yield from corpus.select(TEXT_COLUMNS).iter_slices(size)


def with_text(sampled: pl.DataFrame, corpus: pl.DataFrame) -> pl.DataFrame:
    """The dataset as the in-memory writer built it: sampled rows joined with their text."""
    texts = corpus.select(TEXT_COLUMNS)
    joined = sampled.join(texts, on=["shard", "row"], how="left", maintain_order="left")
    return joined.select(OUTPUT_COLUMNS)


PLENTY = {0: 1500, 1: 1200, 2: 1000, 3: 800, None: 300, 99: 300}


@pytest.fixture(scope="module")
def plenty_corpus() -> pl.DataFrame:
    """Every super-cluster holds far more than 200k * weight tokens."""
    return make_corpus(PLENTY)


@pytest.fixture(scope="module")
def plenty(plenty_corpus: pl.DataFrame) -> pl.DataFrame:
    return plenty_corpus.drop("text")


def test_budget_and_weights_are_met_within_tolerance(plenty: pl.DataFrame) -> None:
    budget = 200_000
    df, report = sample_dataset(plenty, WEIGHTS, budget, 2.0, seed=7)

    passed, details = check_budget(df, budget, 0.01)
    assert passed, details
    passed, details = check_weights(df, WEIGHTS, 0.01)
    assert passed, details
    for s in report.super_clusters:
        # The midpoint rule lands each super-cluster within half of its largest document.
        assert abs(s.realized_tokens - s.target_tokens) <= 250
        assert not s.capped and s.shortfall_tokens == 0 and s.passes == 1
    assert report.total_tokens == df["n_tokens"].sum()
    assert list(df.columns) == list(SAMPLED_COLUMNS)
    assert df["repeat"].max() == 0 and df["doc_id"].n_unique() == df.height


def test_checks_fail_on_data_that_misses_its_targets(plenty: pl.DataFrame) -> None:
    df, _ = sample_dataset(plenty, WEIGHTS, 200_000, 2.0, seed=7)
    assert not check_budget(df, 300_000, 0.05)[0]
    passed, details = check_weights(df, {0: 0.1, 1: 0.3, 2: 0.2, 3: 0.4}, 0.05)
    assert not passed
    assert details["worst_super_cluster"] in (0, 3)
    assert details["max_abs_deviation"] == pytest.approx(0.3, abs=0.01)


def test_repetition_cap_reports_shortfall_without_redistributing() -> None:
    docs = make_docs({0: 2000, 1: 10})
    tiny = docs.filter(pl.col("super_cluster") == 1)
    available = int(tiny["n_tokens"].sum())
    weights = {0: 0.5, 1: 0.5}
    budget = 40 * available  # super-cluster 1 is asked for 20x what it holds

    df, report = sample_dataset(docs, weights, budget, 2.0, seed=3)

    small = next(s for s in report.super_clusters if s.super_cluster == 1)
    assert small.capped and small.passes == 2
    assert small.realized_tokens == 2 * available
    assert small.shortfall_tokens == pytest.approx(0.5 * budget - 2 * available)
    assert report.shortfalls == {1: small.shortfall_tokens}
    uses = df.filter(pl.col("super_cluster") == 1)["doc_id"].value_counts()
    assert uses["count"].max() == 2
    # Super-cluster 0 keeps its own target: nothing moved over from the short one.
    big = next(s for s in report.super_clusters if s.super_cluster == 0)
    assert abs(big.realized_tokens - 0.5 * budget) <= 250 and not big.capped
    assert not check_budget(df, budget, 0.05)[0]


def test_fractional_repetition_factor_caps_tokens_and_uses() -> None:
    docs = make_docs({0: 40})
    available = int(docs["n_tokens"].sum())
    df, report = sample_dataset(docs, {0: 1.0}, 10 * available, 1.5, seed=11)

    (only,) = report.super_clusters
    assert only.capped and only.passes == 2
    assert available < only.realized_tokens <= 1.5 * available
    counts = df["doc_id"].value_counts()["count"]
    assert counts.max() == 2 and counts.min() == 1
    # `repeat` counts earlier uses of the same document.
    first_uses = df.filter(pl.col("repeat") == 0)
    assert first_uses.height == docs.height
    assert set(df.filter(pl.col("repeat") == 1)["doc_id"]) <= set(first_uses["doc_id"])


def test_same_seed_same_dataset_and_input_order_does_not_matter(plenty: pl.DataFrame) -> None:
    first, _ = sample_dataset(plenty, WEIGHTS, 100_000, 2.0, seed=5)
    again, _ = sample_dataset(plenty, WEIGHTS, 100_000, 2.0, seed=5)
    reordered = plenty.sample(fraction=1.0, shuffle=True, seed=1)
    from_reordered, _ = sample_dataset(reordered, WEIGHTS, 100_000, 2.0, seed=5)
    other, _ = sample_dataset(plenty, WEIGHTS, 100_000, 2.0, seed=6)

    assert first.equals(again)
    assert first.equals(from_reordered)
    assert not first["doc_id"].equals(other["doc_id"])
    assert set(first["doc_id"]) != set(other["doc_id"])


def test_sampling_one_super_cluster_at_a_time_equals_sampling_in_memory(
    plenty: pl.DataFrame, tmp_path: Path
) -> None:
    """The asset's path: metadata streamed in batches far smaller than the corpus, spilled per
    super-cluster, each loaded alone, gives the in-memory sample and report exactly."""
    weights = {**WEIGHTS, 7: 0.0}  # a zero-weight super-cluster with no documents
    expected, expected_report = sample_dataset(plenty, weights, 100_000, 2.0, seed=5)
    batches = plenty.sample(fraction=1.0, shuffle=True, seed=2).iter_slices(97)
    parts = spill_by_super_cluster(batches, tmp_path / "spill")
    assert sorted(parts) == [0, 1, 2, 3, 99]  # pruned documents (no super-cluster) left out
    loaded: list[int] = []

    def source(super_cluster: int) -> pl.DataFrame:
        loaded.append(super_cluster)
        return pl.read_parquet(parts[super_cluster])

    sources = {s: (lambda s=s: source(s)) for s in parts}
    unweighted = plenty.filter(pl.col("super_cluster") == 99).height
    sampled, report = sample_super_clusters(
        sources, weights, 100_000, 2.0, seed=5, excluded_docs=unweighted + 300
    )
    assert sampled.equals(expected)
    assert report == expected_report
    assert loaded == [0, 1, 2, 3]  # each weighted super-cluster once; 99 has no weight


def test_a_spilled_super_cluster_with_a_bad_row_names_it(
    plenty: pl.DataFrame, tmp_path: Path
) -> None:
    bad = plenty.with_columns(
        pl.when(pl.col("doc_id") == "doc-000001")
        .then(None)
        .otherwise(pl.col("n_tokens"))
        .alias("n_tokens")
    )
    parts = spill_by_super_cluster([bad], tmp_path / "spill")
    sources = {s: (lambda p=p: pl.read_parquet(p)) for s, p in parts.items()}
    with pytest.raises(DatasetError, match="super-cluster 0: .*'n_tokens' has null"):
        sample_super_clusters(sources, WEIGHTS, 10_000, 2.0, seed=0)


def test_final_order_mixes_super_clusters(plenty: pl.DataFrame) -> None:
    df, _ = sample_dataset(plenty, WEIGHTS, 100_000, 2.0, seed=5)
    head = df.head(df.height // 4)
    assert head["super_cluster"].n_unique() == len(WEIGHTS)


def test_docs_outside_kept_super_clusters_are_never_sampled(plenty: pl.DataFrame) -> None:
    df, report = sample_dataset(plenty, WEIGHTS, 200_000, 2.0, seed=7)

    assert report.excluded_docs == 600  # 300 pruned (null) + 300 in unweighted super-cluster 99
    assert set(df["super_cluster"].unique()) <= set(WEIGHTS)
    passed, details = check_membership(df, WEIGHTS.keys())
    assert passed, details

    intruder = plenty.filter(pl.col("super_cluster") == 99).head(1)
    polluted = pl.concat([df, intruder.with_columns(pl.lit(0, pl.Int32).alias("repeat"))])
    passed, details = check_membership(polluted, WEIGHTS.keys())
    assert not passed
    assert details["offending_super_clusters"] == [99] and details["rows_outside_kept"] == 1


def test_zero_weight_super_cluster_gives_nothing(plenty: pl.DataFrame) -> None:
    weights = {0: 0.5, 1: 0.5, 2: 0.0}
    df, report = sample_dataset(plenty, weights, 50_000, 2.0, seed=2)
    assert 2 not in set(df["super_cluster"])
    assert next(s for s in report.super_clusters if s.super_cluster == 2).docs == 0


def test_json_style_string_keys_are_accepted(plenty: pl.DataFrame) -> None:
    as_json = {str(k): v for k, v in WEIGHTS.items()}
    df_json, _ = sample_dataset(plenty, as_json, 50_000, 2.0, seed=4)
    df_int, _ = sample_dataset(plenty, WEIGHTS, 50_000, 2.0, seed=4)
    assert df_json.equals(df_int)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({0: 0.5, 1: 0.4}, "sum to"),
        ({0: 0.5, 7: 0.5}, r"super-cluster\(s\) \[7\] with no documents"),
        ({0: 1.2, 1: -0.2}, r"weights\[1\]"),
        ({"zero": 1.0}, "'zero' is not a super-cluster id"),
    ],
)
def test_bad_weights_are_rejected(plenty: pl.DataFrame, weights: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        sample_dataset(plenty, weights, 10_000, 2.0, seed=0)


def test_bad_docs_are_rejected(plenty: pl.DataFrame) -> None:
    with pytest.raises(DatasetError, match="missing column.*n_tokens"):
        sample_dataset(plenty.drop("n_tokens"), WEIGHTS, 10_000, 2.0, seed=0)
    duplicated = pl.concat([plenty, plenty.head(2)])
    with pytest.raises(DatasetError, match="'doc_id' is not unique"):
        sample_dataset(duplicated, WEIGHTS, 10_000, 2.0, seed=0)
    with pytest.raises(DatasetError, match="repetition_factor"):
        sample_dataset(plenty, WEIGHTS, 10_000, 0.5, seed=0)


def test_shards_round_trip_through_duckdb_and_polars(
    plenty: pl.DataFrame, plenty_corpus: pl.DataFrame, tmp_path: Path
) -> None:
    df, _ = sample_dataset(plenty, WEIGHTS, 100_000, 2.0, seed=9)
    out = tmp_path / "climbmix"
    texts = text_batches(plenty_corpus, 500)
    paths = write_dataset(df, texts, out, rows_per_shard=150, extra_files={"README.md": "# card\n"})

    n_shards = -(-df.height // 150)
    assert [p.name for p in paths] == [
        f"data-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)
    ]
    assert (out / "README.md").read_text() == "# card\n"
    glob = str(out / "data-*.parquet")
    count, tokens = duckdb.sql(f"SELECT count(*), sum(n_tokens) FROM '{glob}'").fetchall()[0]
    assert (count, tokens) == (df.height, df["n_tokens"].sum())
    back = pl.scan_parquet(glob).collect()
    assert back.equals(with_text(df, plenty_corpus))

    # A rewrite replaces the folder as a whole: no stale shard from the first write survives.
    write_dataset(df.head(10), text_batches(plenty_corpus, 500), out, rows_per_shard=150)
    assert sorted(p.name for p in out.iterdir()) == ["data-00000-of-00001.parquet"]
    # An empty sample still gives one (empty) shard with every column.
    write_dataset(df.head(0), iter([]), out, rows_per_shard=150)
    (empty,) = out.iterdir()
    assert pl.read_parquet(empty).equals(with_text(df.head(0), plenty_corpus))


SMALL = {0: 120, 1: 90, 2: 60, 3: 40, None: 30, 99: 30}


def test_streamed_shards_do_not_depend_on_batch_size_or_order(tmp_path: Path) -> None:
    corpus = make_corpus(SMALL, seed=1)
    df, _ = sample_dataset(corpus.drop("text"), WEIGHTS, 20_000, 2.0, seed=3)
    expected = with_text(df, corpus)
    reference = write_dataset(df, [corpus], tmp_path / "one-batch", rows_per_shard=40)
    assert len(reference) > 1
    assert pl.read_parquet(reference).equals(expected)

    streams = {f"batches-of-{n}": text_batches(corpus, n) for n in (1, 3, 1000)}
    streams["reversed"] = text_batches(corpus.reverse(), 7)
    for name, stream in streams.items():
        paths = write_dataset(df, stream, tmp_path / name, rows_per_shard=40)
        assert [p.name for p in paths] == [p.name for p in reference]
        for path, ref in zip(paths, reference, strict=True):
            assert pl.read_parquet(path).equals(pl.read_parquet(ref)), (name, path.name)
            assert path.read_bytes() == ref.read_bytes(), (name, path.name)
        assert not (tmp_path / name / SPILL_DIR).exists()


def test_repeated_documents_appear_once_per_use_with_their_text(tmp_path: Path) -> None:
    corpus = make_corpus({0: 12}, seed=2)
    available = int(corpus["n_tokens"].sum())
    df, report = sample_dataset(corpus.drop("text"), {0: 1.0}, 5 * available, 2.5, seed=4)
    assert report.super_clusters[0].passes == 3

    write_dataset(df, text_batches(corpus, 5), tmp_path / "out", rows_per_shard=7)
    back = pl.read_parquet(tmp_path / "out" / "data-*.parquet")

    assert back.equals(with_text(df, corpus))
    texts = dict(zip(corpus["doc_id"], corpus["text"], strict=True))
    assert back["text"].to_list() == [texts[d] for d in back["doc_id"]]
    uses = back.group_by("doc_id").agg(pl.len(), pl.col("repeat").sort())
    assert uses["len"].max() == 3 and uses["len"].min() == 2
    for repeats in uses["repeat"]:
        assert repeats.to_list() == list(range(len(repeats)))


def test_missing_or_doubled_text_is_an_error_that_writes_nothing(
    plenty: pl.DataFrame, plenty_corpus: pl.DataFrame, tmp_path: Path
) -> None:
    df, _ = sample_dataset(plenty, WEIGHTS, 20_000, 2.0, seed=1)
    shard, row = df.select("shard", "row").row(df.height // 2)
    lost = plenty_corpus.filter((pl.col("shard") != shard) | (pl.col("row") != row))
    out = tmp_path / "climbmix"
    with pytest.raises(DatasetError, match=f"shard={shard!r} row={row} never arrived"):
        write_dataset(df, text_batches(lost, 100), out, rows_per_shard=50)
    assert list(tmp_path.iterdir()) == []  # no dataset, no temporary folder, no spill file

    doubled = pl.concat([plenty_corpus, plenty_corpus.filter(pl.col("row") == row)])
    with pytest.raises(DatasetError, match=f"shard={shard!r} row={row} arrived more than once"):
        write_dataset(df, text_batches(doubled, 100), out, rows_per_shard=50)
    assert list(tmp_path.iterdir()) == []


def test_crash_mid_stream_leaves_the_previous_dataset_untouched(
    plenty: pl.DataFrame, plenty_corpus: pl.DataFrame, tmp_path: Path
) -> None:
    df, _ = sample_dataset(plenty, WEIGHTS, 20_000, 2.0, seed=1)
    out = tmp_path / "climbmix"
    write_dataset(df, [plenty_corpus], out, rows_per_shard=50, extra_files={"README.md": "v1"})
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crashing() -> Iterator[pl.DataFrame]:
        batches = text_batches(plenty_corpus, 400)
        yield next(batches)
        yield next(batches)
        raise RuntimeError("worker lost")

    other, _ = sample_dataset(plenty, WEIGHTS, 30_000, 2.0, seed=2)
    with pytest.raises(RuntimeError, match="worker lost"):
        write_dataset(other, crashing(), out, rows_per_shard=50, extra_files={"README.md": "v2"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["climbmix"]


def _card(plenty: pl.DataFrame, plenty_corpus: pl.DataFrame) -> str:
    df, report = sample_dataset(plenty, WEIGHTS, 100_000, 2.0, seed=9)
    rows = mixture_rows(
        report,
        with_text(df, plenty_corpus),
        top_terms={0: ["sonnet", "love"], 1: ["python", "module"]},
        examples={2: "a | piped\nsnippet"},
    )
    return render_card(
        n_docs=df.height,
        n_tokens=int(df["n_tokens"].sum()),
        n_shards=3,
        token_budget=100_000,
        mixture=rows,
        targets=[
            {"name": "held_out_text", "kind": "text", "metric": "bits_per_byte", "weight": 1.0},
            {"name": "held_out_choice", "kind": "multiple_choice", "metric": "accuracy"},
        ],
        predicted_score=-1.2345,
        lineage={
            "code_version": "abc123",
            "settings_hash": "f00dfeed",
            "upstream_runs": {"optimal_mixture": "run-1", "super_clusters": "run-0"},
        },
        settings={"seed": 9, "clustering": {"k": 48}, "search": {"proxies_per_iteration": [8, 4]}},
        data_path="outputs/climbmix",
    )


def test_card_has_front_matter_and_weights_table(
    plenty: pl.DataFrame, plenty_corpus: pl.DataFrame
) -> None:
    card = _card(plenty, plenty_corpus)

    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "other"
    assert meta["task_categories"] == ["text-generation"]
    assert meta["configs"][0]["config_name"] == "default"
    assert meta["configs"][0]["data_files"][0]["path"] == "data-*.parquet"

    header = "| super-cluster | weight | realized share | tokens | docs | top terms | example |"
    assert header in body
    table_rows = [line for line in body.splitlines() if line.startswith("| 0 |")]
    assert len(table_rows) == 1 and "0.4000" in table_rows[0] and "sonnet, love" in table_rows[0]
    assert "in super-cluster 0" in table_rows[0]  # the first sampled document, as example
    assert "a \\| piped snippet" in body  # pipes escaped, newlines flattened
    for needle in ("higher is better", "-1.2345", "abc123", "f00dfeed", "| optimal_mixture |"):
        assert needle in body
    assert 'load_dataset("parquet", data_files="outputs/climbmix/data-*.parquet"' in body
    assert "k=48" in body and "2 iterations of [8, 4] proxies" in body


def test_card_rejects_incomplete_inputs(plenty: pl.DataFrame) -> None:
    with pytest.raises(CardError, match=r"lineage lacks \['upstream_runs'\]"):
        render_card(
            n_docs=1,
            n_tokens=1,
            n_shards=1,
            token_budget=1,
            mixture=[],
            targets=[],
            predicted_score=None,
            lineage={"code_version": "x", "settings_hash": "y"},
            settings={},
        )
    with pytest.raises(CardError, match=r"mixture\[0\] lacks \['realized_share'"):
        render_card(
            n_docs=1,
            n_tokens=1,
            n_shards=1,
            token_budget=1,
            mixture=[{"super_cluster": 0, "weight": 1.0}],
            targets=[],
            predicted_score=None,
            lineage={"code_version": "x", "settings_hash": "y", "upstream_runs": {}},
            settings={},
        )
