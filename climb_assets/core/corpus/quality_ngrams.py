"""The n-gram repetition signals of the quality rules (Gopher's top and duplicate n-gram
character fractions), counted in numpy over all words of a batch of documents at once.

See `core.corpus.quality` for their definitions; `NgramBatch` computes them near-linearly by
regrouping only the n-grams whose (n-1)-gram prefix repeats.
"""

from __future__ import annotations

import numpy as np
import polars as pl

TOP_NGRAM_SIZES = (2, 3, 4)
DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)
_HASH_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: mixes the doc index into hashes


def _dense_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids of equal keys, and how often each key occurs at each position."""
    _, ids, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return ids.astype(np.int64), counts[ids]


class NgramBatch:
    """All words of a batch of documents in flat arrays, so n-gram counting runs in numpy.

    Unigram ids are specific to (document, word): the word's 64-bit polars hash mixed with its
    document index (two distinct words collide with probability ~1e-8 in a batch of a million
    words; longer n-grams are then grouped exactly). So n-grams of different documents never
    match, and an n-gram running across a document boundary is unique, never counted as repeated.
    """

    def __init__(self, words: pl.DataFrame, n_docs: int) -> None:
        self.n_docs = n_docs
        self.n_words = words.height
        self.doc_of_word = words["doc"].to_numpy()
        self.word_lengths = words["length"].to_numpy()
        hashes = words["word"].hash(seed=0).to_numpy()
        doc_keys = self.doc_of_word.astype(np.uint64) * _HASH_MIX  # wraps mod 2**64 on purpose
        self.unigram_ids, self.unigram_counts = _dense_ids(hashes ^ doc_keys)
        self.n_unigrams = int(self.unigram_ids.max(initial=-1)) + 1
        self.char_prefix = np.concatenate(([0], np.cumsum(self.word_lengths)))
        self.word_chars = np.bincount(
            self.doc_of_word, weights=self.word_lengths, minlength=self.n_docs
        )

    def per_doc_fraction(self, chars: np.ndarray) -> np.ndarray:
        return np.divide(
            chars, self.word_chars, out=np.zeros(self.n_docs), where=self.word_chars > 0
        )

    def signals(self) -> dict[str, np.ndarray]:
        """Top and duplicate n-gram character fractions per document."""
        out: dict[str, np.ndarray] = {}
        ids, counts = self.unigram_ids, self.unigram_counts
        for n in range(2, max(DUP_NGRAM_SIZES) + 1):
            ids, counts = self._extend(ids, counts, n)
            if n in TOP_NGRAM_SIZES:
                out[f"q_top_{n}gram_char_frac"] = self._top_fraction(counts, n)
            if n in DUP_NGRAM_SIZES:
                out[f"q_dup_{n}gram_char_frac"] = self._duplicate_fraction(counts, n)
        return out

    def _extend(self, ids: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and counts of the n-grams at each start, from those of the (n-1)-grams.

        Only an n-gram whose (n-1)-gram prefix repeats can repeat, so only those are regrouped;
        the candidate set shrinks fast with n, which keeps the whole pass near-linear.
        """
        starts = max(self.n_words - n + 1, 0)
        new_ids = np.full(starts, -1, dtype=np.int64)
        new_counts = np.ones(starts, dtype=np.int64)
        candidates = np.flatnonzero(counts[:starts] > 1)
        if candidates.size:
            keys = ids[candidates] * self.n_unigrams + self.unigram_ids[candidates + n - 1]
            new_ids[candidates], new_counts[candidates] = _dense_ids(keys)
        return new_ids, new_counts

    def _chars_at(self, n: int, positions: np.ndarray) -> np.ndarray:
        return self.char_prefix[positions + n] - self.char_prefix[positions]

    def _top_fraction(self, counts: np.ndarray, n: int) -> np.ndarray:
        repeated = np.flatnonzero(counts > 1)
        best = np.zeros(self.n_docs, dtype=np.int64)
        if repeated.size:
            chars = self._chars_at(n, repeated)
            # most frequent first, then longest: one integer key ordered by (count, chars)
            scale = int(chars.max()) + 1
            np.maximum.at(best, self.doc_of_word[repeated], counts[repeated] * scale + chars)
            best = (best // scale) * (best % scale)
        # overlapping occurrences ("x x x": "x x" twice) may count a character twice
        return np.minimum(self.per_doc_fraction(best), 1.0)

    def _duplicate_fraction(self, counts: np.ndarray, n: int) -> np.ndarray:
        starts = np.flatnonzero(counts > 1)
        covered = np.zeros(self.n_words, dtype=bool)
        for offset in range(n):  # n passes over the (few) repeated starts, not over all words
            covered[starts + offset] = True
        words = np.flatnonzero(covered)
        covered_chars = np.bincount(
            self.doc_of_word[words], weights=self.word_lengths[words], minlength=self.n_docs
        )
        return self.per_doc_fraction(covered_chars)
