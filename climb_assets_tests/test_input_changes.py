"""Corpus input through `run_pipeline` into a real Dagster instance: edits detected by content,
shard keys that cannot collide, symlinked shards, skipped files and empty shards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from climb_assets.cli.runner import run_pipeline
from climb_assets.definitions import build_definitions
from climb_assets.defs.graph import Stage
from climb_assets.settings import Settings
from climb_assets.store import Layout
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


def latest_metadata(instance: dg.DagsterInstance, asset: str, shard: str | None = None) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey(asset), asset_partitions=[shard] if shard else None),
        limit=1,
    ).records
    assert records, f"{asset} [{shard}] was never materialized"
    metadata = records[0].asset_materialization.metadata  # type: ignore[union-attr]
    return {key: value.value for key, value in metadata.items()}


@pytest.fixture(scope="module")
def awkward_corpus(tmp_path_factory: pytest.TempPathFactory):
    """A corpus with two shards whose flat names once collided, a symlink to a file outside the
    corpus folder, a file no pattern names, a broken link, an empty shard, an unusable one and
    one that reuses another shard's id."""
    root = tmp_path_factory.mktemp("awkward")
    corpus = root / "corpus"
    write_jsonl([{"id": "s1", "text": "In the sub folder."}], corpus / "sub" / "x.jsonl")
    write_jsonl([{"id": "s2", "text": "Beside the sub folder."}], corpus / "sub__x.jsonl")
    write_jsonl([{"id": "o1", "text": "Lives outside the corpus."}], root / "elsewhere.jsonl")
    (corpus / "linked.jsonl").symlink_to(root / "elsewhere.jsonl")
    (corpus / "notes.txt").write_text("not a shard")
    (corpus / "gone.jsonl").symlink_to(root / "missing.jsonl")
    (corpus / "empty.jsonl").write_bytes(b"")
    (corpus / "broken.jsonl").write_bytes(b"{not json\n")
    write_jsonl([{"id": "s1", "text": "Reuses an id of sub/x.jsonl."}], corpus / "zz.jsonl")
    settings = small_settings(corpus, root / "out")
    with dg.instance_for_test() as instance:
        said = run(settings, instance)
        yield settings, instance, said


def test_shard_keys_that_once_collided_both_keep_their_documents(awkward_corpus) -> None:
    settings, _, _ = awkward_corpus
    layout = Layout(settings.output_dir)
    assert layout.documents("sub/x.jsonl") != layout.documents("sub__x.jsonl")
    assert texts(settings, "sub/x.jsonl") == ["In the sub folder."]
    assert texts(settings, "sub__x.jsonl") == ["Beside the sub folder."]
    index = pl.read_parquet(layout.document_index)
    assert set(index["doc_id"]) == {"s1", "s2", "o1"}


def test_an_id_reused_across_shards_is_kept_aside_and_counted(awkward_corpus) -> None:
    settings, instance, _ = awkward_corpus
    metadata = latest_metadata(instance, "document_index")
    assert (metadata["cross_shard_duplicate_ids"], metadata["cross_shard_duplicates"]) == (1, 0)
    rejects = pl.read_parquet(Layout(settings.output_dir).cross_shard_duplicates)
    row = rejects.row(0, named=True)
    assert (row["shard"], row["doc_id"], row["reason"]) == ("zz.jsonl", "s1", "duplicate_id")
    assert (row["kept_shard"], row["kept_row"]) == ("sub/x.jsonl", 1)
    assert b"Reuses an id" in row["raw"]


def test_a_symlink_to_a_file_outside_the_corpus_is_read(awkward_corpus) -> None:
    settings, _, _ = awkward_corpus
    assert texts(settings, "linked.jsonl") == ["Lives outside the corpus."]


def test_files_that_are_not_shards_are_named_once(awkward_corpus) -> None:
    _, instance, _ = awkward_corpus
    skipped = latest_metadata(instance, "document_index")["skipped_files"]
    assert (
        "2 path(s)" in skipped and "notes.txt" in skipped and "gone.jsonl (broken link)" in skipped
    )


def test_empty_and_unusable_shards_are_warnings_not_failures(awkward_corpus) -> None:
    _, instance, said = awkward_corpus
    assert latest_metadata(instance, "corpus_documents", "empty.jsonl")["warning"] == (
        "empty shard: no records"
    )
    warning = latest_metadata(instance, "corpus_documents", "broken.jsonl")["warning"]
    assert warning == "no usable documents: all 1 records rejected (unparseable 1)"
    assert any("succeeded" in line for line in said)


@pytest.mark.parametrize(
    "key",
    [
        "a.jsonl",
        "sub/x.jsonl",
        "sub__x.jsonl",
        "sub%2Fx.jsonl",
        "_x.jsonl",
        "p[1]*?.parquet",
        "é/ü",
    ],
)
def test_shard_file_names_are_injective_and_reversible(key: str) -> None:
    from climb_assets.store import shard_file_stem, shard_key_of

    stem = shard_file_stem(key)
    assert "/" not in stem and not stem.startswith(("_", "."))
    assert shard_key_of(stem) == key
    layout = Layout(Path("out"))
    assert Layout.shard_of(layout.documents(key)) == Layout.shard_of(layout.embeddings(key)) == key


def test_no_two_keys_share_a_file_name() -> None:
    from climb_assets.store import shard_file_stem

    keys = ["sub/x.jsonl", "sub__x.jsonl", "sub%2Fx.jsonl", "sub%252Fx.jsonl", "%5Fx", "_x"]
    assert len({shard_file_stem(key) for key in keys}) == len(keys)
