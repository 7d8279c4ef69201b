"""Find corpus shard files and tell which were added, changed or removed since the last look.

A shard's identity is its content: `content_fingerprint` hashes every byte, so an edit that keeps
the size and modification time (`rsync -t`, `cp -p`, a restored mtime) is still seen. The file's
stat (size, mtime, inode, ctime) only tells when hashing again can be skipped.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

_HASH_CHUNK_BYTES = 1 << 20


def content_fingerprint(path: Path) -> str:
    """Hex BLAKE2b-128 of the file's bytes, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def stat_key(path: Path) -> str:
    """'size:mtime_ns:inode:ctime_ns' of the file (a symlink's target). ctime changes on every
    write and cannot be set back, so an equal key means the bytes were not rewritten."""
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_ctime_ns}"


def shard_key_for(path: Path, corpus_root: Path) -> str:
    """Partition key of a shard file: its path relative to the corpus folder, with '/'.

    Taken as written, not resolved: a symlink in the corpus folder is a shard under its own
    name wherever its target lies (reading it follows the link)."""
    return Path(path).relative_to(Path(corpus_root)).as_posix()


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def discover_shards(root: Path, patterns: list[str]) -> dict[str, str]:
    """Shard key -> `stat_key` of every file under `root` matching a pattern.

    A stat is cheap to read for thousands of files; hidden files (a writer's temporary files)
    are ignored. See `fingerprint_shards` for what decides that a shard changed.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder {root} does not exist")
    found: dict[str, str] = {}
    for pattern in patterns:
        for path in root.glob(pattern):
            if path.is_file() and not _hidden(path, root):  # is_file follows symlinks
                found[shard_key_for(path, root)] = stat_key(path)
    return dict(sorted(found.items()))


def skipped_files(root: Path, patterns: list[str]) -> list[str]:
    """Files under `root` that are not shards: no pattern names them, or they are links to
    nothing (marked '(broken link)'), and folders named like a shard that hold none (marked
    '(a folder)': a shard replaced by a folder, say). Hidden files are a writer's business and
    not listed."""
    root = Path(root)
    if not root.is_dir():
        return []
    shards = discover_shards(root, patterns)
    named_like_shards = {path for pattern in patterns for path in root.glob(pattern)}
    skipped = []
    for path in sorted(root.rglob("*")):
        key = shard_key_for(path, root)
        if key in shards or _hidden(path, root):
            continue
        if path.is_dir():
            # A Spark-style `data.parquet/` folder of part files holds shards: not listed.
            if path in named_like_shards and not any(s.startswith(f"{key}/") for s in shards):
                skipped.append(f"{key} (a folder)")
            continue
        skipped.append(f"{key} (broken link)" if not path.exists() else key)
    return skipped


def skipped_files_message(root: Path, patterns: list[str], shown: int = 20) -> str | None:
    """A one-line warning naming the files under `root` that are not read, if any."""
    skipped = skipped_files(root, patterns)
    if not skipped:
        return None
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return (
        f"{len(skipped)} path(s) under {root} are not read as shards (no pattern of "
        f"corpus.patterns {patterns} names them): {', '.join(skipped[:shown])}{more}"
    )


def content_of(fingerprint: str) -> str:
    """The content hash of a 'stat|content' fingerprint (all of an older, stat-only one)."""
    return fingerprint.rpartition("|")[2]


def fingerprint_shards(
    root: Path, stats: dict[str, str], before: dict[str, str], seconds: float | None = None
) -> dict[str, str]:
    """Shard key -> 'stat|content hash'. A shard whose stat equals the one in `before` keeps its
    earlier hash; any other is hashed again, until `seconds` have passed (a sensor tick must
    end): the rest keep their entry of `before`, or are left out if new, for the next call."""
    deadline = None if seconds is None else time.monotonic() + seconds
    found = {}
    for shard, stat in stats.items():
        old = before.get(shard)
        old_stat, _, old_content = (old or "").rpartition("|")
        if old is not None and old_stat == stat and old_content:
            found[shard] = old
        elif deadline is None or time.monotonic() < deadline:
            found[shard] = f"{stat}|{content_fingerprint(Path(root) / shard)}"
        elif old is not None:
            found[shard] = old
    return found


@dataclass(frozen=True)
class ShardChanges:
    added: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff_shards(before: dict[str, str], now: dict[str, str]) -> ShardChanges:
    """Changes by content: a shard whose stat changed but whose bytes did not is unchanged."""
    common = set(now) & set(before)
    return ShardChanges(
        added=sorted(set(now) - set(before)),
        changed=sorted(k for k in common if content_of(now[k]) != content_of(before[k])),
        removed=sorted(set(before) - set(now)),
    )


def missing_shard_files_message(reader: str, missing: dict[str, list[str]]) -> str | None:
    """What `reader` needs first when registered shards lack per-shard outputs: `missing` maps
    each upstream asset to the shards (its partitions, or the shards it has not covered yet)
    without its file. None when nothing is missing."""
    wanted = [(asset, shards) for asset, shards in missing.items() if shards]
    if not wanted:
        return None
    shards = sorted({s for _, these in wanted for s in these})
    steps = "; then ".join(f"{asset} for {', '.join(these)}" for asset, these in wanted)
    return (
        f"{reader} cannot run yet: shard(s) {', '.join(shards)} are registered but not "
        f"processed. Materialize {steps} first (while `dg dev` runs, its sensor and "
        "automation do this by themselves)."
    )
