"""Write the sampled dataset: its rows beside their text, as zstd Parquet shards named the way
Hugging Face datasets names them (`data-00000-of-00003.parquet`, ...).

The text streams by in corpus order and is spilled to one temporary file per output shard (inside
the dataset's temporary folder), each shard read back on its own: memory follows the batch size
and one shard, never the corpus's text. The folder replaces the old dataset as a whole.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from climb_assets.core.dataset.build import META_COLUMNS, SAMPLED_COLUMNS, DatasetError
from climb_assets.core.shared.atomic import atomic_dir

# The dataset's columns: the text right after the id, as before sampling went text-free.
OUTPUT_COLUMNS: tuple[str, ...] = ("doc_id", "text", *META_COLUMNS[1:], "repeat")
TEXT_COLUMNS: tuple[str, ...] = ("shard", "row", "text")
SHARD_GLOB = "data-*.parquet"
# Inside the dataset's temporary folder, so a failed write takes its spill files along.
SPILL_DIR = ".spill"
_SPILL_SCHEMA = pa.schema([("position", pa.int64()), ("text", pa.large_string())])


def shard_names(n_shards: int) -> list[str]:
    """Hugging Face datasets' names: data-00000-of-00003.parquet, ..."""
    return [f"data-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]


def write_dataset(
    sampled: pl.DataFrame,
    text_batches: Iterable[pl.DataFrame],
    out_dir: Path,
    rows_per_shard: int,
    extra_files: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the sampled rows with their text as zstd parquet shards (and e.g. {"README.md":
    card}) into `out_dir`; output row i goes to shard i // rows_per_shard.

    `text_batches` streams `TEXT_COLUMNS` of every sampled document exactly once, in any order and
    batch size; documents not sampled are skipped. A sampled row whose text never arrives (or
    arrives twice) is an error. The folder is built under a temporary name and replaces `out_dir`
    as a whole, so readers see either the old dataset or the new one. An empty sample still gives
    one (empty) shard, so `data-*.parquet` always matches. Returns the final shard paths.
    """
    _check_write_args(sampled, rows_per_shard, extra_files)
    out_dir = Path(out_dir)
    names = shard_names(max(1, math.ceil(sampled.height / rows_per_shard)))
    with atomic_dir(out_dir) as tmp:
        spill = tmp / SPILL_DIR
        _spill_text(sampled, text_batches, spill, rows_per_shard)
        for index, name in enumerate(names):
            rows = sampled.slice(index * rows_per_shard, rows_per_shard)
            _write_shard(rows, _read_spill(spill, index), tmp / name)
        shutil.rmtree(spill)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return [out_dir / name for name in names]


def _check_write_args(
    sampled: pl.DataFrame, rows_per_shard: int, extra_files: Mapping[str, str] | None
) -> None:
    if rows_per_shard <= 0:
        raise DatasetError(f"rows_per_shard = {rows_per_shard!r}: must be positive")
    missing = [c for c in SAMPLED_COLUMNS if c not in sampled.columns]
    if missing:
        raise DatasetError(f"sampled: missing column(s) {missing}; have {sampled.columns}")
    for name in extra_files or {}:
        if Path(name).name != name or name.startswith("data-"):
            raise DatasetError(f"extra_files: {name!r} must be a plain file name, not data-*")


def _spill_text(
    sampled: pl.DataFrame,
    text_batches: Iterable[pl.DataFrame],
    directory: Path,
    rows_per_shard: int,
) -> None:
    """Append each sampled row's (position, text) to its output shard's spill file: the stream
    comes in corpus order, the output wants sampled order, and neither fits in memory whole."""
    directory.mkdir()
    wanted = _positions_by_shard(sampled)
    arrivals = np.zeros(sampled.height, dtype=np.int64)
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch in text_batches:
            found = _match(batch, wanted)
            np.add.at(arrivals, found["position"].to_numpy(), 1)
            for index, table in _by_output_shard(found, rows_per_shard):
                if index not in writers:
                    path = _spill_path(directory, index)
                    writers[index] = pq.ParquetWriter(path, _SPILL_SCHEMA, compression="zstd")
                writers[index].write_table(table)
    finally:
        for writer in writers.values():
            writer.close()
    _require_each_text_once(sampled, arrivals)


def _positions_by_shard(sampled: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Output positions (row, position) of the sampled documents per corpus shard, so a batch is
    matched against its own shard's rows only; a repeated document has one position per use."""
    positions = sampled.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("position"),
        "shard",
        pl.col("row").cast(pl.Int64),
    )
    by_shard = positions.partition_by("shard", as_dict=True, include_key=False)
    return {str(key[0]): frame for key, frame in by_shard.items()}


def _match(batch: pl.DataFrame, wanted: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """(position, text) of the batch's sampled documents, once per use."""
    missing = [c for c in TEXT_COLUMNS if c not in batch.columns]
    if missing:
        raise DatasetError(f"text batch: missing column(s) {missing}; have {batch.columns}")
    texts = batch.select("shard", pl.col("row").cast(pl.Int64), pl.col("text").cast(pl.String))
    parts = [
        wanted[str(key[0])].join(part, on="row", how="inner").select("position", "text")
        for key, part in texts.partition_by("shard", as_dict=True, include_key=False).items()
        if str(key[0]) in wanted
    ]
    return pl.concat([pl.DataFrame(schema={"position": pl.Int64, "text": pl.String}), *parts])


def _by_output_shard(found: pl.DataFrame, rows_per_shard: int) -> Iterator[tuple[int, pa.Table]]:
    shard_of = (pl.col("position") // rows_per_shard).alias("output_shard")
    parts = found.with_columns(shard_of).partition_by("output_shard", as_dict=True)
    for key, part in parts.items():
        yield int(key[0]), part.select("position", "text").to_arrow().cast(_SPILL_SCHEMA)


def _require_each_text_once(sampled: pl.DataFrame, arrivals: np.ndarray) -> None:
    for bad, what in ((arrivals == 0, "never arrived"), (arrivals > 1, "arrived more than once")):
        positions = np.flatnonzero(bad)
        if len(positions):
            shard, row = sampled.select("shard", "row").row(int(positions[0]))
            raise DatasetError(
                f"text of sampled document shard={shard!r} row={row} {what} in the text stream "
                f"({len(positions)} output row(s) affected)"
            )


def _spill_path(directory: Path, index: int) -> Path:
    return directory / f"{index:05d}.parquet"


def _read_spill(directory: Path, index: int) -> pl.DataFrame:
    """One output shard's (position, text), in output order."""
    path = _spill_path(directory, index)
    if not path.exists():  # only an empty sample has a shard without text
        return pl.DataFrame(schema={"position": pl.Int64, "text": pl.String})
    return pl.read_parquet(path).sort("position")


def _write_shard(rows: pl.DataFrame, texts: pl.DataFrame, path: Path) -> None:
    """`rows`' metadata beside their text (`texts` holds exactly their positions, in order)."""
    shard = rows.with_columns(texts["text"]).select(OUTPUT_COLUMNS)
    shard.write_parquet(path, compression="zstd", statistics=True)
