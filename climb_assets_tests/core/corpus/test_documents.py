"""Reading shards into documents and rejects, on tiny real files of every format."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
import zstandard

from climb_assets.core.corpus.documents import (
    REJECT_REASONS,
    REJECT_SCHEMA,
    ShardReadError,
    content_hash,
    document_schema,
    normalize_text,
    process_shard,
    reject_counts,
    wordpiece_token_counter,
)
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


def good_lines() -> list[bytes]:
    return [json_line({"id": f"doc-{i}", "text": text}) for i, text in enumerate(TEXTS)]


def only_reject(tmp_path: Path, bad_line: bytes) -> dict:
    """Shard = good lines with `bad_line` as line 2; returns its single reject row."""
    lines = good_lines()
    lines.insert(1, bad_line)
    result = process_shard(write_lines(tmp_path / "s.jsonl", lines), "s", CORPUS, count_words)
    assert result.rows_read == 4
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
    result = process_shard(
        write_lines(tmp_path / "ok.jsonl", [json_line({"text": "a" * 200 + "   \n\n"})]),
        "ok",
        CORPUS,
        count_words,
    )
    assert result.documents["n_chars"].to_list() == [200]


def test_duplicate_after_normalization_points_at_the_first(tmp_path: Path) -> None:
    # leading blank lines, trailing spaces and CRLF: the same as TEXTS[0] once normalized
    variant = "\r\n\n" + TEXTS[0] + "  \r\n\n"
    reject = only_reject(tmp_path, json_line({"id": "x", "text": variant}))
    assert reject == reject | {"reason": "duplicate", "detail": "duplicate of row 1"}
    decomposed = "cafe\u0301 au lait"
    lines = [json_line({"text": "café au lait"}), json_line({"text": decomposed + "\n\n\n"})]
    result = process_shard(write_lines(tmp_path / "d.jsonl", lines), "d", CORPUS, count_words)
    assert result.rejects["reason"].to_list() == ["duplicate"]


def test_blank_lines_are_skipped_but_keep_line_numbers(tmp_path: Path) -> None:
    lines = [good_lines()[0], b"", b"   ", good_lines()[1]]
    result = process_shard(write_lines(tmp_path / "b.jsonl", lines), "b", CORPUS, count_words)
    assert result.rows_read == 2
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
    results = {
        kind: process_shard(path, path.name, CORPUS, counter) for kind, path in paths.items()
    }
    reference = results["jsonl"].documents
    assert reference["text"].to_list() == TEXTS
    assert reference.schema == pl.Schema(document_schema())
    for kind, result in results.items():
        assert result.rows_read == len(TEXTS)
        assert result.rejects.schema == pl.Schema(REJECT_SCHEMA)
        assert result.documents.drop("shard", "row").equals(reference.drop("shard", "row")), kind
        assert result.documents["shard"].unique().to_list() == [paths[kind].name]
    assert results["jsonl"].documents["row"].to_list() == [1, 2, 3]  # JSONL: 1-based lines
    assert results["parquet"].documents["row"].to_list() == [0, 1, 2]  # Parquet: 0-based rows


def test_multi_frame_zstd_is_read_completely(tmp_path: Path) -> None:
    lines = good_lines()
    frames = [zstandard.ZstdCompressor().compress(line + b"\n") for line in lines]
    path = tmp_path / "multi.jsonl.zst"
    path.write_bytes(b"".join(frames))
    result = process_shard(path, "multi", CORPUS, count_words)
    assert result.documents["text"].to_list() == TEXTS


def test_parquet_rows_with_bad_cells_and_small_batches(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    cells = [TEXTS[0].encode(), b"caf\xe9", None, TEXTS[1].encode(), TEXTS[0].encode()]
    pl.DataFrame({"text": cells}, schema={"text": pl.Binary}).write_parquet(path)
    result = process_shard(path, "b", CORPUS, count_words, batch_docs=2)
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
    result = process_shard(write_lines(tmp_path / "i.jsonl", lines), "i", CORPUS, count_words)
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
    result = process_shard(write_lines(tmp_path / "s.jsonl", lines), "s", CORPUS, count_words)
    assert result.documents["doc_id"].to_list() == ["s:1"]
    assert result.rejects.select("row", "reason").rows() == [(2, "duplicate_id")]


def test_custom_field_names(tmp_path: Path) -> None:
    corpus = CorpusSettings(text_field="content", id_field="uid")
    lines = [json_line({"uid": "u1", "content": TEXTS[0], "text": "ignored"})]
    result = process_shard(write_lines(tmp_path / "c.jsonl", lines), "c", corpus, count_words)
    assert result.documents.select("doc_id", "text").rows() == [("u1", TEXTS[0])]


# --- unreadable shards --------------------------------------------------------------------------


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(ShardReadError, match="bad.jsonl.gz"):
        process_shard(path, "bad", CORPUS, count_words)


def test_truncated_gzip_fails_the_whole_shard(tmp_path: Path) -> None:
    data = b"\n".join(json_line({"text": f"document number {i} " * 5}) for i in range(2000))
    blob = gzip.compress(data)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ShardReadError, match="cut.jsonl.gz.*gzip"):
        process_shard(path, "cut", CORPUS, count_words)


def test_truncated_zstd_fails_the_whole_shard(tmp_path: Path) -> None:
    data = b"\n".join(json_line({"text": f"document number {i} " * 5}) for i in range(2000))
    blob = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ShardReadError, match="cut.jsonl.zst.*zstd"):
        process_shard(path, "cut", CORPUS, count_words)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(ShardReadError, match="data.csv.*unknown shard format"):
        process_shard(path, "data", CORPUS, count_words)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ShardReadError, match="nowhere.jsonl.*does not exist"):
        process_shard(tmp_path / "nowhere.jsonl", "nowhere", CORPUS, count_words)


def test_parquet_without_the_text_column(tmp_path: Path) -> None:
    path = tmp_path / "notext.parquet"
    pl.DataFrame({"id": ["a"], "body": ["hello"]}).write_parquet(path)
    with pytest.raises(ShardReadError, match="notext.parquet.*'text'.*body"):
        process_shard(path, "notext", CORPUS, count_words)


def test_parquet_with_a_numeric_text_column(tmp_path: Path) -> None:
    path = tmp_path / "numbers.parquet"
    pl.DataFrame({"text": [1, 2]}).write_parquet(path)
    with pytest.raises(ShardReadError, match="numbers.parquet.*type int64"):
        process_shard(path, "numbers", CORPUS, count_words)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"PAR1 but not really a parquet file")
    with pytest.raises(ShardReadError, match="junk.parquet"):
        process_shard(path, "junk", CORPUS, count_words)


# --- tables, tokens, determinism ----------------------------------------------------------------


def test_all_good_shard_has_an_empty_rejects_table(tmp_path: Path) -> None:
    result = process_shard(
        write_lines(tmp_path / "g.jsonl", good_lines()), "g", CORPUS, count_words
    )
    assert result.rejects.height == 0
    assert result.rejects.schema == pl.Schema(REJECT_SCHEMA)
    assert reject_counts(result.rejects) == dict.fromkeys(REJECT_REASONS, 0)


def test_reject_counts_per_reason(tmp_path: Path) -> None:
    lines = [*good_lines(), b"{", b"[]", json_line({"text": 1}), good_lines()[0]]
    result = process_shard(write_lines(tmp_path / "r.jsonl", lines), "r", CORPUS, count_words)
    counts = reject_counts(result.rejects)
    assert list(counts) == list(REJECT_REASONS)
    assert counts == dict.fromkeys(REJECT_REASONS, 0) | {
        "unparseable": 2,
        "missing_text": 1,
        "duplicate": 1,
    }


def test_document_columns_are_consistent(tmp_path: Path) -> None:
    result = process_shard(
        write_lines(tmp_path / "g.jsonl", good_lines()), "g", CORPUS, count_words
    )
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
        process_shard(path, "g", CORPUS, lambda texts: [1, 2])


def test_batches_and_reruns_give_identical_tables(tmp_path: Path) -> None:
    lines = [*good_lines(), b"{", good_lines()[1], json_line({"text": "tiny"})]
    path = write_lines(tmp_path / "d.jsonl", lines)
    first = process_shard(path, "d", CORPUS, count_words)
    again = process_shard(path, "d", CORPUS, count_words)
    small_batches = process_shard(path, "d", CORPUS, count_words, batch_docs=1)
    for other in (again, small_batches):
        assert other.documents.equals(first.documents)
        assert other.rejects.equals(first.rejects)
        assert other.rows_read == first.rows_read == 6
