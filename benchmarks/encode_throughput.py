"""Encoder throughput: climb's `encode` path next to sentence-transformers' default encode.

Reads the same seeded sample of documents for both paths and prints docs/s, tokens/s (tokens the
encoder actually sees, after truncation) and the cosine agreement of the two embeddings.

    PYTHONPATH=. .venv/bin/python benchmarks/encode_throughput.py [PATH] [--docs 2000]

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

from climb_assets.core.clustering.embedding import (
    encode,
    encoder_info,
    load_encoder,
    model_location,
)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=Path("data/corpus"))
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--field", default="text")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    all_texts = read_texts(args.path, args.field)
    rng = np.random.default_rng(args.seed)
    picked = np.sort(rng.choice(len(all_texts), min(args.docs, len(all_texts)), replace=False))
    texts = [all_texts[i] for i in picked]

    settings = EmbeddingSettings()
    ours = load_encoder(settings)
    baseline = SentenceTransformer(
        model_location(settings.model), device=str(ours.device), local_files_only=True
    )
    baseline.max_seq_length = ours.max_seq_length
    n_tokens = sum(
        len(ids)
        for ids in ours.tokenizer(texts, truncation=True, max_length=ours.max_seq_length)[
            "input_ids"
        ]
    )
    print(f"{len(texts)} docs, {n_tokens} tokens seen, torch threads {torch.get_num_threads()}")

    fast, fast_s = timed_encode(lambda t: encode(ours, t, settings.batch_size), texts)
    slow, slow_s = timed_encode(lambda t: baseline.encode(t, normalize_embeddings=True), texts)
    cosines = (
        (fast * slow).sum(axis=1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(slow, axis=1)
    )

    info = encoder_info(ours)
    print(f"{'path':44s} {'seconds':>8s} {'docs/s':>8s} {'tokens/s':>9s}")
    for name, seconds in (
        (f"climb encode ({info['dtype']}, batch {settings.batch_size})", fast_s),
        ("sentence-transformers encode (fp32, default)", slow_s),
    ):
        print(f"{name:44s} {seconds:8.2f} {len(texts) / seconds:8.1f} {n_tokens / seconds:9.0f}")
    print(
        f"speed-up {slow_s / fast_s:.2f}x; cosine mean {cosines.mean():.5f} min {cosines.min():.5f}"
    )


def _path(settings: EmbeddingSettings) -> str:
    from climb_assets.core.clustering.embedding import model_location

    return model_location(settings.model)


if __name__ == "__main__":
    main()
