"""From any row of the final dataset back to its source file and line.

A trace is only worth something if the record found there is the one ingested: a line inserted
above it, or an edited record, would otherwise show another document's record. So the record
read back must carry the traced document's id and, normalized as ingest normalizes, its text
(the dataset row holds it, so no hash needs recording at ingest); anything else refuses in
one line."""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from climb_assets.core.corpus.documents import normalize_text

# id_string: the rule ingest derives ids by, so a trace compares like with like
from climb_assets.core.corpus.shard_readers import id_string
from climb_assets.settings import CorpusSettings, Settings
from climb_assets.store import Layout


class SourceChanged(LookupError):
    """The source shard no longer holds the traced document where ingest found it."""


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
    raise SourceChanged(_changed(path, f"it has fewer than {line} lines now"))


def _changed(path: Path, what: str) -> str:
    return f"{path} changed since ingest ({what}); rerun `climb run`"


def _position(path: Path, row: int) -> str:
    return f"row {row}" if path.suffix == ".parquet" else f"line {row}"


def source_record(path: Path, row: int) -> dict[str, Any]:
    """The original record of a shard file, read again from disk."""
    if not path.exists():
        raise FileNotFoundError(f"source shard {path} no longer exists")
    if path.suffix == ".parquet":
        frame = pl.scan_parquet(path).slice(row, 1).collect()
        if frame.height == 0:
            raise SourceChanged(_changed(path, f"it has no row {row} now"))
        return frame.to_dicts()[0]
    try:
        record = json.loads(_read_jsonl_line(path, row))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SourceChanged(_changed(path, f"line {row} is no JSON record now")) from err
    if not isinstance(record, dict):
        raise SourceChanged(_changed(path, f"line {row} is no JSON record now"))
    return record


def check_source(
    record: dict[str, Any], traced: dict[str, Any], path: Path, corpus: CorpusSettings
) -> None:
    """Raise SourceChanged unless `record`, read at the traced row's shard and row, is the
    traced document: the same id, derived by ingest's own rule (a record without one gets its
    shard and row, so a shifted line is then caught by its text), and the same text once
    normalized as ingest stores it."""
    row = int(traced["row"])
    id_value = record.get(corpus.id_field)
    if path.suffix == ".parquet" and corpus.id_field == corpus.text_field:
        id_value = None  # ingest derives the ids of such a shard
    found_id = id_string(id_value, traced["shard"], row)
    found_text = record.get(corpus.text_field)
    if isinstance(found_text, bytes):  # a binary Parquet text column, decoded as ingest does
        found_text = found_text.decode("utf-8", "replace")
    if found_id != traced["doc_id"]:
        now = "another record"
    elif not isinstance(found_text, str) or normalize_text(found_text) != traced["text"]:
        now = "the same id with other text"
    else:
        return
    raise SourceChanged(_changed(path, f"{_position(path, row)} now holds {now}"))


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
    row = int(first["row"])
    record = source_record(path, row)
    # Against the dataset's own row (its text is the document's as ingested) rather than the
    # documents files: those may have been re-ingested since, and would agree with the change.
    check_source(record, first, path, settings.corpus)
    return Trace(
        doc_id=doc_id,
        source_file=path,
        row=row,
        cluster=int(first["cluster"]),
        super_cluster=int(first["super_cluster"]),
        quality_score=float(first["quality_score"]),
        times_in_dataset=rows.height,
        source_record=record,
    )
