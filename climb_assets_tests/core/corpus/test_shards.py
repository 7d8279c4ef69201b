from __future__ import annotations

import os
from pathlib import Path

from climb_assets.core.corpus.shards import (
    content_fingerprint,
    diff_shards,
    discover_shards,
    fingerprint_shards,
    skipped_files,
    skipped_files_message,
)


def test_discover_matches_patterns_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    for name in ["a.jsonl", "x/b.parquet", "c.txt", ".d.jsonl", "x/.tmp.jsonl.gz"]:
        (tmp_path / name).write_text("{}")
    found = discover_shards(tmp_path, ["**/*.jsonl", "**/*.parquet", "**/*.jsonl.gz"])
    assert list(found) == ["a.jsonl", "x/b.parquet"]
    assert all(fp.startswith("2:") for fp in found.values())


def test_diff_reports_added_changed_removed() -> None:
    changes = diff_shards(
        {"a": "1:1", "b": "1:1", "c": "1:1"}, {"a": "1:1", "b": "2:5", "d": "3:3"}
    )
    assert (changes.added, changes.changed, changes.removed) == (["d"], ["b"], ["c"])
    assert not diff_shards({"a": "1"}, {"a": "1"}).any


def test_content_fingerprint_covers_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    data = bytearray(b"x" * (3 << 20))  # three hash chunks
    path.write_bytes(data)
    first = content_fingerprint(path)
    data[(2 << 20) + 5] = ord("y")  # one byte in the last chunk
    path.write_bytes(data)
    assert content_fingerprint(path) != first and len(first) == 32


def test_an_edit_that_keeps_size_and_mtime_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n')
    before = fingerprint_shards(tmp_path, discover_shards(tmp_path, ["*.jsonl"]), {})
    stat = path.stat()
    path.write_text('{"text": "two"}\n')  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as rsync -t or cp -p leave it
    now = fingerprint_shards(tmp_path, discover_shards(tmp_path, ["*.jsonl"]), before)
    assert diff_shards(before, now).changed == ["a.jsonl"]


def test_a_touched_file_is_hashed_again_but_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n')
    before = fingerprint_shards(tmp_path, discover_shards(tmp_path, ["*.jsonl"]), {})
    os.utime(path, ns=(1, 10**18))
    now = fingerprint_shards(tmp_path, discover_shards(tmp_path, ["*.jsonl"]), before)
    assert now != before and not diff_shards(before, now).any
    # an unchanged stat reuses the earlier hash instead of reading the file again
    fake = {"a.jsonl": now["a.jsonl"].rpartition("|")[0] + "|cached"}
    assert fingerprint_shards(tmp_path, discover_shards(tmp_path, ["*.jsonl"]), fake) == fake


def test_symlinks_are_shards_under_their_own_name_and_broken_ones_are_skipped(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (tmp_path / "outside.jsonl").write_text("{}\n")
    (corpus / "link.jsonl").symlink_to(tmp_path / "outside.jsonl")
    (corpus / "dead.jsonl").symlink_to(tmp_path / "nothing.jsonl")
    (corpus / "readme.md").write_text("about")
    (corpus / ".partial.jsonl").write_text("{")
    assert list(discover_shards(corpus, ["*.jsonl"])) == ["link.jsonl"]
    assert skipped_files(corpus, ["*.jsonl"]) == ["dead.jsonl (broken link)", "readme.md"]
    message = skipped_files_message(corpus, ["*.jsonl"], shown=1)
    assert message is not None and "2 path(s)" in message and message.endswith("and 1 more")
    assert skipped_files_message(corpus, ["*.jsonl", "*.md", "dead.jsonl"]) is not None


def test_a_folder_named_like_a_shard_is_named_unless_it_holds_shards(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").mkdir()  # a shard replaced by a folder
    (tmp_path / "b.jsonl" / "notes.txt").write_text("x")
    (tmp_path / "data.parquet").mkdir()  # a Spark-style folder of part files
    (tmp_path / "data.parquet" / "part-0.parquet").write_bytes(b"PAR1")
    patterns = ["**/*.jsonl", "**/*.parquet"]
    assert list(discover_shards(tmp_path, patterns)) == ["data.parquet/part-0.parquet"]
    assert skipped_files(tmp_path, patterns) == ["b.jsonl (a folder)", "b.jsonl/notes.txt"]


def test_hashing_stops_at_the_time_budget_and_resumes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(f'{{"text": "{name}"}}\n')
    stats = discover_shards(tmp_path, ["*.jsonl"])
    assert fingerprint_shards(tmp_path, stats, {}, seconds=0) == {}  # nothing hashed yet
    old = {"a.jsonl": "0:0:0:0|earlier"}
    assert fingerprint_shards(tmp_path, stats, old, seconds=0) == old  # kept for next time
    full = fingerprint_shards(tmp_path, stats, old, seconds=60)
    assert list(full) == ["a.jsonl", "b.jsonl"] and "earlier" not in full["a.jsonl"]
