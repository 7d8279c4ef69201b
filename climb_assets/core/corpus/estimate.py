"""How big a corpus is, told before any work starts: documents, text bytes, tokens, and the disk
its outputs will take, from a bounded look at a few shards (never a full read).

Parquet shards give their row count and the text column's uncompressed size from their footer,
exactly. JSONL shards (plain, gzip, zstd) are sampled: the first `SAMPLE_BYTES` on disk of up to
`SAMPLE_SHARDS` shards of each format, decompressed, give documents and text bytes per byte on
disk, and the other shards of that format are scaled by their size on disk.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

SAMPLE_SHARDS = 4
SAMPLE_BYTES = 4 << 20  # on disk: compressed bytes for .gz and .zst
BYTES_PER_TOKEN = 4.0  # English text under BERT-like and BPE tokenizers: about 4 bytes a token
# Bytes on disk per byte of text or per token, measured on the bundled sample and on the
# 1M-document corpus of benchmarks/scale.py: documents, index and assignments (zstd Parquet) take
# about 0.6 bytes per byte of text; the proxy pool 2 bytes a token (uint16, about 0.6 per byte of
# text) up to its limit per super-cluster; the dataset about 2 bytes a token (zstd Parquet).
TABLE_BYTES_PER_TEXT_BYTE = 0.6
POOL_BYTES_PER_TEXT_BYTE = 0.6
BYTES_PER_STORED_TOKEN = 2
SUPER_CLUSTERS_AT_MOST = 30  # before clustering the count is unknown: a generous bound


@dataclass(frozen=True)
class OutputPlan:
    """What the settings fix of the outputs' size."""

    embedding_dim: int
    pool_tokens_per_super_cluster: int  # proxy.pool_coverage x the largest model's draw
    dataset_tokens: int  # dataset.token_budget


@dataclass(frozen=True)
class ShardSize:
    disk_bytes: int
    documents: float
    text_bytes: float
    exact: bool


@dataclass(frozen=True)
class CorpusEstimate:
    shards: int
    disk_bytes: int
    documents: int
    text_bytes: int
    exact: bool  # every shard measured (Parquet footers, or JSONL read to its end)

    @property
    def tokens(self) -> int:
        return round(self.text_bytes / BYTES_PER_TOKEN)

    def output_bytes(self, plan: OutputPlan) -> int:
        """Disk the outputs take: float16 embeddings, the tables, the proxy pool, the dataset."""
        pool_limit = SUPER_CLUSTERS_AT_MOST * plan.pool_tokens_per_super_cluster
        return round(
            self.documents * plan.embedding_dim * 2
            + self.text_bytes * TABLE_BYTES_PER_TEXT_BYTE
            + min(self.text_bytes * POOL_BYTES_PER_TEXT_BYTE, pool_limit * BYTES_PER_STORED_TOKEN)
            + plan.dataset_tokens * BYTES_PER_STORED_TOKEN
        )

    def describe(self) -> str:
        about = "" if self.exact else "about "
        return (
            f"{self.shards} shard(s), {format_bytes(self.disk_bytes)} on disk, {about}"
            f"{self.documents:,} documents, {format_bytes(self.text_bytes)} of text, about "
            f"{_tokens(self.tokens)} tokens"
        )


def estimate_corpus(paths: Iterable[Path]) -> CorpusEstimate:
    """Sizes of the shard files at `paths` (see the module docstring for what is exact)."""
    paths = sorted(Path(p) for p in paths)
    by_format: dict[str, list[Path]] = {}
    for path in paths:
        by_format.setdefault(_format(path), []).append(path)
    sizes = [size for fmt, group in by_format.items() for size in _format_sizes(fmt, group)]
    return CorpusEstimate(
        shards=len(paths),
        disk_bytes=sum(s.disk_bytes for s in sizes),
        documents=round(sum(s.documents for s in sizes)),
        text_bytes=round(sum(s.text_bytes for s in sizes)),
        exact=all(s.exact for s in sizes),
    )


def disk_shortfall(estimate: CorpusEstimate, plan: OutputPlan, output_dir: Path) -> str | None:
    """Why the outputs will not fit on `output_dir`'s disk, or None when they will. What the
    folder already holds counts as available: a rerun rewrites it."""
    needed = estimate.output_bytes(plan)
    existing = folder_bytes(output_dir)
    probe = next((p for p in (output_dir, *output_dir.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    if needed <= free + existing:
        return None
    return (
        f"the outputs of this corpus need about {format_bytes(needed)} under {output_dir}, "
        f"but its disk has {format_bytes(free)} free (and the folder holds "
        f"{format_bytes(existing)}): free space or "
        "set output_dir to a larger disk"
    )


def folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _format(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".jsonl.gz", ".jsonl.zst", ".parquet"):
        if name.endswith(suffix):
            return suffix
    return ".jsonl"


def _format_sizes(fmt: str, paths: list[Path]) -> list[ShardSize]:
    if fmt == ".parquet":
        return [_parquet_size(p) for p in paths]
    sampled = [_jsonl_size(p, fmt) for p in paths[:SAMPLE_SHARDS]]
    disk = sum(s.disk_bytes for s in sampled)
    docs_per_byte = sum(s.documents for s in sampled) / disk if disk else 0.0
    text_per_byte = sum(s.text_bytes for s in sampled) / disk if disk else 0.0
    rest = [p.stat().st_size for p in paths[SAMPLE_SHARDS:]]
    scaled = [ShardSize(b, b * docs_per_byte, b * text_per_byte, False) for b in rest]
    return sampled + scaled


def _parquet_size(path: Path) -> ShardSize:
    """Rows and the largest column's uncompressed bytes (the text), from the footer alone."""
    meta = pq.ParquetFile(path).metadata
    per_column: dict[int, int] = {}
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for column in range(row_group.num_columns):
            size = row_group.column(column).total_uncompressed_size
            per_column[column] = per_column.get(column, 0) + size
    text = max(per_column.values(), default=0)
    return ShardSize(path.stat().st_size, meta.num_rows, text, True)


def _jsonl_size(path: Path, fmt: str) -> ShardSize:
    """Lines and text of the file's first SAMPLE_BYTES on disk (decompressed), scaled to the
    whole file by its size on disk: exact when the sample is the whole file."""
    disk = path.stat().st_size
    with open(path, "rb") as raw:
        head = raw.read(SAMPLE_BYTES)
    whole = len(head) == disk
    data = _decompress(head, fmt)
    if not whole:  # a line cut at the sample's end is not counted
        data = data[: data.rfind(b"\n") + 1]
    lines = sum(1 for line in data.split(b"\n") if line.strip())
    scale = disk / max(len(head), 1)
    return ShardSize(disk, lines * scale, len(data) * scale, whole)


def _decompress(head: bytes, fmt: str) -> bytes:
    """What the first bytes of a (multi-member gzip, multi-frame zstd) file decompress to; a
    member or frame cut at the end gives what it holds so far."""
    if fmt == ".jsonl":
        return head
    out: list[bytes] = []
    while head:
        if fmt == ".jsonl.gz":
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            member = zstandard.ZstdDecompressor().decompressobj()
        out.append(member.decompress(head))
        head = member.unused_data if member.eof else b""
    return b"".join(out)


def sample_texts(path: Path, text_field: str, n: int) -> list[str]:
    """Up to `n` texts from the start of a shard (Parquet or JSONL, compressed or not), for
    timing the per-document stages on this machine; records without a usable text are
    skipped."""
    path = Path(path)
    fmt = _format(path)
    if fmt == ".parquet":
        file = pq.ParquetFile(path)
        if file.metadata.num_rows == 0 or text_field not in file.schema_arrow.names:
            return []
        batch = next(file.iter_batches(batch_size=n, columns=[text_field]))
        return [t for t in batch.column(0).to_pylist() if isinstance(t, str) and t.strip()]
    with open(path, "rb") as raw:
        data = _decompress(raw.read(SAMPLE_BYTES), fmt)
    texts: list[str] = []
    for line in data.split(b"\n")[:-1]:  # the last line may be cut
        try:
            text = json.loads(line).get(text_field)
        except (ValueError, AttributeError):
            continue
        if isinstance(text, str) and text.strip():
            texts.append(text)
        if len(texts) == n:
            break
    return texts


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _tokens(n: float) -> str:
    for unit in ("", "k", "M", "B"):
        if n < 1000:
            return f"{n:.0f}{unit}" if not unit else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"
