"""Sentence embeddings for clustering: texts encoded to unit float16 vectors by the encoder
`core.clustering.encoder` loads, in bounded chunks, in this process or on Ray actors that keep
their model, and a shard's documents written to one .npy file; with the OpenVINO backend the
token vectors are pooled here, on the CPU.

torch is imported inside functions: every Dagster step process imports this module, and only the
embedding step should pay for loading it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from climb_assets.core.clustering.encoder import (
    Encoder,
    EncoderError,
    OpenVINOEncoder,
    load_encoder,
)
from climb_assets.core.shared.atomic import atomic_path
from climb_assets.settings import EmbeddingSettings, ExecutionSettings

# Texts handed to sentence-transformers per call. It sorts each call's texts by length (so
# batches carry little padding) and returns fp32 results; chunking keeps those fp32 results
# bounded for big shards while a chunk this large keeps the sort almost as good as a global one.
_ENCODE_CHUNK = 16_384
_HEALTH_CHUNK = 65_536


def _check_texts(texts: Sequence[str], offset: int = 0) -> None:
    """Fail on a non-text; `offset` is the position of texts[0] in the whole input."""
    for position, text in enumerate(texts, start=offset):
        if not isinstance(text, str):
            raise EncoderError(f"encode: text at position {position} is {type(text).__name__}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def encode(model: Encoder, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """L2-normalized embeddings of `texts`, float16 of shape (n, d), rows in input order.

    Normalization happens in fp32 before the cast, so rows are unit vectors to fp16 rounding.
    """
    _check_texts(texts)
    dim = int(model.get_embedding_dimension() or 0)
    out = np.empty((len(texts), dim), dtype=np.float16)
    if isinstance(model, OpenVINOEncoder):
        with model.lock:
            for start in range(0, len(texts), _ENCODE_CHUNK):
                pooled = _pool_openvino(model, texts[start : start + _ENCODE_CHUNK], batch_size)
                out[start : start + len(pooled)] = _unit_rows(pooled)
        return out
    import torch

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


def _pooled(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """Token vectors (batch, length, dim) pooled as sentence-transformers' Pooling does."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def _pool_openvino(model: OpenVINOEncoder, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Pooled fp32 vectors of `texts` in input order. Batches go longest first (as
    sentence-transformers sorts, by characters): similar lengths pad little, and the order, so
    the bytes, depend only on the texts. Results land by row, whichever request ends first."""
    pooled = np.empty((len(texts), model.dimension), dtype=np.float32)
    failures: list[BaseException] = []

    def done(request: Any, rows: tuple[np.ndarray, np.ndarray]) -> None:
        # Runs on an OpenVINO thread, where an exception would be lost: keep it for the caller.
        try:
            positions, mask = rows
            hidden = request.get_output_tensor(0).data  # the request's buffer, reused: pool now
            pooled[positions] = _pooled(hidden, mask, model.pooling)
        except BaseException as err:
            failures.append(err)

    model.queue.set_callback(done)
    order = np.argsort([-len(text) for text in texts], kind="stable")
    for start in range(0, len(texts), batch_size):
        positions = order[start : start + batch_size]
        tokens = model.tokenizer(
            [texts[i] for i in positions],
            padding=True,
            truncation="longest_first",
            max_length=model.max_seq_length,
            return_tensors="np",
        )
        inputs = [tokens[name].astype(np.int64) for name in model.input_names]
        model.queue.start_async(inputs, (positions, tokens["attention_mask"]))
    model.queue.wait_all()
    if failures:
        raise failures[0]
    return pooled


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

        torch.set_num_threads(threads)  # also the OpenVINO encoder's streams
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
    from climb_assets.core.shared.execution import TaskResources
    from climb_assets.core.shared.ray_backend import map_on_actors

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


def encode_file(model: Encoder, documents: Path, path: Path, batch_size: int) -> int:
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
