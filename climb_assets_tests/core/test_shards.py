from __future__ import annotations

from pathlib import Path

from climb_assets.core.shards import diff_shards, discover_shards


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
