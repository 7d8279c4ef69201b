"""Building a proxy pool directory (its layout and read side: `core.search.proxy_pool`).

Building streams: `write_pool` reads the corpus as `DocBatch`es, tokenizes each batch in chunks of
`ENCODE_BATCH_DOCS` documents and appends each group's ids to its file as it goes, so memory
follows a chunk, never a group. A group file is written as a .npy whose header (a fixed 128 bytes
whatever the length) is rewritten with the final length at the end.

Building in parts: `write_pool_in_parts` cuts the stream into parts (a corpus' shards), each
tokenized on its own (`write_part`, in another process or on a Ray worker) into raw per-group
token files under the pool's temporary directory, then concatenated per group in part order: the
same bytes as one stream of the parts in order, since documents are encoded one by one and kept
by their id.

Building is bounded: a proxy or evaluation model draws a fixed number of tokens, so a group needs
only a multiple of that. `keep_fractions` gives group g the fraction p_g = min(1, limit /
available_g), and a document enters the pool when a uniform drawn from a hash of (seed, doc id) is
below p_g (`is_kept`): deterministic, independent of the stream's order and batching, and an
unbiased sample of the group. With p_g = 1 every document is kept, in stream order.
"""

from __future__ import annotations

import io
import itertools
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from tokenizers import Tokenizer

from climb_assets.core.search.proxy_pool import FORMAT_VERSION, MANIFEST, TOKENIZER, GroupStats
from climb_assets.core.search.tokenizer import (
    MAX_VOCAB_SIZE,
    encode_many,
    eos_id,
    load_tokenizer,
    save_tokenizer,
)
from climb_assets.core.shared.atomic import atomic_dir, write_json
from climb_assets.core.shared.sampling import is_kept, keep_fraction

ENCODE_BATCH_DOCS = 512
PARTS_DIR = ".parts"  # inside the pool's temporary directory: gone with it, whatever happens
COPY_BUFFER_BYTES = 16 << 20  # a part is copied into its group's file this much at a time


T = TypeVar("T")


@dataclass(frozen=True)
class PartCounts:
    """What one part added to a group."""

    tokens: int
    docs: int
    text_bytes: int


@dataclass(frozen=True)
class PoolPart:
    """One part of the stream to tokenize into `folder`: a plain picklable value, so that
    `write_part` can run in another process. `read` yields the part's batches (a module-level
    function with its arguments bound, e.g. a store reader of one shard); `tokenizer` is the
    tokenizer.json to encode with."""

    read: Callable[[], Iterable[DocBatch]]
    folder: Path
    tokenizer: Path
    fractions: Mapping[int, float]
    seed: int


@dataclass(frozen=True)
class DocBatch:
    """A slice of the corpus stream: parallel sequences of group ids, document ids and texts."""

    groups: Sequence[int]
    doc_ids: Sequence[str]
    texts: Sequence[str]


def keep_fractions(available: Mapping[int, int], limit: int) -> dict[int, float]:
    """Fraction of each group's documents to keep so that about `limit` of its `available` tokens
    remain (1 for a group that holds no more)."""
    if limit < 1:
        raise ValueError(f"the pool's token limit must be >= 1, got {limit}")
    return {_as_group_id(g): keep_fraction(n, limit) for g, n in available.items()}


def write_pool(
    batches: Iterable[DocBatch],
    tokenizer: Tokenizer,
    out_dir: Path,
    fractions: Mapping[int, float],
    *,
    seed: int,
) -> dict[int, GroupStats]:
    """Stream `batches` into a pool at `out_dir`, replacing it atomically only if all succeed.

    `fractions` names every group of the pool with the fraction of its documents to keep
    (`keep_fractions`); a group without kept documents gets an empty file. Returns the per-group
    statistics also written to manifest.json.
    """
    vocab_size = _checked_vocab_size(tokenizer)
    with atomic_dir(Path(out_dir)) as tmp:
        files = _GroupFiles(tmp, fractions)
        _tokenize_into(files, batches, tokenizer, seed)
        stats = files.finish()
        save_tokenizer(tokenizer, tmp / TOKENIZER)
        write_json(_manifest(stats, vocab_size, eos_id(tokenizer)), tmp / MANIFEST)
    return stats


PartRunner = Callable[
    [Callable[[PoolPart], dict[int, PartCounts]], list[PoolPart]], list[dict[int, PartCounts]]
]


def _run_here(
    fn: Callable[[PoolPart], dict[int, PartCounts]], parts: list[PoolPart]
) -> list[dict[int, PartCounts]]:
    return [fn(part) for part in parts]


def write_pool_in_parts(
    parts: Sequence[Callable[[], Iterable[DocBatch]]],
    tokenizer: Tokenizer,
    out_dir: Path,
    fractions: Mapping[int, float],
    *,
    seed: int,
    run_parts: PartRunner = _run_here,
) -> dict[int, GroupStats]:
    """`write_pool` of the stream that is `parts` read one after another, the parts tokenized
    apart: `run_parts(write_part, pool_parts)` returns each part's counts in part order,
    running them here (the default), in worker processes or as Ray tasks, which must see
    `out_dir`'s parent (parts are written under the pool's temporary directory). Each `parts`
    entry must pickle for the runner that takes it."""
    vocab_size = _checked_vocab_size(tokenizer)
    fractions = _checked_fractions(fractions)
    with atomic_dir(Path(out_dir).resolve()) as tmp:  # absolute: workers run elsewhere
        save_tokenizer(tokenizer, tmp / TOKENIZER)  # the parts read it from here
        pool_parts = [
            PoolPart(read, tmp / PARTS_DIR / f"{i:06d}", tmp / TOKENIZER, fractions, seed)
            for i, read in enumerate(parts)
        ]
        counts = run_parts(write_part, pool_parts)
        stats = _concatenate_parts(tmp, pool_parts, counts, fractions)
        if (tmp / PARTS_DIR).exists():  # emptied by the copies; absent without parts
            shutil.rmtree(tmp / PARTS_DIR)
        write_json(_manifest(stats, vocab_size, eos_id(tokenizer)), tmp / MANIFEST)
    return stats


def write_part(part: PoolPart) -> dict[int, PartCounts]:
    """Tokenize one part into raw uint16 files of the groups it holds (no .npy header); their
    counts. A rerun (a retried Ray task) starts the part afresh."""
    shutil.rmtree(part.folder, ignore_errors=True)
    part.folder.mkdir(parents=True)
    files = _GroupFiles(part.folder, part.fractions, npy=False)
    _tokenize_into(files, part.read(), load_tokenizer(part.tokenizer), part.seed)
    return files.counts()


def _concatenate_parts(
    root: Path,
    parts: list[PoolPart],
    counts: list[dict[int, PartCounts]],
    fractions: Mapping[int, float],
) -> dict[int, GroupStats]:
    """Each group's .npy file: its header, then its parts' tokens in part order."""
    stats = {}
    for group, fraction in sorted(fractions.items()):
        held = [c[group] for c in counts if group in c]
        sources = [
            part.folder / _group_file(group, npy=False)
            for part, c in zip(parts, counts, strict=True)
            if group in c
        ]
        tokens = sum(c.tokens for c in held)
        path = root / _group_file(group)
        _concatenate(sources, tokens, path)
        docs, text_bytes = sum(c.docs for c in held), sum(c.text_bytes for c in held)
        stats[group] = GroupStats(path.name, tokens, docs, text_bytes, kept_fraction=fraction)
    return stats


def _concatenate(sources: list[Path], tokens: int, path: Path) -> None:
    """The .npy of `tokens` ids held by the raw `sources`, copied a buffer at a time (memory does
    not grow with the group), each source removed once copied (nor does the disk, twice)."""
    with open(path, "wb") as out:
        out.write(_npy_header(tokens))
        for source in sources:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, out, COPY_BUFFER_BYTES)
            source.unlink()
        if out.tell() != len(_npy_header(0)) + 2 * tokens:
            raise RuntimeError(f"{path}: its parts do not hold the {tokens} ids they counted")


def _checked_vocab_size(tokenizer: Tokenizer) -> int:
    vocab_size = tokenizer.get_vocab_size()
    if vocab_size > MAX_VOCAB_SIZE:
        raise ValueError(f"vocab size {vocab_size} does not fit uint16 pool files (max 65536)")
    eos_id(tokenizer)
    return vocab_size


def _tokenize_into(
    files: _GroupFiles, batches: Iterable[DocBatch], tokenizer: Tokenizer, seed: int
) -> None:
    eos = eos_id(tokenizer)
    for batch in batches:
        for chunk in _chunks(_kept_docs(batch, files.fractions, seed), ENCODE_BATCH_DOCS):
            _append_chunk(chunk, files, tokenizer, eos)


def build_pool(
    texts_by_group: Mapping[int, Iterable[str]], tokenizer: Tokenizer, out_dir: Path
) -> dict[int, GroupStats]:
    """A pool of every text of each group, in order (nothing sampled out): `write_pool` for texts
    at hand."""
    groups = [_as_group_id(g) for g in texts_by_group]
    batches = (
        DocBatch([group] * len(chunk), [""] * len(chunk), chunk)
        for group, texts in zip(groups, texts_by_group.values(), strict=True)
        for chunk in _chunks(texts, ENCODE_BATCH_DOCS)
    )
    return write_pool(batches, tokenizer, out_dir, dict.fromkeys(groups, 1.0), seed=0)


def _as_group_id(group: object) -> int:
    if isinstance(group, bool) or not isinstance(group, int | np.integer) or group < 0:
        raise ValueError(f"group ids must be non-negative ints, got {group!r}")
    return int(group)


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _kept_docs(
    batch: DocBatch, fractions: Mapping[int, float], seed: int
) -> Iterator[tuple[int, str]]:
    """(group, text) of the batch's documents that enter the pool, in batch order."""
    for group, doc_id, text in zip(batch.groups, batch.doc_ids, batch.texts, strict=True):
        fraction = fractions.get(group)
        if fraction is None:
            raise ValueError(f"document {doc_id!r} names group {group!r}, not one of the pool's")
        if not isinstance(text, str):
            raise ValueError(f"documents must be str, got {type(text).__name__}")
        if is_kept(doc_id, fraction, seed):
            yield group, text


def _append_chunk(
    chunk: list[tuple[int, str]], files: _GroupFiles, tokenizer: Tokenizer, eos: int
) -> None:
    """Encode a chunk and append each group's ids (each document followed by EOS)."""
    flat: dict[int, list[int]] = {}
    docs: dict[int, int] = {}
    text_bytes: dict[int, int] = {}
    for (group, text), ids in zip(
        chunk, encode_many(tokenizer, [t for _, t in chunk]), strict=True
    ):
        tokens = flat.setdefault(group, [])
        tokens.extend(ids)
        tokens.append(eos)
        docs[group] = docs.get(group, 0) + 1
        text_bytes[group] = text_bytes.get(group, 0) + len(text.encode("utf-8"))
    for group, tokens in flat.items():
        files.append(group, np.asarray(tokens, dtype=np.uint16), docs[group], text_bytes[group])


class _GroupFiles:
    """One growing .npy per group in a pool's temporary directory (`npy`), or one raw file per
    group a part holds; files are opened per append, so the number of groups is not bounded by
    the open-file limit."""

    def __init__(self, root: Path, fractions: Mapping[int, float], *, npy: bool = True) -> None:
        self.root, self.npy = root, npy
        self.fractions = _checked_fractions(fractions)
        self._tokens = dict.fromkeys(self.fractions, 0)
        self._docs = dict.fromkeys(self.fractions, 0)
        self._bytes = dict.fromkeys(self.fractions, 0)
        if npy:  # every group of the pool has a file, an empty group too
            for group in self.fractions:
                self._path(group).write_bytes(_npy_header(0))

    def _path(self, group: int) -> Path:
        return self.root / _group_file(group, self.npy)

    def append(self, group: int, tokens: np.ndarray, docs: int, text_bytes: int) -> None:
        with open(self._path(group), "ab") as fh:
            fh.write(tokens.tobytes())
        self._tokens[group] += int(tokens.size)
        self._docs[group] += docs
        self._bytes[group] += text_bytes

    def counts(self) -> dict[int, PartCounts]:
        """What each group that received documents holds."""
        return {
            group: PartCounts(self._tokens[group], self._docs[group], self._bytes[group])
            for group in sorted(self.fractions)
            if self._docs[group]
        }

    def finish(self) -> dict[int, GroupStats]:
        """Write each file's final length into its header; the per-group statistics."""
        stats = {}
        for group, fraction in sorted(self.fractions.items()):
            path = self._path(group)
            with open(path, "r+b") as fh:  # same header size: the data stays in place
                fh.write(_npy_header(self._tokens[group]))
            counts = (self._tokens[group], self._docs[group], self._bytes[group])
            stats[group] = GroupStats(path.name, *counts, kept_fraction=fraction)
        return stats


def _group_file(group: int, npy: bool = True) -> str:
    return f"group_{group}.npy" if npy else f"group_{group}.tokens"


def _checked_fractions(fractions: Mapping[int, float]) -> dict[int, float]:
    return {_as_group_id(g): _as_fraction(f) for g, f in fractions.items()}


def _as_fraction(fraction: float) -> float:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"kept fractions must be in (0, 1], got {fraction!r}")
    return float(fraction)


def _npy_header(n_tokens: int) -> bytes:
    """The .npy header of `n_tokens` uint16 ids, as np.save writes it. Numpy pads it to one size
    for any length (room for the shape to grow), so it is rewritten in place after the data."""
    buffer = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(np.uint16))
    header = {"descr": descr, "fortran_order": False, "shape": (n_tokens,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    if n_tokens and len(buffer.getvalue()) != len(_npy_header(0)):
        raise RuntimeError("this numpy writes .npy headers whose size depends on the length")
    return buffer.getvalue()


def _manifest(stats: dict[int, GroupStats], vocab_size: int, eos: int) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "dtype": "uint16",
        "vocab_size": vocab_size,
        "eos_id": eos,
        "groups": {str(g): vars(s) for g, s in sorted(stats.items())},
    }
