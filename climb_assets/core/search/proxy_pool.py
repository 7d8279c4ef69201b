"""Proxy training pool: every super-cluster's documents tokenized once, for fast mixture sampling.

Layout of a pool directory::

    manifest.json       format, vocab size, EOS id, and per group: file, tokens, docs, text bytes,
                        kept fraction
    tokenizer.json      the tokenizer that made the ids
    group_<id>.npy      uint16 token ids of the group's documents, each followed by EOS

`core.search.pool_writer` builds the directory, streaming and bounded.

A proxy trained on mixture `w` reads sequences of `seq_len + 1` tokens; each sequence comes from
one group drawn with probability `w[group]`, at a uniformly random offset. Windows may cross
document boundaries (the EOS tokens mark them), as in ordinary LM pre-training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from climb_assets.core.search.tokenizer import load_tokenizer

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
FORMAT_VERSION = 2  # 2: per-group kept_fraction


@dataclass(frozen=True)
class GroupStats:
    file: str
    tokens: int
    docs: int
    text_bytes: int
    kept_fraction: float  # share of the group's documents sampled into the pool


class ProxyPool:
    """Read side of a pool directory: memory-mapped token arrays and a mixture sampler."""

    def __init__(
        self,
        root: Path,
        groups: dict[int, np.ndarray],
        stats: dict[int, GroupStats],
        vocab_size: int,
        eos_id: int,
    ) -> None:
        self.root = root
        self._tokens = groups
        self.stats = stats
        self.vocab_size = vocab_size
        self.eos_id = eos_id

    @classmethod
    def open(cls, root: Path) -> ProxyPool:
        root = Path(root)
        manifest = _read_manifest(root / MANIFEST)
        stats = {int(g): GroupStats(**s) for g, s in manifest["groups"].items()}
        arrays = {g: _map_group(root / s.file, s.tokens) for g, s in stats.items()}
        return cls(root, arrays, stats, int(manifest["vocab_size"]), int(manifest["eos_id"]))

    @property
    def groups(self) -> list[int]:
        return sorted(self._tokens)

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.root / TOKENIZER)

    def tokens(self, group: int) -> np.ndarray:
        """The group's memory-mapped uint16 ids (read-only)."""
        return self._tokens[group]

    def token_counts(self) -> dict[int, int]:
        return {g: s.tokens for g, s in sorted(self.stats.items())}

    def tokens_requested(self, weights: Mapping[int, float], n_tokens: int) -> dict[int, int]:
        """Expected training tokens drawn from each group for a mixture and a token budget."""
        probs = self.normalize(weights)
        return {g: round(p * n_tokens) for g, p in probs.items()}

    def repetition(self, weights: Mapping[int, float], n_tokens: int) -> dict[int, float]:
        """Tokens requested / tokens available per group (> 1 means the group is repeated)."""
        requested = self.tokens_requested(weights, n_tokens)
        return {g: r / max(self.stats[g].tokens, 1) for g, r in requested.items()}

    def sample_batches(
        self,
        weights: Mapping[int, float],
        n_tokens: int,
        seq_len: int,
        batch_size: int,
        seed: int,
        skip: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Yield int64 tensors (batch_size, seq_len + 1) until >= n_tokens targets were served;
        `skip` leaves out the first batches (a resumed proxy goes on where it stopped).

        Every sequence is drawn up front (group by weight, offset uniform over the group's valid
        starts), so the stream depends only on the arguments. Groups with weight 0 are never read.
        A group shorter than seq_len + 1 tokens is repeated cyclically to fill a window.
        """
        if seq_len < 1 or batch_size < 1 or n_tokens < 1:
            raise ValueError("seq_len, batch_size and n_tokens must be positive")
        probs = self.normalize(weights)
        groups = np.array(sorted(probs), dtype=np.int64)
        p = np.array([probs[g] for g in groups])
        n_batches = math.ceil(n_tokens / (seq_len * batch_size))
        rng = np.random.default_rng(seed)
        seq_groups = rng.choice(groups, size=(n_batches, batch_size), p=p / p.sum())
        uniforms = rng.random((n_batches, batch_size))
        window = np.arange(seq_len + 1)
        for batch_groups, batch_uniforms in zip(seq_groups[skip:], uniforms[skip:], strict=True):
            yield torch.from_numpy(self._gather(batch_groups, batch_uniforms, window))

    def _gather(
        self, batch_groups: np.ndarray, uniforms: np.ndarray, window: np.ndarray
    ) -> np.ndarray:
        out = np.empty((batch_groups.size, window.size), dtype=np.int64)
        for group in np.unique(batch_groups):
            rows = np.flatnonzero(batch_groups == group)
            tokens = self._tokens[int(group)]
            n_starts = max(tokens.size - window.size + 1, 1)
            starts = (uniforms[rows] * n_starts).astype(np.int64)
            index = starts[:, None] + window
            if tokens.size < window.size:  # short group: wrap around
                index %= tokens.size
            out[rows] = tokens[index]
        return out

    def normalize(self, weights: Mapping[int, float]) -> dict[int, float]:
        """Positive weights only, summing to 1; zero-weight groups drop out."""
        unknown = sorted(set(weights) - set(self._tokens))
        if unknown:
            raise ValueError(f"mixture names groups {unknown} absent from pool {self.root}")
        bad = {g: w for g, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"mixture weights must be finite and >= 0, got {bad}")
        positive = {g: float(w) for g, w in weights.items() if w > 0}
        if not positive:
            raise ValueError("mixture has no positive weight")
        empty = sorted(g for g in positive if self.stats[g].tokens == 0)
        if empty:
            raise ValueError(f"mixture gives weight to groups {empty} that have no tokens")
        total = sum(positive.values())
        return {g: w / total for g, w in sorted(positive.items())}


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"pool manifest {path} does not exist (run write_pool first)")
    manifest = json.loads(path.read_text())
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version!r}, expected {FORMAT_VERSION}")
    return manifest


def _map_group(path: Path, expected_tokens: int) -> np.ndarray:
    if expected_tokens == 0:  # an empty file cannot be memory-mapped
        return np.zeros(0, dtype=np.uint16)
    tokens = np.load(path, mmap_mode="r")
    if tokens.dtype != np.uint16 or tokens.ndim != 1 or tokens.size != expected_tokens:
        raise ValueError(
            f"{path}: expected {expected_tokens} uint16 tokens, found {tokens.dtype} "
            f"{tokens.shape}; the pool is corrupt, rebuild it"
        )
    return tokens
