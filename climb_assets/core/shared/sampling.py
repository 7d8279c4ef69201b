"""Seeded samples of documents that do not depend on where or in what order they are read: a
document is in when a uniform hashed from the seed and its id falls below the fraction asked
for, so a shard's task, a retry on another node and a rerun with other batch sizes all agree."""

from __future__ import annotations

import hashlib


def keep_fraction(available: int, wanted: int) -> float:
    """The fraction of `available` items that leaves about `wanted` (1 when there are no more)."""
    return min(1.0, wanted / available) if available > 0 else 1.0


def is_kept(doc_id: str, fraction: float, seed: int) -> bool:
    """Whether a document is in a sample of `fraction` of its group (blake2b: stable across
    processes, machines and library versions, unlike Python's or polars' hashes)."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / 2**53 < fraction
