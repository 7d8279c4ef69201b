import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models

from climb_assets.core.search.proxy_pool import ProxyPool, build_pool
from climb_assets.core.search.tokenizer import (
    EOS_TOKEN,
    eos_id,
    load_tokenizer,
    save_tokenizer,
    train_bpe,
)

# Disjoint alphabets, so every token id (but EOS) belongs to exactly one group.
GROUP_TEXTS = {
    0: [f"aaa bab abba {'ab' * (i % 5)} baaab" for i in range(60)],
    1: [f"xyz zzy yxx {'xy' * (i % 7)} zyx" for i in range(60)],
    2: [f"123 321 {'12' * (i % 3)} 3321" for i in range(60)],
    3: ["qqq wqw qwq"] * 60,
}
SHORT_GROUP = 4  # a single tiny document: fewer tokens than one window
SEQ_LEN = 16


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    texts = [t for texts in GROUP_TEXTS.values() for t in texts] + ["é"]
    return train_bpe(texts, vocab_size=300, seed=0)


@pytest.fixture(scope="module")
def pool(tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> ProxyPool:
    root = tmp_path_factory.mktemp("pool") / "pool"
    build_pool({**GROUP_TEXTS, SHORT_GROUP: ["é"]}, tokenizer, root)
    return ProxyPool.open(root)


def test_tokenizer_is_deterministic_and_round_trips(tokenizer: Tokenizer, tmp_path: Path) -> None:
    texts = [t for texts in GROUP_TEXTS.values() for t in texts] + ["é"]
    again = train_bpe(texts, vocab_size=300, seed=0)
    assert again.to_str() == tokenizer.to_str()
    assert eos_id(tokenizer) == 0 and tokenizer.id_to_token(0) == EOS_TOKEN
    save_tokenizer(tokenizer, tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    text = "aaa bab 日本 é"  # unseen characters still encode (byte level) and decode exactly
    assert loaded.decode(loaded.encode(text).ids) == text


def test_reservoir_sample_uses_at_most_max_docs() -> None:
    small = train_bpe((f"doc{i} " * 3 for i in range(200)), vocab_size=400, max_docs=5, seed=1)
    full = train_bpe((f"doc{i} " * 3 for i in range(200)), vocab_size=400)
    assert small.get_vocab_size() < full.get_vocab_size()


def test_pool_round_trip(pool: ProxyPool, tokenizer: Tokenizer) -> None:
    manifest = json.loads((pool.root / "manifest.json").read_text())
    eos = eos_id(tokenizer)
    for group, texts in GROUP_TEXTS.items():
        expected = [t for text in texts for t in [*tokenizer.encode(text).ids, eos]]
        tokens = pool.tokens(group)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
        np.testing.assert_array_equal(tokens, expected)
        entry = manifest["groups"][str(group)]
        assert entry["docs"] == len(texts)
        assert entry["text_bytes"] == sum(len(t.encode()) for t in texts)
    assert pool.token_counts()[0] == pool.tokens(0).size
    assert pool.tokenizer().to_str() == tokenizer.to_str()
    assert pool.vocab_size == tokenizer.get_vocab_size() and pool.eos_id == eos


def _group_of_rows(pool: ProxyPool, batch: torch.Tensor) -> list[int]:
    vocab_of = {g: set(np.unique(pool.tokens(g)).tolist()) - {pool.eos_id} for g in GROUP_TEXTS}
    groups = []
    for row in batch.tolist():
        token = next(t for t in row if t != pool.eos_id)
        groups.append(next(g for g, vocab in vocab_of.items() if token in vocab))
    return groups


class _Untouchable:
    """Stands in for a group's token array; any read fails the test."""

    size = 10**6

    def __getitem__(self, index: object) -> None:
        raise AssertionError("a zero-weight group was read")


def test_sampling_follows_weights_and_skips_zero_weight(pool: ProxyPool) -> None:
    weights = {0: 0.6, 1: 0.3, 2: 0.1, 3: 0.0}
    pool._tokens[3] = _Untouchable()  # type: ignore[assignment]
    try:
        batches = list(pool.sample_batches(weights, 4000 * SEQ_LEN, SEQ_LEN, 100, seed=3))
    finally:
        pool._tokens[3] = np.load(pool.root / "group_3.npy", mmap_mode="r")
    assert len(batches) == 40
    assert all(b.shape == (100, SEQ_LEN + 1) and b.dtype == torch.int64 for b in batches)
    groups = np.array(_group_of_rows(pool, torch.cat(batches)))
    shares = np.bincount(groups, minlength=4) / groups.size
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1, 0.0], atol=0.03)


def test_sampled_windows_are_contiguous_slices(pool: ProxyPool) -> None:
    batch = next(pool.sample_batches({1: 1.0}, SEQ_LEN * 8, SEQ_LEN, 8, seed=0))
    windows = np.lib.stride_tricks.sliding_window_view(pool.tokens(1), SEQ_LEN + 1)
    starts = set()
    for row in batch.numpy():
        matches = np.flatnonzero((windows == row).all(axis=1))
        assert matches.size, "a sampled row is not a window of its group"
        starts.update(matches.tolist())
    assert len(starts) > 1  # offsets vary


def test_sampling_is_deterministic_for_a_seed(pool: ProxyPool) -> None:
    def draw(seed: int) -> torch.Tensor:
        return torch.cat(list(pool.sample_batches({0: 1, 2: 3}, 2000, SEQ_LEN, 4, seed=seed)))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_group_shorter_than_a_window_wraps(pool: ProxyPool) -> None:
    short = np.asarray(pool.tokens(SHORT_GROUP))
    assert 0 < short.size < SEQ_LEN + 1
    (batch,) = pool.sample_batches({SHORT_GROUP: 1.0}, SEQ_LEN * 2, SEQ_LEN, 2, seed=0)
    for row in batch.numpy():
        start = int(np.flatnonzero(short == row[0])[0])
        np.testing.assert_array_equal(row, np.resize(np.roll(short, -start), SEQ_LEN + 1))


def test_token_budget_and_requests(pool: ProxyPool) -> None:
    batches = list(
        pool.sample_batches({0: 1.0}, n_tokens=1000, seq_len=SEQ_LEN, batch_size=4, seed=0)
    )
    assert len(batches) == 16  # ceil(1000 / (16 * 4))
    requested = pool.tokens_requested({0: 1, 1: 3, 2: 0}, 1000)
    assert requested == {0: 250, 1: 750}
    assert pool.repetition({1: 1.0}, 2 * pool.token_counts()[1]) == {1: 2.0}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({99: 1.0}, "absent from pool"),
        ({0: -0.1, 1: 1.0}, "finite and >= 0"),
        ({0: float("nan")}, "finite and >= 0"),
        ({0: 0.0}, "no positive weight"),
    ],
)
def test_bad_weights_are_rejected(pool: ProxyPool, weights: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next(pool.sample_batches(weights, 100, SEQ_LEN, 2, seed=0))


def test_empty_group_is_allowed_but_cannot_be_sampled(tokenizer: Tokenizer, tmp_path: Path) -> None:
    build_pool({0: ["aaa bab"], 1: []}, tokenizer, tmp_path / "p")
    pool = ProxyPool.open(tmp_path / "p")
    assert pool.token_counts()[1] == 0
    with pytest.raises(ValueError, match="no tokens"):
        next(pool.sample_batches({1: 1.0}, 100, SEQ_LEN, 2, seed=0))


def test_vocab_too_large_for_uint16_is_rejected(tmp_path: Path) -> None:
    vocab = {EOS_TOKEN: 0, **{f"w{i}": i + 1 for i in range(70_000)}}
    big = Tokenizer(models.WordLevel(vocab, unk_token=EOS_TOKEN))
    with pytest.raises(ValueError, match="uint16"):
        build_pool({0: ["w1"]}, big, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_missing_or_corrupt_pool_is_reported(tokenizer: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest"):
        ProxyPool.open(tmp_path / "missing")
    build_pool({0: ["aaa bab"] * 3}, tokenizer, tmp_path / "p")
    np.save(tmp_path / "p" / "group_0.npy", np.zeros(2, dtype=np.uint16))
    with pytest.raises(ValueError, match="group_0.npy.*rebuild"):
        ProxyPool.open(tmp_path / "p")
