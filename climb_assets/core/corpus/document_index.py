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

import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl

from climb_assets.core.corpus.documents import REJECT_SCHEMA
from climb_assets.core.corpus.shard_readers import ShardReadError, raw_records
from climb_assets.core.corpus.shards import missing_shard_files_message
from climb_assets.core.shared.atomic import atomic_path
from climb_assets.settings import CorpusSettings

INDEX_COLUMNS = ["doc_id", "shard", "row", "content_hash", "n_tokens", "quality_score"]
CROSS_SHARD_SCHEMA: dict[str, pl.DataType] = {
    **REJECT_SCHEMA,
    "content_hash": pl.Utf8(),
    "kept_shard": pl.Utf8(),
    "kept_row": pl.Int64(),
}

# Each document with the first (shard, row) holding its text, then, among the first holders of
# each text, the first holding its id. DuckDB runs the windows out of core: memory stays within
# its limit (spilling to disk) however large the corpus.
_RANKED = f"""
CREATE TEMP TABLE by_text AS
SELECT {", ".join(INDEX_COLUMNS)},
       first_value(shard) OVER text_owner AS text_shard,
       first_value("row") OVER text_owner AS text_row
FROM docs
WINDOW text_owner AS (PARTITION BY content_hash ORDER BY shard, "row");

CREATE TEMP TABLE by_id AS
SELECT {", ".join(INDEX_COLUMNS)},
       first_value(shard) OVER id_owner AS id_shard,
       first_value("row") OVER id_owner AS id_row
FROM by_text
WHERE shard = text_shard AND "row" = text_row
WINDOW id_owner AS (PARTITION BY doc_id ORDER BY shard, "row");
"""
_KEPT = f"""
SELECT {", ".join(INDEX_COLUMNS)} FROM by_id
WHERE shard = id_shard AND "row" = id_row
ORDER BY shard, "row"
"""
_REJECTS = """
SELECT shard, "row", doc_id, content_hash, text_shard AS kept_shard, text_row AS kept_row,
       'duplicate' AS reason
FROM by_text WHERE NOT (shard = text_shard AND "row" = text_row)
UNION ALL
SELECT shard, "row", doc_id, content_hash, id_shard, id_row, 'duplicate_id'
FROM by_id WHERE NOT (shard = id_shard AND "row" = id_row)
ORDER BY shard, "row"
"""


def build_document_index(
    shards: list[str],
    documents_path: Callable[[str], Path],
    index_path: Path,
    memory_mb: int = 1024,
) -> pl.DataFrame:
    """Write the kept documents of `shards` to `index_path` (atomically, in (shard, row) order)
    and return the cross-shard rejects without their raw bytes.

    The corpus is never held in memory: DuckDB reads the shards' index columns (no text) and
    spills what exceeds `memory_mb` to a temporary folder beside `index_path`.
    """
    missing = [s for s in shards if not documents_path(s).exists()]
    if message := missing_shard_files_message("document_index", {"corpus_documents": missing}):
        raise FileNotFoundError(message)
    if not shards:
        raise ValueError("no corpus shards are registered; add shard files to the corpus folder")
    files = [str(documents_path(s)) for s in sorted(shards)]
    index_path = Path(index_path)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".index-spill.", dir=index_path.parent) as spill,
        duckdb.connect(config={"memory_limit": f"{memory_mb}MB", "temp_directory": spill}) as con,
    ):
        con.read_parquet(files).select(", ".join(INDEX_COLUMNS)).create_view("docs")
        con.execute(_RANKED)
        with atomic_path(index_path) as tmp:
            con.execute(f"COPY ({_KEPT}) TO '{_quoted(tmp)}' (FORMAT parquet, COMPRESSION zstd)")
        rejects = con.sql(_REJECTS).pl()
    return _as_rejects(rejects)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


_DETAILS = {
    "duplicate": "same text as {} row {}",
    "duplicate_id": "id already used by {} row {} with a different text",
}


def _as_rejects(frame: pl.DataFrame) -> pl.DataFrame:
    """DuckDB's reject rows in the cross-shard reject schema (raw bytes still to be read)."""
    detail = pl.when(pl.col("reason") == "duplicate")
    detail = detail.then(pl.format(_DETAILS["duplicate"], "kept_shard", "kept_row"))
    detail = detail.otherwise(pl.format(_DETAILS["duplicate_id"], "kept_shard", "kept_row"))
    return (
        frame.with_columns(detail.alias("detail"), pl.lit(None, pl.Binary).alias("raw"))
        .select(list(CROSS_SHARD_SCHEMA))
        .cast(CROSS_SHARD_SCHEMA)
    )


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
