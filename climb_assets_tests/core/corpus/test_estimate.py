"""The corpus's size before any work: exact from Parquet footers and small JSONL files, sampled
from the start of large ones, and a refusal when the outputs would not fit on the disk."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
import zstandard

from climb_assets.core.corpus import estimate
from climb_assets.core.corpus.estimate import (
    CorpusEstimate,
    OutputPlan,
    disk_shortfall,
    estimate_corpus,
    sample_texts,
)

PLAN = OutputPlan(
    embedding_dim=384, pool_tokens_per_super_cluster=2_000_000, dataset_tokens=500_000
)


def records(n: int, start: int = 0) -> list[dict]:
    return [
        {"id": f"d{i}", "text": f"Document number {i} says something. " * (1 + i % 7)}
        for i in range(start, start + n)
    ]


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_small_shards_of_every_format_are_counted_exactly(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes(records(300)) + b"\n\n")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(records(200))))
    (tmp_path / "c.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(jsonl_bytes(records(100)))
    )
    pl.DataFrame(records(400)).write_parquet(tmp_path / "d.parquet")
    found = estimate_corpus(tmp_path.iterdir())
    assert found.exact and found.shards == 4 and found.documents == 1000
    assert found.disk_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())
    text = sum(len(r["text"]) for r in records(400))
    assert text < found.text_bytes < 3 * text  # JSON around the text, Parquet's column of it


def test_large_and_unsampled_shards_are_estimated_from_the_sampled_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(estimate, "SAMPLE_BYTES", 5_000)  # a third of each file
    monkeypatch.setattr(estimate, "SAMPLE_SHARDS", 2)
    for n in range(5):  # five shards of 2,000 documents, only the start of two of them read
        (tmp_path / f"s{n}.jsonl.gz").write_bytes(
            gzip.compress(jsonl_bytes(records(2_000, n * 2_000)))
        )
    found = estimate_corpus(tmp_path.iterdir())
    assert not found.exact
    assert 8_000 < found.documents < 12_000
    assert f"about {found.documents:,} documents" in found.describe()


def test_outputs_that_do_not_fit_are_refused_naming_the_folder(tmp_path: Path) -> None:
    small = CorpusEstimate(shards=1, disk_bytes=10, documents=10, text_bytes=1_000, exact=True)
    assert disk_shortfall(small, PLAN, tmp_path / "out") is None
    huge = CorpusEstimate(shards=1, disk_bytes=10, documents=10**15, text_bytes=10**18, exact=True)
    message = disk_shortfall(huge, PLAN, tmp_path / "out")
    assert message is not None and str(tmp_path / "out") in message and "output_dir" in message


def test_the_output_estimate_bounds_the_proxy_pool_by_its_limit() -> None:
    small = CorpusEstimate(shards=1, disk_bytes=1, documents=1_000, text_bytes=10**6, exact=True)
    big = CorpusEstimate(shards=1, disk_bytes=1, documents=10**6, text_bytes=10**9, exact=True)
    tables, pool_cap = 0.6 * 10**9, 30 * 2_000_000 * 2
    assert big.output_bytes(PLAN) == round(10**6 * 384 * 2 + tables + pool_cap + 500_000 * 2)
    # a small corpus's pool is all its text, tokenized
    assert small.output_bytes(PLAN) == round(1_000 * 768 + 1.2 * 10**6 + 500_000 * 2)


def test_sample_texts_come_from_the_start_of_every_format(tmp_path: Path) -> None:
    rows = records(50)
    broken = jsonl_bytes(rows[:3]) + b"{not json\n" + b'{"id": 1, "text": "   "}\n'
    (tmp_path / "a.jsonl").write_bytes(broken + jsonl_bytes(rows[3:]))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(rows)))
    pl.DataFrame(rows).write_parquet(tmp_path / "c.parquet")
    texts = [r["text"] for r in rows]
    for name in ("a.jsonl", "b.jsonl.gz", "c.parquet"):
        assert sample_texts(tmp_path / name, "text", 10) == texts[:10], name
    assert sample_texts(tmp_path / "c.parquet", "body", 10) == []  # no such field
