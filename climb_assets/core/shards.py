"""Find corpus shard files and tell which were added, changed or removed since the last look."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def shard_key_for(path: Path, corpus_root: Path) -> str:
    """Partition key of a shard file: its path relative to the corpus folder, with '/'."""
    return Path(path).resolve().relative_to(Path(corpus_root).resolve()).as_posix()


def discover_shards(root: Path, patterns: list[str]) -> dict[str, str]:
    """Shard key -> fingerprint ('size:mtime_ns') of every file under `root` matching a pattern.

    Size and modification time are cheap to read for thousands of files and change whenever a
    file is rewritten; hidden files (a writer's temporary files) are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder {root} does not exist")
    found: dict[str, str] = {}
    for pattern in patterns:
        for path in root.glob(pattern):
            if not path.is_file() or any(p.startswith(".") for p in path.relative_to(root).parts):
                continue
            stat = path.stat()
            found[shard_key_for(path, root)] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class ShardChanges:
    added: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff_shards(before: dict[str, str], now: dict[str, str]) -> ShardChanges:
    return ShardChanges(
        added=sorted(set(now) - set(before)),
        changed=sorted(k for k in set(now) & set(before) if now[k] != before[k]),
        removed=sorted(set(before) - set(now)),
    )
