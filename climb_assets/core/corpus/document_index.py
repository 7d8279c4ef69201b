"""The corpus-wide document index: every kept document of every shard, each text and each id once.

Shards are processed one at a time, so a text or an id repeated in two shards passes both.
Here the first occurrence in (shard key, row) order wins, whatever order the shards were
processed in, and every other one becomes a reject:

- `duplicate`: the same (normalized) text as a kept document, whatever the id;
- `duplicate_id`: a different text under the id of a kept document.

The rejects have the columns of a shard's rejects (their raw record read again from the source
file) plus `content_hash`, `kept_shard` and `kept_row`: which document won.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from climb_assets.core.corpus.documents import REJECT_SCHEMA, ShardReadError, raw_records
from climb_assets.core.corpus.shards import missing_shard_files_message
from climb_assets.settings import CorpusSettings

INDEX_COLUMNS = ["doc_id", "shard", "row", "content_hash", "n_tokens", "quality_score"]
CROSS_SHARD_SCHEMA: dict[str, pl.DataType] = {
    **REJECT_SCHEMA,
    "content_hash": pl.Utf8(),
    "kept_shard": pl.Utf8(),
    "kept_row": pl.Int64(),
}


def build_document_index(
    shards: list[str], documents_path: Callable[[str], Path]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept documents, cross-shard rejects without their raw bytes) of `shards`."""
    missing = [s for s in shards if not documents_path(s).exists()]
    if message := missing_shard_files_message("document_index", {"corpus_documents": missing}):
        raise FileNotFoundError(message)
    if not shards:
        raise ValueError("no corpus shards are registered; add shard files to the corpus folder")
    frames = [pl.scan_parquet(documents_path(s)).select(INDEX_COLUMNS) for s in sorted(shards)]
    every = pl.concat(frames).collect().sort("shard", "row")
    unique_text, text_dupes = _first_wins(every, "content_hash", "duplicate")
    kept, id_dupes = _first_wins(unique_text, "doc_id", "duplicate_id")
    rejects = pl.concat([text_dupes, id_dupes]).sort("shard", "row")
    return kept, rejects


_DETAILS = {
    "duplicate": "same text as {} row {}",
    "duplicate_id": "id already used by {} row {} with a different text",
}


def _first_wins(frame: pl.DataFrame, key: str, reason: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows whose `key` comes first (frame is in shard, row order), and the others as rejects."""
    first = frame.select(pl.int_range(pl.len()).over(key).alias("_n")).to_series() == 0
    kept, losers = frame.filter(first), frame.filter(~first)
    owner = kept.select(key, pl.col("shard").alias("kept_shard"), pl.col("row").alias("kept_row"))
    rejects = losers.join(owner, on=key, how="left", maintain_order="left").with_columns(
        pl.lit(reason).alias("reason"),
        pl.format(_DETAILS[reason], "kept_shard", "kept_row").alias("detail"),
        pl.lit(None, pl.Binary).alias("raw"),
    )
    return kept, rejects.select(list(CROSS_SHARD_SCHEMA)).cast(CROSS_SHARD_SCHEMA)


def with_raw_records(
    rejects: pl.DataFrame, corpus: CorpusSettings, shard_path: Callable[[str], Path]
) -> pl.DataFrame:
    """`rejects` with `raw` read again from each source file (null where it is unreadable)."""
    if rejects.height == 0:
        return rejects
    raw: dict[tuple[str, int], bytes | None] = {}
    for shard, rows in rejects.group_by("shard").agg("row").iter_rows():
        try:
            found = raw_records(shard_path(shard), shard, corpus, set(rows))
        except ShardReadError:  # removed or rewritten since; the reject row still stands
            found = {}
        raw.update({(shard, row): value for row, value in found.items()})
    column = [raw.get((shard, row)) for shard, row in rejects.select("shard", "row").iter_rows()]
    return rejects.with_columns(pl.Series("raw", column, dtype=pl.Binary))
