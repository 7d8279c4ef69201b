"""Corpus input through `run_pipeline` into a real Dagster instance: edits detected by content,
shard keys that cannot collide, symlinked shards, skipped files and empty shards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from climb_assets.definitions import build_definitions
from climb_assets.layout import Layout
from climb_assets.runner import Stage, run_pipeline
from climb_assets.settings import Settings
from climb_assets_tests.conftest import small_settings, write_jsonl

DOCUMENTS = (Stage(("corpus_documents",), "shards"), Stage(("document_index",), "none"))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def run(settings: Settings, instance: dg.DagsterInstance) -> list[str]:
    """Documents and the index only; returns what the runner said."""
    said: list[str] = []
    run_pipeline(build_definitions(settings), settings, instance, plan=DOCUMENTS, echo=said.append)
    return said


def texts(settings: Settings, shard: str) -> list[str]:
    return pl.read_parquet(Layout(settings.output_dir).documents(shard))["text"].to_list()


def test_an_edit_that_keeps_size_and_mtime_is_redone(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    corpus = tmp_path / "corpus"
    write_jsonl([{"id": "a", "text": "The old river runs."}], corpus / "a.jsonl")
    write_jsonl([{"id": "b", "text": "Another shard."}], corpus / "b.jsonl")
    settings = small_settings(corpus, tmp_path / "out")
    run(settings, instance)
    assert texts(settings, "a.jsonl") == ["The old river runs."]

    path = corpus / "a.jsonl"
    stat = path.stat()
    write_jsonl([{"id": "a", "text": "The new river runs."}], path)  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as rsync -t or cp -p leave it
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    said = run(settings, instance)
    assert any("[a.jsonl] done" in line for line in said)
    assert any("skipped: corpus_documents [b.jsonl]" in line for line in said)
    assert texts(settings, "a.jsonl") == ["The new river runs."]
    index = pl.read_parquet(Layout(settings.output_dir).document_index)
    assert index.height == 2
