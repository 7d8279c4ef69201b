"""The corpus-wide index: a text or an id repeated across shards is kept once, in the shard that
sorts first, and the others are rejects with their raw records."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from climb_assets.core.corpus.document_index import (
    CROSS_SHARD_SCHEMA,
    build_document_index,
    with_raw_records,
)
from climb_assets.core.corpus.documents import process_shard
from climb_assets.settings import CorpusSettings

CORPUS = CorpusSettings()


def count_words(texts: list[str]) -> list[int]:
    return [len(text.split()) for text in texts]


def ingest(corpus: Path, out: Path, shards: dict[str, list[dict]]) -> dict[str, Path]:
    """Write each shard as JSONL under `corpus`, process it into its documents under `out`."""
    paths = {}
    for key, records in shards.items():
        source = corpus / key
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("".join(json.dumps(r) + "\n" for r in records))
        paths[key] = out / f"{key.replace('/', '_')}.parquet"
        rejects = corpus.parent / "rejects" / paths[key].name  # beside out/, not in it
        process_shard(source, key, CORPUS, count_words, paths[key], rejects)
    return paths


def index(tmp_path: Path, shards: dict[str, list[dict]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    out.mkdir()
    paths = ingest(corpus, out, shards)
    rejects = build_document_index(list(reversed(paths)), paths.__getitem__, out / "index.parquet")
    kept = pl.read_parquet(out / "index.parquet")
    return kept, with_raw_records(rejects, CORPUS, lambda shard: corpus / shard)


def test_a_reused_id_in_a_later_shard_is_rejected_with_its_raw_record(tmp_path: Path) -> None:
    first = {"id": "x", "text": "The river runs to the sea."}
    second = {"id": "x", "text": "A mountain stands alone."}
    kept, rejects = index(tmp_path, {"b.jsonl": [second], "a.jsonl": [first]})
    assert kept.select("doc_id", "shard").rows() == [("x", "a.jsonl")]
    reject = rejects.row(0, named=True)
    assert rejects.height == 1 and rejects.schema == pl.Schema(CROSS_SHARD_SCHEMA)
    assert reject | {"raw": None} == reject | {
        "shard": "b.jsonl",
        "row": 1,
        "doc_id": "x",
        "reason": "duplicate_id",
        "kept_shard": "a.jsonl",
        "kept_row": 1,
        "raw": None,
    }
    assert json.loads(reject["raw"]) == second
    assert "a.jsonl row 1" in reject["detail"]


def test_the_same_text_across_shards_is_a_duplicate_whatever_its_id(tmp_path: Path) -> None:
    text = "The river runs to the sea."
    kept, rejects = index(
        tmp_path,
        {"a.jsonl": [{"id": "x", "text": text}], "b.jsonl": [{"id": "y", "text": text}]},
    )
    assert kept["doc_id"].to_list() == ["x"]
    assert rejects.select("shard", "doc_id", "reason").rows() == [("b.jsonl", "y", "duplicate")]


def test_shards_without_ids_do_not_collide(tmp_path: Path) -> None:
    kept, rejects = index(
        tmp_path,
        {
            "a.jsonl": [{"text": "One text."}, {"text": "Two texts."}],
            "sub/b.jsonl": [{"text": "Three texts."}, {"text": "Four texts."}],
        },
    )
    assert kept["doc_id"].to_list() == ["a.jsonl:1", "a.jsonl:2", "sub/b.jsonl:1", "sub/b.jsonl:2"]
    assert rejects.height == 0 and kept["doc_id"].is_unique().all()


def test_the_winner_does_not_depend_on_the_order_shards_are_listed(tmp_path: Path) -> None:
    shards = {f"{name}.jsonl": [{"id": "same", "text": f"Text of {name}."}] for name in "cab"}
    kept, rejects = index(tmp_path, shards)
    assert kept.select("shard").rows() == [("a.jsonl",)]
    assert rejects["shard"].to_list() == ["b.jsonl", "c.jsonl"]


def test_missing_documents_name_the_shards(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="corpus_documents"):
        build_document_index(["a.jsonl"], lambda shard: tmp_path / shard, tmp_path / "i.parquet")


def test_the_index_at_the_smallest_memory_limit_keeps_the_first_of_each(tmp_path: Path) -> None:
    """DuckDB at its smallest memory limit, on shards with duplicates of both kinds: the index
    the first-wins rule gives, every document kept or rejected, no spill folder left behind."""
    shards = {
        f"s{n}.jsonl": [
            {"id": f"id{(n * 4000 + i) % 9000}", "text": f"Document {(n * 3000 + i) % 10000}."}
            for i in range(4000)
        ]
        for n in range(3)
    }
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    out.mkdir()
    paths = ingest(corpus, out, shards)
    rejects = build_document_index(list(paths), paths.__getitem__, out / "index.parquet", 64)
    kept = pl.read_parquet(out / "index.parquet")
    every = pl.concat([pl.read_parquet(p) for p in paths.values()]).sort("shard", "row")
    first_text = every.filter(pl.int_range(pl.len()).over("content_hash") == 0)
    expected = first_text.filter(pl.int_range(pl.len()).over("doc_id") == 0)
    assert kept.select(expected.select(kept.columns).columns).equals(expected.select(kept.columns))
    assert kept.height + rejects.height == every.height
    assert rejects.height > 0 and set(rejects["reason"]) == {"duplicate", "duplicate_id"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(p.name for p in paths.values()), "index.parquet"]
    )
