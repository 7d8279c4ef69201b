"""Encoder throughput: climb's `encode` path next to sentence-transformers' default encode.

Reads the same seeded sample of documents for every path and prints docs/s, tokens/s (tokens the
encoder actually sees, after truncation), the speed-up over sentence-transformers' default encode
(fp32, batch 32) and the cosine agreement of each path's embeddings with it.

    PYTHONPATH=. .venv/bin/python benchmarks/encode_throughput.py [PATH] [--docs 2000]
        [--backends torch openvino] [--batch-sizes 8 32]

PATH is a shard file or folder of .jsonl[.gz|.zst] / .parquet files (default: data/corpus).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from climb_assets.core.clustering.embedding import encode
from climb_assets.core.clustering.encoder import encoder_info, load_encoder, model_location
from climb_assets.core.shared.precision import resolve_device
from climb_assets.settings import CorpusSettings, EmbeddingSettings

WARMUP_DOCS = 64


def _jsonl_lines(path: Path) -> Iterator[str]:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            yield from lines
    elif path.name.endswith(".zst"):
        import zstandard

        with path.open("rb") as raw:
            yield from io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), "utf-8")
    else:
        with path.open(encoding="utf-8") as lines:
            yield from lines


def read_texts(path: Path, field: str) -> list[str]:
    """Every non-empty text of the shard file(s) under `path`, in sorted file order."""
    corpus = CorpusSettings()
    files = [path] if path.is_file() else sorted({f for p in corpus.patterns for f in path.glob(p)})
    if not files:
        raise SystemExit(f"no shard files under {path}; pass a .jsonl or .parquet path")
    texts: list[str] = []
    for file in files:
        if file.suffix == ".parquet":
            import polars as pl

            texts.extend(pl.read_parquet(file, columns=[field])[field].drop_nulls().to_list())
        else:
            rows = (json.loads(line) for line in _jsonl_lines(file) if line.strip())
            texts.extend(row[field] for row in rows if row.get(field))
    return texts


def timed_encode(fn, texts: list[str]) -> tuple[np.ndarray, float]:  # noqa: ANN001
    fn(texts[:WARMUP_DOCS])
    start = time.perf_counter()
    vectors = fn(texts)
    return np.asarray(vectors, dtype=np.float32), time.perf_counter() - start


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=Path("data/corpus"))
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--field", default="text")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=["torch", "openvino"],
        default=["torch"],
        help="embedding.backend values to time (openvino needs the openvino extra)",
    )
    parser.add_argument(
        "--batch-sizes",
        nargs="+",
        type=int,
        default=None,
        help="embedding.batch_size values to time per backend (default: the setting's default)",
    )
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    all_texts = read_texts(args.path, args.field)
    rng = np.random.default_rng(args.seed)
    picked = np.sort(rng.choice(len(all_texts), min(args.docs, len(all_texts)), replace=False))
    texts = [all_texts[i] for i in picked]

    defaults = EmbeddingSettings()
    baseline = SentenceTransformer(
        model_location(defaults.model),
        device=resolve_device(defaults.device),
        local_files_only=True,
    )
    baseline.max_seq_length = defaults.max_seq_length
    tokens = baseline.tokenizer(texts, truncation=True, max_length=defaults.max_seq_length)
    n_tokens = sum(len(ids) for ids in tokens["input_ids"])
    print(f"{len(texts)} docs, {n_tokens} tokens seen, torch threads {torch.get_num_threads()}")

    slow, slow_s = timed_encode(lambda t: baseline.encode(t, normalize_embeddings=True), texts)
    rows = [("sentence-transformers encode (fp32, default)", slow_s, None)]
    for backend in args.backends:
        settings = EmbeddingSettings(backend=backend)
        model = load_encoder(settings)
        dtype = encoder_info(model)["dtype"]
        for batch_size in args.batch_sizes or [settings.batch_size]:
            fast, fast_s = timed_encode(lambda t, m=model, b=batch_size: encode(m, t, b), texts)
            name = f"climb {backend} ({dtype}, batch {batch_size})"
            rows.append((name, fast_s, _cosines(fast, slow)))

    print(f"{'path':44s} {'seconds':>8s} {'docs/s':>8s} {'tokens/s':>9s} {'speed-up':>8s} cosine")
    for name, seconds, cosines in rows:
        agreement = "" if cosines is None else f"mean {cosines.mean():.5f} min {cosines.min():.5f}"
        print(
            f"{name:44s} {seconds:8.2f} {len(texts) / seconds:8.1f} {n_tokens / seconds:9.0f} "
            f"{slow_s / seconds:7.2f}x {agreement}"
        )


if __name__ == "__main__":
    main()
