"""From any row of the final dataset back to its source file and line."""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from climb_assets.settings import Settings
from climb_assets.store import Layout


@dataclass(frozen=True)
class Trace:
    doc_id: str
    source_file: Path
    row: int  # 1-based line for JSONL shards, 0-based row for Parquet shards
    cluster: int
    super_cluster: int
    quality_score: float
    times_in_dataset: int
    source_record: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source_file": str(self.source_file)}


def _read_jsonl_line(path: Path, line: int) -> bytes:
    if path.name.endswith(".gz"):
        opener = gzip.open
    elif path.name.endswith(".zst"):
        import zstandard

        def opener(p: Path, mode: str):  # noqa: ANN202 - a binary stream
            return zstandard.open(p, mode)
    else:
        opener = open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == line:
                return raw
    raise LookupError(f"{path} has fewer than {line} lines: was the shard changed after the run?")


def source_record(path: Path, row: int) -> dict[str, Any]:
    """The original record of a shard file, read again from disk."""
    if not path.exists():
        raise FileNotFoundError(f"source shard {path} no longer exists")
    if path.suffix == ".parquet":
        frame = pl.scan_parquet(path).slice(row, 1).collect()
        if frame.height == 0:
            raise LookupError(f"{path} has no row {row}: was the shard changed after the run?")
        return frame.to_dicts()[0]
    return json.loads(_read_jsonl_line(path, row))


def trace(doc_id: str, settings: Settings) -> Trace:
    """Where a document of the final dataset came from."""
    layout = Layout(settings.output_dir)
    shards = layout.dataset_shards()
    if not shards:
        raise FileNotFoundError(f"no dataset under {layout.dataset}: run `climb run` first")
    rows = pl.scan_parquet(shards).filter(pl.col("doc_id") == doc_id).collect()
    if rows.height == 0:
        raise LookupError(f"document {doc_id!r} is not in the dataset at {layout.dataset}")
    first = rows.row(0, named=True)
    path = settings.corpus.path / first["shard"]
    return Trace(
        doc_id=doc_id,
        source_file=path,
        row=int(first["row"]),
        cluster=int(first["cluster"]),
        super_cluster=int(first["super_cluster"]),
        quality_score=float(first["quality_score"]),
        times_in_dataset=rows.height,
        source_record=source_record(path, int(first["row"])),
    )
