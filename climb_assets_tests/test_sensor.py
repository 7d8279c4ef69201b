"""The corpus sensor: new, changed and removed shard files, through `build_sensor_context`."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from climb_assets.cli.runner import run_pipeline
from climb_assets.definitions import build_definitions
from climb_assets.defs.graph import stages
from climb_assets.defs.partitions import CORPUS_SHARDS
from climb_assets.defs.resources import ClimbSettings
from climb_assets.settings import Settings
from climb_assets_tests.conftest import write_jsonl


def settings_for(corpus: Path, **changes: object) -> Settings:
    return Settings.model_validate(
        {"corpus": {"path": str(corpus)}, "output_dir": str(corpus.parent / "outputs"), **changes}
    )


def tick(
    instance: dg.DagsterInstance, corpus: Path, cursor: str | None, **changes: object
) -> dg.SensorResult:
    settings = settings_for(corpus, **changes)
    sensor = build_definitions(settings).resolve_sensor_def("corpus_shard_sensor")
    climb = ClimbSettings.from_settings(settings)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"climb": climb})
    result = sensor(context)
    # Apply the partition requests as the daemon would.
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def ingest(instance: dg.DagsterInstance, corpus: Path) -> None:
    """What `climb run` does for the shards: documents and embeddings of every changed shard."""
    settings = settings_for(corpus)
    defs = build_definitions(settings)
    run_pipeline(defs, settings, instance, stages(defs)[:1], echo=lambda _: None)


def requested(result: dg.SensorResult) -> list[str | None]:
    return sorted(r.partition_key for r in result.run_requests)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    write_jsonl([{"id": "1", "text": "one"}], folder / "a.jsonl")
    write_jsonl([{"id": "2", "text": "two"}], folder / "sub" / "b.jsonl")
    (folder / "notes.txt").write_text("not a shard")
    return folder


def test_new_changed_and_removed_shards(corpus: Path) -> None:
    with dg.instance_for_test() as instance:
        first = tick(instance, corpus, None)
        assert requested(first) == ["a.jsonl", "sub/b.jsonl"]
        assert {a.to_user_string() for a in first.run_requests[0].asset_selection} == {
            "corpus_documents",
            "shard_embeddings",
        }
        assert sorted(instance.get_dynamic_partitions(CORPUS_SHARDS.name)) == [
            "a.jsonl",
            "sub/b.jsonl",
        ]
        ingest(instance, corpus)
        quiet = tick(instance, corpus, first.cursor)
        assert not quiet.run_requests and not quiet.dynamic_partitions_requests

        write_jsonl([{"id": "1", "text": "one, rewritten"}], corpus / "a.jsonl")
        os.utime(corpus / "a.jsonl", ns=(1, 10**18))  # a distinct mtime even on coarse clocks
        (corpus / "sub" / "b.jsonl").unlink()
        changed = tick(instance, corpus, quiet.cursor)
        assert requested(changed) == ["a.jsonl"]
        assert instance.get_dynamic_partitions(CORPUS_SHARDS.name) == ["a.jsonl"]

        # A removal alone changes no upstream asset: the sensor starts the corpus-wide chain.
        (corpus / "a.jsonl").unlink()
        removed = tick(instance, corpus, changed.cursor)
        assert instance.get_dynamic_partitions(CORPUS_SHARDS.name) == []
        [request] = removed.run_requests
        assert request.partition_key is None
        assert [a.to_user_string() for a in request.asset_selection] == ["document_index"]


def test_shards_climb_run_processed_are_not_requested_again(corpus: Path) -> None:
    """One memory: the sensor's first tick after `climb run` (no cursor, as when `dagster dev`
    starts) finds every shard processed in the instance and requests nothing; settings that
    change what a shard's documents are request every shard again."""
    with dg.instance_for_test() as instance:
        ingest(instance, corpus)
        first = tick(instance, corpus, None)
        assert not first.run_requests and not first.dynamic_partitions_requests
        other = tick(instance, corpus, first.cursor, embedding={"max_seq_length": 128})
        assert requested(other) == ["a.jsonl", "sub/b.jsonl"]


def test_an_edit_that_keeps_size_and_mtime_is_ingested_again(corpus: Path) -> None:
    path = corpus / "a.jsonl"
    with dg.instance_for_test() as instance:
        first = tick(instance, corpus, None)
        ingest(instance, corpus)
        os.utime(path, ns=(1, 10**18))  # touched only: hashed again, same bytes, no run
        touched = tick(instance, corpus, first.cursor)
        assert not touched.run_requests
        stat = path.stat()
        write_jsonl([{"id": "1", "text": "two"}], path)  # same size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        edited = tick(instance, corpus, touched.cursor)
        assert requested(edited) == ["a.jsonl"]
        assert edited.run_requests[0].run_key != first.run_requests[0].run_key


def test_missing_corpus_folder_is_a_clear_error(tmp_path: Path) -> None:
    with dg.instance_for_test() as instance, pytest.raises(Exception, match="does not exist"):
        tick(instance, tmp_path / "nowhere", None)


def test_the_sensor_and_climb_run_register_the_same_shards(corpus: Path) -> None:
    from climb_assets.defs.shard_state import register_shards, registered

    settings = settings_for(corpus)
    with dg.instance_for_test() as by_sensor, dg.instance_for_test() as by_run:
        tick(by_sensor, corpus, None)  # applies the partition requests as the daemon would
        assert register_shards(settings, by_run) == registered(by_sensor)
        assert registered(by_run) == ["a.jsonl", "sub/b.jsonl"]
        (corpus / "a.jsonl").unlink()
        write_jsonl([{"id": "3", "text": "three"}], corpus / "c.jsonl")
        tick(by_sensor, corpus, None)
        assert register_shards(settings, by_run) == registered(by_sensor)
        assert registered(by_run) == ["c.jsonl", "sub/b.jsonl"]
