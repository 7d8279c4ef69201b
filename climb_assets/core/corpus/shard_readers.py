"""Read the records of one corpus shard file, whatever its format.

Formats: `.jsonl`, `.jsonl.gz`, `.jsonl.zst` (one JSON object per line) and `.parquet`. A record
is either a text with its id or, when the line or row cannot give one, a reject reason with what
exactly was wrong. Blank JSONL lines are not records: they are skipped without a trace (a trailing
newline at the end of a file is common and harmless).

`row` numbers a record within its shard: the 1-based line number for JSONL (blank lines counted,
so it matches what an editor shows) and the 0-based row index for Parquet (what polars, pyarrow
and DuckDB show). A record without an id gets `"<shard key>:<row>"`, unique across the corpus
(a bare row number would collide between shards).

`raw` keeps the original bytes: the JSONL line without its line terminator, or the Parquet text
cell (null when the cell is null).

A shard that cannot be read at all raises `ShardReadError`: a truncated gzip or zstd stream fails
the whole shard even though its first lines could be decoded.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from climb_assets.settings import CorpusSettings

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")

_READ_CHUNK_BYTES = 1 << 20
_UTF8_BOM = b"\xef\xbb\xbf"


class ShardReadError(Exception):
    """The shard file as a whole cannot be read; the message names the file and the cause."""


# --- records: what a reader extracts from one line or row ---------------------------------------


@dataclass(frozen=True)
class Record:
    row: int
    raw: bytes | None
    doc_id: str | None
    text: str | None = None  # set when the reader found a text string
    reason: str | None = None  # else the reject reason ...
    detail: str = ""  # ... and what exactly was wrong


def derived_id(shard: str, row: int) -> str:
    """The id of a record that has none: its shard key and row, unique across the corpus."""
    return f"{shard}:{row}"


def id_string(value: Any, shard: str, row: int) -> str:
    """Ids may be strings, numbers or anything JSON; absent, null or "" become derived_id."""
    if value is None or value == "":
        return derived_id(shard, row)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    # a JSON "\ud800" escape decodes to a lone surrogate that UTF-8 (and Arrow) cannot store
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _text_record(row: int, raw: bytes | None, doc_id: str, value: Any, field: str) -> Record:
    if isinstance(value, str):
        return Record(row, raw, doc_id, text=value)
    detail = f"field '{field}' is {_json_type(value)}, not a string"
    return Record(row, raw, doc_id, reason="missing_text", detail=detail)


def _json_record(row: int, raw: bytes, corpus: CorpusSettings, shard: str) -> Record:
    try:
        line = raw.removeprefix(_UTF8_BOM).decode("utf-8") if row == 1 else raw.decode("utf-8")
    except UnicodeDecodeError as err:
        detail = f"invalid UTF-8 at byte {err.start}: {err.reason}"
        return Record(row, raw, None, reason="invalid_utf8", detail=detail)
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as err:
        detail = f"invalid JSON: {err}"
        return Record(row, raw, None, reason="unparseable", detail=detail)
    if not isinstance(value, dict):
        detail = f"expected a JSON object, got {_json_type(value)}"
        return Record(row, raw, None, reason="unparseable", detail=detail)
    doc_id = id_string(value.get(corpus.id_field), shard, row)
    if corpus.text_field not in value:
        detail = f"no field '{corpus.text_field}' (fields: {', '.join(map(str, value))})"
        return Record(row, raw, doc_id, reason="missing_text", detail=detail)
    return _text_record(row, raw, doc_id, value[corpus.text_field], corpus.text_field)


# --- readers --------------------------------------------------------------------------------------


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(_READ_CHUNK_BYTES):
        yield chunk


def _zstd_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """Decompressed chunks of a (multi-frame) zstd stream; raises EOFError if it is truncated.

    zstandard's stream_reader ends quietly at a truncated frame, which would keep half a shard.
    """
    decompressor = zstandard.ZstdDecompressor()
    frame = decompressor.decompressobj()
    inside_frame = False
    for data in _chunks(stream):
        while data:
            if out := frame.decompress(data):
                yield out
            inside_frame = True
            data = b""
            if frame.eof:  # a frame ended; what follows starts a new one
                data, frame, inside_frame = frame.unused_data, decompressor.decompressobj(), False
    if inside_frame:
        raise EOFError("zstd stream ended in the middle of a frame")


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines without their terminator ("\\n" or "\\r\\n"); pieces are joined once per line."""
    pending: list[bytes] = []
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            pending.append(chunk)
            continue
        pending.append(parts[0])
        yield b"".join(pending).removesuffix(b"\r")
        for part in parts[1:-1]:
            yield part.removesuffix(b"\r")
        pending = [parts[-1]]
    if last := b"".join(pending).removesuffix(b"\r"):
        yield last


def _jsonl_records(chunks: Iterable[bytes], corpus: CorpusSettings, shard: str) -> Iterator[Record]:
    for row, raw in enumerate(_lines(chunks), start=1):
        if raw.strip():
            yield _json_record(row, raw, corpus, shard)


def _file_jsonl_records(
    path: Path, corpus: CorpusSettings, suffix: str, shard: str
) -> Iterator[Record]:
    with open(path, "rb") as file:
        if suffix == ".jsonl.gz":
            with gzip.GzipFile(fileobj=file) as stream:
                yield from _jsonl_records(_chunks(stream), corpus, shard)
        elif suffix == ".jsonl.zst":
            yield from _jsonl_records(_zstd_chunks(file), corpus, shard)
        else:
            yield from _jsonl_records(_chunks(file), corpus, shard)


def _check_text_column(path: Path, schema: pa.Schema, field: str) -> None:
    if field not in schema.names:
        columns = ", ".join(schema.names)
        raise ShardReadError(
            f"{path}: parquet shard has no text column '{field}' (columns: {columns})"
        )
    kind = schema.field(field).type
    text_like = (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_binary_view(kind)
    )
    if not text_like:
        raise ShardReadError(f"{path}: column '{field}' has type {kind}, expected string or binary")


def _parquet_records(
    path: Path, corpus: CorpusSettings, batch_rows: int, shard: str
) -> Iterator[Record]:
    """Rows in batches of `batch_rows`; text is read as bytes so bad UTF-8 rejects one row only."""
    with pq.ParquetFile(path) as file:
        schema = file.schema_arrow
        _check_text_column(path, schema, corpus.text_field)
        has_id = corpus.id_field in schema.names and corpus.id_field != corpus.text_field
        columns = [corpus.text_field] + ([corpus.id_field] if has_id else [])
        row = 0
        for batch in file.iter_batches(batch_size=batch_rows, columns=columns):
            cells = batch.column(corpus.text_field).cast(pa.large_binary()).to_pylist()
            ids = batch.column(corpus.id_field).to_pylist() if has_id else [None] * len(cells)
            for raw, id_value in zip(cells, ids, strict=True):
                doc_id = id_string(id_value, shard, row)
                yield _parquet_record(row, raw, doc_id, corpus.text_field)
                row += 1


def _parquet_record(row: int, raw: bytes | None, doc_id: str, field: str) -> Record:
    if raw is None:
        return _text_record(row, raw, doc_id, None, field)
    try:
        return Record(row, raw, doc_id, text=raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        detail = f"invalid UTF-8 at byte {err.start}: {err.reason}"
        return Record(row, raw, doc_id, reason="invalid_utf8", detail=detail)


_READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError, pa.ArrowException)
_FORMAT_NAMES = {
    ".jsonl": "JSONL file",
    ".jsonl.gz": "gzip-compressed JSONL",
    ".jsonl.zst": "zstd-compressed JSONL",
    ".parquet": "parquet file",
}


def _shard_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SHARD_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise ShardReadError(
        f"{path}: unknown shard format; expected a name ending in {', '.join(SHARD_SUFFIXES)}"
    )


def read_records(
    path: Path, corpus: CorpusSettings, batch_rows: int, shard: str
) -> Iterator[Record]:
    """Records in file order; any failure to read the file becomes a ShardReadError."""
    suffix = _shard_suffix(path)
    if not path.is_file():
        raise ShardReadError(f"{path}: shard file does not exist")
    if suffix == ".parquet":
        records = _parquet_records(path, corpus, batch_rows, shard)
    else:
        records = _file_jsonl_records(path, corpus, suffix, shard)
    try:
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except _READ_ERRORS as err:
                kind = _FORMAT_NAMES[suffix]
                raise ShardReadError(f"{path}: cannot read {kind}: {err}") from err
            yield record
    finally:
        records.close()  # closes the file now, also when the caller stops early


def require_visible(path: Path, where: str) -> None:
    """Fail naming the file and `where` (a Ray node) when the shard file is not there: a corpus
    folder that is not mounted on every node, told plainly rather than as a reader's error."""
    if not path.is_file():
        raise ShardReadError(
            f"{path}: shard file not found on {where}; every Ray node needs the corpus folder "
            "at the same path (NFS, a shared volume)"
        )


def raw_records(
    path: Path, shard_key: str, corpus: CorpusSettings, rows: set[int]
) -> dict[int, bytes | None]:
    """The original bytes of some records of a shard (see `raw` in the module docstring), read
    again from the file: rejects found after processing keep their record too."""
    found: dict[int, bytes | None] = {}
    for record in read_records(Path(path), corpus, 4096, shard_key):
        if record.row in rows:
            found[record.row] = record.raw
            if len(found) == len(rows):  # the rest of the file is not needed
                break
    return found
