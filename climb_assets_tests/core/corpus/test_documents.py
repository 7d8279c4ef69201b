"""Reading shards into documents and rejects files, on tiny real files of every format."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from climb_assets.core.corpus.documents import (
    PREVIEW_COLUMNS,
    PREVIEW_ROWS,
    REJECT_REASONS,
    REJECT_SCHEMA,
    ShardSummary,
    TokenCounter,
    content_hash,
    document_schema,
    normalize_text,
    process_shard,
    shard_warning,
    wordpiece_token_counter,
)
from climb_assets.core.corpus.quality import quality_signals
from climb_assets.core.corpus.shard_readers import ShardReadError
from climb_assets.settings import CorpusSettings

CORPUS = CorpusSettings(max_chars=200)
TEXTS = [
    "The first document talks about rivers and the sea.",
    "A second one, with two lines.\nThe second line is here.",
    "Numbers like 42 and symbols # are fine too.",
]


def count_words(texts: list[str]) -> list[int]:
    """A cheap deterministic token counter for tests that are not about tokenization."""
    return [len(text.split()) for text in texts]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def json_line(obj: object) -> bytes:
    return json.dumps(obj).encode()


@dataclass(frozen=True)
class Ingested:
    summary: ShardSummary
    documents: pl.DataFrame  # the documents file, read back
    rejects: pl.DataFrame  # the rejects file, read back


def outputs(path: Path) -> tuple[Path, Path]:
    """Where a test writes a shard's documents and rejects: beside the shard, under out/."""
    out = path.parent / "out"
    return out / f"{path.name}.documents.parquet", out / f"{path.name}.rejects.parquet"


def reject_counts(rejects: pl.DataFrame) -> dict[str, int]:
    counts = dict.fromkeys(REJECT_REASONS, 0)
    return counts | dict(rejects.group_by("reason").len().iter_rows())


def check_summary(summary: ShardSummary, documents: pl.DataFrame, rejects: pl.DataFrame) -> None:
    """The summary tells what the files hold, without the asset reading them again."""
    assert summary.rows_read == documents.height + rejects.height
    assert summary.documents == documents.height
    assert summary.rejects_by_reason == reject_counts(rejects)
    assert list(summary.rejects_by_reason) == list(REJECT_REASONS)
    assert summary.rejected == rejects.height
    assert summary.tokens == documents["n_tokens"].sum()
    assert summary.mean_quality == pytest.approx(documents["quality_score"].mean() or 0.0)
    assert summary.preview.equals(documents.select(PREVIEW_COLUMNS).head(PREVIEW_ROWS))
    scores = documents["quality_score"].to_numpy().astype(np.float32)
    assert summary.quality_scores.dtype == np.float32
    assert np.array_equal(summary.quality_scores, scores)


def ingest(
    path: Path,
    shard: str,
    corpus: CorpusSettings = CORPUS,
    count_tokens: TokenCounter = count_words,
    batch_docs: int = 4096,
) -> Ingested:
    """process_shard, then both files read back (and checked against the summary)."""
    documents_path, rejects_path = outputs(path)
    summary = process_shard(
        path, shard, corpus, count_tokens, documents_path, rejects_path, batch_docs
    )
    documents, rejects = pl.read_parquet(documents_path), pl.read_parquet(rejects_path)
    assert documents.schema == pl.Schema(document_schema())
    assert rejects.schema == pl.Schema(REJECT_SCHEMA)
    check_summary(summary, documents, rejects)
    return Ingested(summary, documents, rejects)


def good_lines() -> list[bytes]:
    return [json_line({"id": f"doc-{i}", "text": text}) for i, text in enumerate(TEXTS)]


def only_reject(tmp_path: Path, bad_line: bytes) -> dict:
    """Shard = good lines with `bad_line` as line 2; returns its single reject row."""
    lines = good_lines()
    lines.insert(1, bad_line)
    result = ingest(write_lines(tmp_path / "s.jsonl", lines), "s")
    assert result.summary.rows_read == 4
    assert result.documents["doc_id"].to_list() == ["doc-0", "doc-1", "doc-2"]
    assert result.rejects.height == 1
    reject = result.rejects.row(0, named=True)
    assert reject["row"] == 2
    assert reject["raw"] == bad_line
    assert reject["shard"] == "s"
    return reject


# --- one test per kind of bad record ------------------------------------------------------------


def test_broken_json_is_unparseable_with_the_column(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, b'{"id": "x", "text": "unterminated}')
    assert reject["reason"] == "unparseable"
    assert "column" in reject["detail"]
    assert reject["doc_id"] is None


def test_json_that_is_not_an_object_is_unparseable(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, b'["text", "in an array"]')
    assert reject["reason"] == "unparseable"
    assert "array" in reject["detail"]


def test_invalid_utf8_bytes(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, b'{"id": "x", "text": "caf\xe9 au lait"}')
    assert reject["reason"] == "invalid_utf8"
    assert "byte 24" in reject["detail"]


def test_unpaired_surrogate_escape_is_invalid_utf8(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, b'{"id": "x", "text": "half a pair \\ud800 here"}')
    assert reject["reason"] == "invalid_utf8"
    assert "U+D800" in reject["detail"]
    assert reject["doc_id"] == "x"


def test_missing_text_field(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, b'{"id": "x", "body": "wrong field"}')
    assert reject["reason"] == "missing_text"
    assert "'text'" in reject["detail"] and "body" in reject["detail"]
    assert reject["doc_id"] == "x"


def test_text_that_is_not_a_string(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, b'{"id": "x", "text": 5}')
    assert reject["reason"] == "missing_text"
    assert "number" in reject["detail"]


def test_whitespace_only_text_is_empty(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, b'{"id": "x", "text": "  \\n\\t \\r\\n  "}')
    assert reject["reason"] == "empty_text"


def test_over_long_text_counts_characters_after_normalization(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, json_line({"id": "x", "text": "é" * 201}))
    assert reject["reason"] == "over_long"
    assert "201" in reject["detail"]
    # exactly max_chars after normalization is fine: trailing spaces are stripped first
    result = ingest(
        write_lines(tmp_path / "ok.jsonl", [json_line({"text": "a" * 200 + "   \n\n"})]), "ok"
    )
    assert result.documents["n_chars"].to_list() == [200]


def test_duplicate_after_normalization_points_at_the_first(tmp_path: Path) -> None:
    # leading blank lines, trailing spaces and CRLF: the same as TEXTS[0] once normalized
    variant = "\r\n\n" + TEXTS[0] + "  \r\n\n"
    reject = only_reject(tmp_path, json_line({"id": "x", "text": variant}))
    assert reject == reject | {"reason": "duplicate", "detail": "duplicate of row 1"}
    decomposed = "cafe\u0301 au lait"
    lines = [json_line({"text": "café au lait"}), json_line({"text": decomposed + "\n\n\n"})]
    result = ingest(write_lines(tmp_path / "d.jsonl", lines), "d")
    assert result.rejects["reason"].to_list() == ["duplicate"]


def test_blank_lines_are_skipped_but_keep_line_numbers(tmp_path: Path) -> None:
    lines = [good_lines()[0], b"", b"   ", good_lines()[1]]
    result = ingest(write_lines(tmp_path / "b.jsonl", lines), "b")
    assert result.summary.rows_read == 2
    assert result.documents["row"].to_list() == [1, 4]
    assert result.rejects.height == 0


# --- formats ------------------------------------------------------------------------------------


def write_all_formats(tmp_path: Path) -> dict[str, Path]:
    data = b"\n".join(good_lines()) + b"\n"
    paths = {
        "jsonl": tmp_path / "s.jsonl",
        "gz": tmp_path / "s.jsonl.gz",
        "zst": tmp_path / "s.jsonl.zst",
        "parquet": tmp_path / "s.parquet",
    }
    paths["jsonl"].write_bytes(data)
    paths["gz"].write_bytes(gzip.compress(data))
    paths["zst"].write_bytes(zstandard.ZstdCompressor().compress(data))
    ids = [f"doc-{i}" for i in range(len(TEXTS))]
    pl.DataFrame({"id": ids, "text": TEXTS, "extra": [1, 2, 3]}).write_parquet(paths["parquet"])
    return paths


def test_every_format_gives_the_same_documents(tmp_path: Path) -> None:
    counter = wordpiece_token_counter()
    paths = write_all_formats(tmp_path)
    results = {kind: ingest(path, path.name, count_tokens=counter) for kind, path in paths.items()}
    reference = results["jsonl"].documents
    assert reference["text"].to_list() == TEXTS
    for kind, result in results.items():
        assert result.summary.rows_read == len(TEXTS)
        assert result.documents.drop("shard", "row").equals(reference.drop("shard", "row")), kind
        assert result.documents["shard"].unique().to_list() == [paths[kind].name]
    assert results["jsonl"].documents["row"].to_list() == [1, 2, 3]  # JSONL: 1-based lines
    assert results["parquet"].documents["row"].to_list() == [0, 1, 2]  # Parquet: 0-based rows


def test_multi_frame_zstd_is_read_completely(tmp_path: Path) -> None:
    lines = good_lines()
    frames = [zstandard.ZstdCompressor().compress(line + b"\n") for line in lines]
    path = tmp_path / "multi.jsonl.zst"
    path.write_bytes(b"".join(frames))
    result = ingest(path, "multi")
    assert result.documents["text"].to_list() == TEXTS


def test_parquet_rows_with_bad_cells_and_small_batches(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    cells = [TEXTS[0].encode(), b"caf\xe9", None, TEXTS[1].encode(), TEXTS[0].encode()]
    pl.DataFrame({"text": cells}, schema={"text": pl.Binary}).write_parquet(path)
    result = ingest(path, "b", batch_docs=2)
    assert result.documents["row"].to_list() == [0, 3]
    assert result.documents["doc_id"].to_list() == ["b:0", "b:3"]  # no id column: shard:row
    rejects = result.rejects.select("row", "reason", "raw", "doc_id").rows()
    assert rejects == [
        (1, "invalid_utf8", b"caf\xe9", "b:1"),
        (2, "missing_text", None, "b:2"),
        (4, "duplicate", TEXTS[0].encode(), "b:4"),
    ]


def test_ids_may_be_numbers_or_absent(tmp_path: Path) -> None:
    lines = [json_line({"id": 7, "text": TEXTS[0]}), json_line({"text": TEXTS[1]})]
    result = ingest(write_lines(tmp_path / "i.jsonl", lines), "i")
    assert result.documents["doc_id"].to_list() == ["7", "i:2"]


def test_a_reused_id_with_another_text_is_rejected_with_its_record(tmp_path: Path) -> None:
    reused = json_line({"id": "doc-0", "text": "A different text under the first id."})
    reject = only_reject(tmp_path, reused)
    assert reject["reason"] == "duplicate_id"
    assert reject["doc_id"] == "doc-0"
    assert "row 1" in reject["detail"]


def test_an_exact_repeat_of_id_and_text_is_a_duplicate(tmp_path: Path) -> None:
    reject = only_reject(tmp_path, good_lines()[0])
    assert (reject["reason"], reject["detail"]) == ("duplicate", "duplicate of row 1")


def test_an_explicit_id_equal_to_a_derived_one_is_a_duplicate_id(tmp_path: Path) -> None:
    lines = [json_line({"text": TEXTS[0]}), json_line({"id": "s:1", "text": TEXTS[1]})]
    result = ingest(write_lines(tmp_path / "s.jsonl", lines), "s")
    assert result.documents["doc_id"].to_list() == ["s:1"]
    assert result.rejects.select("row", "reason").rows() == [(2, "duplicate_id")]


def test_custom_field_names(tmp_path: Path) -> None:
    corpus = CorpusSettings(text_field="content", id_field="uid")
    lines = [json_line({"uid": "u1", "content": TEXTS[0], "text": "ignored"})]
    result = ingest(write_lines(tmp_path / "c.jsonl", lines), "c", corpus)
    assert result.documents.select("doc_id", "text").rows() == [("u1", TEXTS[0])]


# --- unreadable shards --------------------------------------------------------------------------


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(ShardReadError, match="bad.jsonl.gz"):
        ingest(path, "bad")


def test_truncated_gzip_fails_the_whole_shard(tmp_path: Path) -> None:
    data = b"\n".join(json_line({"text": f"document number {i} " * 5}) for i in range(2000))
    blob = gzip.compress(data)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ShardReadError, match="cut.jsonl.gz.*gzip"):
        ingest(path, "cut")


def test_truncated_zstd_fails_the_whole_shard(tmp_path: Path) -> None:
    data = b"\n".join(json_line({"text": f"document number {i} " * 5}) for i in range(2000))
    blob = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ShardReadError, match="cut.jsonl.zst.*zstd"):
        ingest(path, "cut")


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(ShardReadError, match="data.csv.*unknown shard format"):
        ingest(path, "data")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ShardReadError, match="nowhere.jsonl.*does not exist"):
        ingest(tmp_path / "nowhere.jsonl", "nowhere")


def test_parquet_without_the_text_column(tmp_path: Path) -> None:
    path = tmp_path / "notext.parquet"
    pl.DataFrame({"id": ["a"], "body": ["hello"]}).write_parquet(path)
    with pytest.raises(ShardReadError, match="notext.parquet.*'text'.*body"):
        ingest(path, "notext")


def test_parquet_with_a_numeric_text_column(tmp_path: Path) -> None:
    path = tmp_path / "numbers.parquet"
    pl.DataFrame({"text": [1, 2]}).write_parquet(path)
    with pytest.raises(ShardReadError, match="numbers.parquet.*type int64"):
        ingest(path, "numbers")


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"PAR1 but not really a parquet file")
    with pytest.raises(ShardReadError, match="junk.parquet"):
        ingest(path, "junk")


# --- tables, tokens, determinism ----------------------------------------------------------------


def test_all_good_shard_has_an_empty_rejects_table(tmp_path: Path) -> None:
    result = ingest(write_lines(tmp_path / "g.jsonl", good_lines()), "g")
    assert result.rejects.height == 0  # with its columns: ingest checked the schema
    assert result.summary.rejects_by_reason == dict.fromkeys(REJECT_REASONS, 0)
    assert shard_warning(result.summary) is None


def test_an_empty_shard_writes_empty_files_with_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    result = ingest(path, "empty")
    assert (result.documents.height, result.rejects.height) == (0, 0)
    assert result.summary.mean_quality == 0.0
    assert result.summary.quality_scores.shape == (0,)
    assert shard_warning(result.summary) == "empty shard: no records"


def test_a_shard_without_usable_documents_warns_with_the_reasons(tmp_path: Path) -> None:
    result = ingest(write_lines(tmp_path / "bad.jsonl", [b"{", json_line({"text": 1})]), "bad")
    assert shard_warning(result.summary) == (
        "no usable documents: all 2 records rejected (unparseable 1, missing_text 1)"
    )


def test_reject_counts_per_reason(tmp_path: Path) -> None:
    lines = [*good_lines(), b"{", b"[]", json_line({"text": 1}), good_lines()[0]]
    result = ingest(write_lines(tmp_path / "r.jsonl", lines), "r")
    assert result.summary.rejects_by_reason == dict.fromkeys(REJECT_REASONS, 0) | {
        "unparseable": 2,
        "missing_text": 1,
        "duplicate": 1,
    }


def test_document_columns_are_consistent(tmp_path: Path) -> None:
    result = ingest(write_lines(tmp_path / "g.jsonl", good_lines()), "g")
    docs = result.documents
    assert docs["content_hash"].to_list() == [content_hash(normalize_text(t)) for t in TEXTS]
    assert docs["n_chars"].to_list() == [len(t) for t in TEXTS]
    assert docs["n_words"].to_list() == [len(t.split()) for t in TEXTS]
    assert docs["n_tokens"].to_list() == count_words(TEXTS)
    assert docs["quality_score"].is_between(0, 1).all()


def test_normalize_text() -> None:
    assert normalize_text("cafe\u0301") == "café"  # NFC composes
    assert normalize_text("x²  ﬁ") == "x²  ﬁ"  # but no compatibility folding (not NFKC)
    assert normalize_text("\n\n  a  \r\nb\t\rc \u2028d\n\n") == "  a\nb\nc\nd"
    assert normalize_text("a\n\n\n\n\n\nb") == "a\n\n\nb"  # 5 blank lines -> 2
    assert normalize_text("a\n\n\nb") == "a\n\n\nb"  # 2 blank lines stay


def test_wordpiece_counter_counts_without_special_tokens_or_truncation() -> None:
    counter = wordpiece_token_counter()
    assert counter(["hello world", "", "word " * 300]) == [2, 0, 300]


def test_token_counter_must_return_one_count_per_text(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "g.jsonl", good_lines())
    with pytest.raises(ValueError, match="2 counts for 3 texts"):
        ingest(path, "g", count_tokens=lambda texts: [1, 2])


def test_batches_and_reruns_give_identical_tables(tmp_path: Path) -> None:
    lines = [*good_lines(), b"{", good_lines()[1], json_line({"text": "tiny"})]
    path = write_lines(tmp_path / "d.jsonl", lines)
    first = ingest(path, "d")
    again = ingest(path, "d")
    small_batches = ingest(path, "d", batch_docs=1)
    for other in (again, small_batches):
        assert other.documents.equals(first.documents)
        assert other.rejects.equals(first.rejects)
        assert other.summary.rows_read == first.summary.rows_read == 6


# --- streaming: batches, failures, memory --------------------------------------------------------


def mixed_shard(path: Path, n: int) -> tuple[Path, list[str]]:
    """`n` records, every fifth one a reject (unparseable or a duplicate); returns the path and
    the texts kept, in file order."""
    lines, kept = [], []
    for i in range(n):
        if i % 10 == 4:
            lines.append(b"{not json")
        elif i % 10 == 9:
            lines.append(json_line({"text": kept[0]}))
        else:
            kept.append(f"Document {i} is about {TEXTS[i % 3]}\n\n\n\n\nwith a tail {i}.  ")
            lines.append(json_line({"id": f"d{i}", "text": kept[-1]}))
    return write_lines(path, lines), kept


def expected_documents(path: Path, shard: str, kept: list[str]) -> pl.DataFrame:
    """The documents table recomputed directly on the whole shard: one frame, no batches."""
    texts = [normalize_text(text) for text in kept]
    rows = [i + 1 for i, line in enumerate(path.read_bytes().splitlines()) if b'"id"' in line]
    quality = quality_signals(texts)
    base = pl.DataFrame(
        {
            "doc_id": [f"d{row - 1}" for row in rows],
            "shard": [shard] * len(texts),
            "row": rows,
            "text": texts,
            "content_hash": [content_hash(text) for text in texts],
            "n_chars": [len(text) for text in texts],
            "n_words": quality["q_n_words"],
            "n_tokens": count_words(texts),
        }
    )
    return pl.concat([base, quality], how="horizontal").cast(document_schema())


def row_group_sizes(path: Path) -> list[int]:
    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def test_a_shard_of_many_batches_streams_the_same_files_whatever_the_batch(
    tmp_path: Path,
) -> None:
    path, kept = mixed_shard(tmp_path / "m.jsonl", 60)
    expected = expected_documents(path, "m", kept)
    results = {}
    for batch_docs in (1, 7, 1000):
        results[batch_docs] = ingest(path, "m", batch_docs=batch_docs)
        documents_path, rejects_path = outputs(path)
        assert max(row_group_sizes(documents_path)) <= batch_docs
        assert max(row_group_sizes(rejects_path)) <= batch_docs
        # the files stream back in batches of at most batch_docs rows
        batches = pq.ParquetFile(documents_path).iter_batches(batch_size=batch_docs)
        assert sum(batch.num_rows for batch in batches) == len(kept)
    assert row_group_sizes(outputs(path)[0])[0] == 48  # all in one row group at 1000
    for result in results.values():
        assert result.documents.equals(expected)
        assert result.rejects.equals(results[1].rejects)
        assert result.rejects.select("row", "reason").rows() == [
            (row, "unparseable" if row % 10 == 5 else "duplicate") for row in range(5, 61, 5)
        ]


def random_text_shard(path: Path, n: int, chars: int) -> int:
    """`n` distinct documents of `chars` characters; returns the bytes of text written."""
    rng = random.Random(n)
    words = [f"w{i}" for i in range(2000)]
    with open(path, "w") as file:
        for _ in range(n):
            text = " ".join(rng.choices(words, k=chars // 4))[:chars]
            file.write(json.dumps({"text": text}) + "\n")
    return n * chars


def test_a_shard_that_fails_mid_way_leaves_the_previous_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(good_lines())))
    ingest(path, "s")  # the previous, complete run
    documents_path, rejects_path = outputs(path)
    before = {p: p.read_bytes() for p in (documents_path, rejects_path)}
    plain = tmp_path / "big.jsonl"
    random_text_shard(plain, 3_000, 1_000)
    blob = gzip.compress(plain.read_bytes())
    path.write_bytes(blob[: len(blob) // 2])  # its first megabyte decodes, then the stream ends
    written: list[int] = []
    write_table = pq.ParquetWriter.write_table

    def counted(self: pq.ParquetWriter, table: pa.Table, *args: object, **kwargs: object) -> None:
        written.append(table.num_rows)
        write_table(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", counted)
    with pytest.raises(ShardReadError, match="s.jsonl.gz.*gzip"):
        ingest(path, "s", batch_docs=100)
    assert sum(written) >= 500  # batches went to the temporary file before the error
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(documents_path.parent.iterdir()) == sorted(before)  # no temporary files


_MEMORY_PROBE = """
import json, resource, sys
from pathlib import Path
from climb_assets.core.corpus.documents import process_shard
from climb_assets.settings import CorpusSettings

out = Path(sys.argv[1])
peaks = []
for shard in sys.argv[2:]:
    process_shard(
        out / shard, shard, CorpusSettings(), lambda texts: [len(t.split()) for t in texts],
        out / "documents.parquet", out / "rejects.parquet", batch_docs=250,
    )
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux
print(json.dumps(peaks))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_memory_does_not_grow_with_the_shard_text(tmp_path: Path) -> None:
    """The peak memory of a fresh process (Python and native: polars and Arrow buffers, which
    tracemalloc does not see) grows by far less than the text when the shard grows: only the
    hash and id per document stay. Holding the documents frames grew it by more than the text.
    """
    random_text_shard(tmp_path / "small.jsonl", 2_500, 4_000)
    extra_text = random_text_shard(tmp_path / "large.jsonl", 17_500, 4_000) - 2_500 * 4_000
    command = [sys.executable, "-c", _MEMORY_PROBE, str(tmp_path), "small.jsonl", "large.jsonl"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    small_peak, large_peak = json.loads(done.stdout)
    assert large_peak - small_peak < extra_text / 4, (small_peak, large_peak, extra_text)
