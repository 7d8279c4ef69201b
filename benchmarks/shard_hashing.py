"""How much a shard's content fingerprint costs: BLAKE2b over every byte, in MB/s.

    .venv/bin/python benchmarks/shard_hashing.py [--mb 300] [--repeats 3]

Every `climb run` hashes every shard (an edit that keeps size and mtime must still be seen);
this prints the throughput on a file of random bytes and how long the bundled sample takes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from climb_assets.core.corpus.shards import content_fingerprint

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "corpus"


def seconds_to_hash(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        content_fingerprint(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="size of the random file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "shard.bin"
        with open(path, "wb") as file:
            for _ in range(args.mb):
                file.write(os.urandom(1 << 20))
        best = min(seconds_to_hash([path]) for _ in range(args.repeats))
    print(f"random file: {args.mb} MiB in {best:.2f} s = {args.mb / best:.0f} MiB/s")
    shards = sorted(p for p in SAMPLE.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in shards) / (1 << 20)
    best = min(seconds_to_hash(shards) for _ in range(args.repeats))
    print(f"bundled sample: {len(shards)} shards, {size:.1f} MiB in {best * 1000:.1f} ms")


if __name__ == "__main__":
    main()
