"""Byte-level BPE tokenizer for the proxy language models.

Byte-level so that every UTF-8 byte of any text is representable (no unknown tokens), which keeps
bits-per-byte exact. No normalizer: the tokens cover the raw text, byte for byte.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from climb_assets.core.shared.atomic import atomic_path

EOS_TOKEN = "<|endoftext|>"
# Pool files store ids as uint16, so a vocabulary must fit below this.
MAX_VOCAB_SIZE = 65_536


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    max_docs: int | None = None,
    seed: int = 0,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a byte-level BPE whose id 0 is `EOS_TOKEN`.

    With `max_docs`, a uniform reservoir sample of that many texts (chosen by `seed`) is used, so a
    large corpus can be streamed once. The result is deterministic for the same texts and seed.
    The vocabulary can end smaller than `vocab_size` when the texts offer too few merges.
    """
    if not 257 <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be in [257, {MAX_VOCAB_SIZE}] (256 bytes + EOS at least, and ids "
            f"must fit uint16), got {vocab_size}"
        )
    sample = _reservoir_sample(texts, max_docs, seed) if max_docs is not None else texts
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_batched(sample, 1000), trainer=trainer)
    if tokenizer.get_vocab_size() <= 256:
        raise ValueError("train_bpe: no texts were given (the vocabulary holds only bytes)")
    return tokenizer


def eos_id(tokenizer: Tokenizer) -> int:
    """Id of `EOS_TOKEN`; raises if the tokenizer lacks it."""
    token_id = tokenizer.token_to_id(EOS_TOKEN)
    if token_id is None:
        raise ValueError(f"tokenizer has no {EOS_TOKEN!r} token; train it with train_bpe")
    return token_id


def encode_many(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (batch encode runs on all cores)."""
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [encoding.ids for encoding in encodings]


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    """Write tokenizer.json atomically."""
    with atomic_path(Path(path)) as tmp:
        tokenizer.save(str(tmp))


def load_tokenizer(path: Path) -> Tokenizer:
    """Read a tokenizer.json written by `save_tokenizer`, checking it has the EOS token."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust error says what is wrong, but not which file
        raise ValueError(f"tokenizer file {path} could not be read: {err}") from err
    eos_id(tokenizer)
    return tokenizer


def _reservoir_sample(texts: Iterable[str], size: int, seed: int) -> list[str]:
    """Algorithm R: one pass, memory bounded by `size`."""
    if size < 1:
        raise ValueError(f"max_docs must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    iterator = iter(texts)
    reservoir = list(itertools.islice(iterator, size))
    seen = len(reservoir)
    for text in iterator:
        seen += 1
        slot = int(rng.integers(0, seen))
        if slot < size:
            reservoir[slot] = text
    return reservoir


def _batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(texts)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
