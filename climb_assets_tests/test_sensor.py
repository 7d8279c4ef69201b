"""The corpus sensor: new, changed and removed shard files, through `build_sensor_context`."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from climb_assets.automation import corpus_shard_sensor
from climb_assets.partitions import CORPUS_SHARDS
from climb_assets.resources import ClimbSettings
from climb_assets.settings import Settings
from climb_assets_tests.conftest import write_jsonl


def tick(instance: dg.DagsterInstance, corpus: Path, cursor: str | None) -> dg.SensorResult:
    climb = ClimbSettings.from_settings(Settings.model_validate({"corpus": {"path": str(corpus)}}))
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"climb": climb})
    result = corpus_shard_sensor(context)
    # Apply the partition requests as the daemon would.
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def test_new_changed_and_removed_shards(tmp_path: Path) -> None:
    write_jsonl([{"id": "1", "text": "one"}], tmp_path / "a.jsonl")
    write_jsonl([{"id": "2", "text": "two"}], tmp_path / "sub" / "b.jsonl")
    (tmp_path / "notes.txt").write_text("not a shard")
    with dg.instance_for_test() as instance:
        first = tick(instance, tmp_path, None)
        assert sorted(r.partition_key for r in first.run_requests) == ["a.jsonl", "sub/b.jsonl"]
        assert {a.to_user_string() for a in first.run_requests[0].asset_selection} == {
            "corpus_documents",
            "shard_embeddings",
        }
        assert sorted(instance.get_dynamic_partitions(CORPUS_SHARDS.name)) == [
            "a.jsonl",
            "sub/b.jsonl",
        ]

        quiet = tick(instance, tmp_path, first.cursor)
        assert not quiet.run_requests and not quiet.dynamic_partitions_requests

        write_jsonl([{"id": "1", "text": "one, rewritten"}], tmp_path / "a.jsonl")
        os.utime(tmp_path / "a.jsonl", ns=(1, 10**18))  # a distinct mtime even on coarse clocks
        (tmp_path / "sub" / "b.jsonl").unlink()
        changed = tick(instance, tmp_path, quiet.cursor)
        assert [r.partition_key for r in changed.run_requests] == ["a.jsonl"]
        assert instance.get_dynamic_partitions(CORPUS_SHARDS.name) == ["a.jsonl"]

        # A removal alone changes no upstream asset: the sensor starts the corpus-wide chain.
        (tmp_path / "a.jsonl").unlink()
        removed = tick(instance, tmp_path, changed.cursor)
        assert instance.get_dynamic_partitions(CORPUS_SHARDS.name) == []
        [request] = removed.run_requests
        assert request.partition_key is None
        assert [a.to_user_string() for a in request.asset_selection] == ["document_index"]


def test_an_edit_that_keeps_size_and_mtime_is_ingested_again(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_jsonl([{"id": "1", "text": "one"}], path)
    with dg.instance_for_test() as instance:
        first = tick(instance, tmp_path, None)
        os.utime(path, ns=(1, 10**18))  # touched only: hashed again, same bytes, no run
        touched = tick(instance, tmp_path, first.cursor)
        assert not touched.run_requests
        stat = path.stat()
        write_jsonl([{"id": "1", "text": "two"}], path)  # same size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        edited = tick(instance, tmp_path, touched.cursor)
        assert [r.partition_key for r in edited.run_requests] == ["a.jsonl"]
        assert edited.run_requests[0].run_key != first.run_requests[0].run_key


def test_missing_corpus_folder_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    with dg.instance_for_test() as instance, pytest.raises(Exception, match="does not exist"):
        tick(instance, tmp_path / "nowhere", None)
