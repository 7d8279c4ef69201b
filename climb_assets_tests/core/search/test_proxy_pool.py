import io
import itertools
import json
import math
import pickle
import random
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models

from climb_assets.core.search.pool_writer import (
    DocBatch,
    PartCounts,
    PoolPart,
    build_pool,
    keep_fractions,
    write_pool,
    write_pool_in_parts,
)
from climb_assets.core.search.proxy_pool import ProxyPool
from climb_assets.core.search.tokenizer import (
    EOS_TOKEN,
    encode_many,
    eos_id,
    load_tokenizer,
    save_tokenizer,
    train_bpe,
)
from climb_assets.core.shared.sampling import is_kept

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
        assert entry["kept_fraction"] == 1.0  # build_pool samples nothing out
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


# --- streaming and bounded building (write_pool) ---

WORDS = {0: "ab", 1: "xyz", 2: "qw"}


def _corpus(n_per_group: int) -> list[tuple[int, str, str]]:
    """(group, doc id, text) with the groups interleaved, as shards mix them; texts are unique."""
    return [
        (g, f"doc-{g}-{i}", f"{word * (1 + i % 7)} {i}")
        for i in range(n_per_group)
        for g, word in WORDS.items()
    ]


def _batches(docs: list[tuple[int, str, str]], size: int) -> Iterator[DocBatch]:
    for start in range(0, len(docs), size):
        groups, doc_ids, texts = zip(*docs[start : start + size], strict=True)
        yield DocBatch(list(groups), list(doc_ids), list(texts))


def _files(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(root.iterdir())}


def _doc_tokens(docs: list[tuple[int, str, str]], tokenizer: Tokenizer) -> dict[str, int]:
    """Pool tokens of each document (its ids and EOS)."""
    ids = encode_many(tokenizer, [text for _, _, text in docs])
    return {doc_id: len(i) + 1 for (_, doc_id, _), i in zip(docs, ids, strict=True)}


def _decoded(pool: ProxyPool) -> dict[int, list[str]]:
    """Each group's documents, decoded back from its tokens, sorted."""
    tokenizer = pool.tokenizer()
    out = {}
    for group in pool.groups:
        tokens = np.asarray(pool.tokens(group))
        pieces = np.split(tokens, np.flatnonzero(tokens == pool.eos_id) + 1)[:-1]
        out[group] = sorted(tokenizer.decode_batch([p[:-1].tolist() for p in pieces]))
    return out


def test_streamed_pool_does_not_depend_on_batch_size(tokenizer: Tokenizer, tmp_path: Path) -> None:
    docs = _corpus(300)
    fractions = {0: 1.0, 1: 0.5, 2: 0.2, 7: 1.0}  # 7: a group without documents
    built = []
    for size in (1, 3, len(docs)):  # len(docs) > ENCODE_BATCH_DOCS: chunks within a batch
        write_pool(_batches(docs, size), tokenizer, tmp_path / str(size), fractions, seed=5)
        built.append(_files(tmp_path / str(size)))
    assert built[0] == built[1] == built[2]
    manifest = json.loads(built[0]["manifest.json"])
    assert (
        manifest["groups"]["7"]["tokens"] == 0 and manifest["groups"]["2"]["kept_fraction"] == 0.2
    )
    assert ProxyPool.open(tmp_path / "1").token_counts()[7] == 0


def test_generous_limit_keeps_every_document(tokenizer: Tokenizer, tmp_path: Path) -> None:
    docs = _corpus(200)
    tokens = _doc_tokens(docs, tokenizer)
    available = {g: sum(tokens[d] for gg, d, _ in docs if gg == g) for g in WORDS}
    fractions = keep_fractions(available, limit=max(available.values()))
    assert set(fractions.values()) == {1.0}
    stats = write_pool(_batches(docs, 64), tokenizer, tmp_path / "p", fractions, seed=0)
    pool, eos = ProxyPool.open(tmp_path / "p"), eos_id(tokenizer)
    for group in WORDS:
        texts = [text for g, _, text in docs if g == group]
        ids = [i for doc in encode_many(tokenizer, texts) for i in (*doc, eos)]
        expected = np.array(ids, dtype=np.uint16)
        np.testing.assert_array_equal(pool.tokens(group), expected)
        saved = io.BytesIO()
        np.save(saved, expected)  # the very file np.save writes
        assert (tmp_path / "p" / f"group_{group}.npy").read_bytes() == saved.getvalue()
        assert stats[group].docs == len(texts) and stats[group].tokens == available[group]


def test_small_limit_samples_about_limit_tokens_whatever_the_order(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    docs = _corpus(2000)
    tokens = _doc_tokens(docs, tokenizer)
    available = {g: sum(tokens[d] for gg, d, _ in docs if gg == g) for g in WORDS}
    limit = min(available.values()) // 4
    fractions = keep_fractions(available, limit)
    shuffled = random.Random(0).sample(docs, len(docs))
    decoded = []
    for name, stream, size in (("ordered", docs, 100), ("shuffled", shuffled, 7)):
        stats = write_pool(_batches(stream, size), tokenizer, tmp_path / name, fractions, seed=3)
        decoded.append(_decoded(ProxyPool.open(tmp_path / name)))
    assert decoded[0] == decoded[1]
    for group, fraction in fractions.items():
        kept = sorted(t for g, d, t in docs if g == group and is_kept(d, fraction, 3))
        assert decoded[0][group] == kept and stats[group].kept_fraction == fraction
        # Kept tokens are a sum of Bernoulli(p) * doc tokens: mean p * available = limit, and the
        # standard deviation below; 4 of them bound a chance miss below 1e-4.
        sizes = np.array([tokens[d] for g, d, _ in docs if g == group], dtype=float)
        sd = math.sqrt(fraction * (1 - fraction) * (sizes**2).sum())
        assert abs(stats[group].tokens - limit) <= 4 * sd < 0.2 * limit


def _old_pool(
    tokenizer: Tokenizer, root: Path
) -> tuple[list[tuple[int, str, str]], dict[int, float], dict[str, bytes]]:
    """A pool already written at root/pool: its documents, fractions and files."""
    docs = _corpus(50)
    fractions = dict.fromkeys(WORDS, 1.0)
    write_pool(_batches(docs, 10), tokenizer, root / "pool", fractions, seed=0)
    return docs, fractions, _files(root / "pool")


def test_failure_mid_stream_leaves_the_old_pool(tokenizer: Tokenizer, tmp_path: Path) -> None:
    docs, fractions, before = _old_pool(tokenizer, tmp_path)

    def failing() -> Iterator[DocBatch]:
        yield from _batches(docs[:20], 10)  # group files have grown when the stream breaks
        raise RuntimeError("shard unreadable")

    with pytest.raises(RuntimeError, match="unreadable"):
        write_pool(failing(), tokenizer, tmp_path / "pool", {**fractions, 3: 1.0}, seed=1)
    assert _files(tmp_path / "pool") == before
    assert [path.name for path in tmp_path.iterdir()] == ["pool"]  # no temporary left


def _slice(docs: list[tuple[int, str, str]], start: int, end: int) -> Iterator[DocBatch]:
    """A part of the stream: a module-level function, so that its partial pickles."""
    return _batches(docs[start:end], 7)


def _twice_backwards_pickled(
    fn: Callable[[PoolPart], dict[int, PartCounts]], parts: list[PoolPart]
) -> list[dict[int, PartCounts]]:
    """A runner as hostile as Ray: parts pickled, run out of order, each run twice (a retried
    task finds what its first attempt wrote)."""
    results = {}
    for index in reversed(range(len(parts))):
        for _ in range(2):
            part = pickle.loads(pickle.dumps(parts[index]))
            results[index] = pickle.loads(pickle.dumps(fn(part)))
    return [results[i] for i in range(len(parts))]


def test_a_pool_written_in_parts_equals_the_single_stream(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    docs = _corpus(300)  # 900 documents: parts and the whole exceed ENCODE_BATCH_DOCS
    fractions = {0: 1.0, 1: 0.5, 2: 0.2, 7: 1.0}  # 7: a group without documents
    write_pool(_batches(docs, 50), tokenizer, tmp_path / "stream", fractions, seed=5)
    single = _files(tmp_path / "stream")
    only_zeros = [d for d in docs if d[0] == 0][:40]  # a part that holds one group only
    for name, cuts in (("one", [0, 900]), ("many", [0, 1, 1, 299, 600, 601, 900])):
        parts = [partial(_slice, docs, a, b) for a, b in itertools.pairwise(cuts)]
        out = tmp_path / name
        stats = write_pool_in_parts(
            parts, tokenizer, out, fractions, seed=5, run_parts=_twice_backwards_pickled
        )
        assert _files(out) == single, name  # no parts folder left either
        assert stats == write_pool(
            _batches(docs, 900), tokenizer, tmp_path / "s", fractions, seed=5
        )
    mixed = [partial(_slice, only_zeros, 0, 40), partial(_slice, docs, 0, 900)]
    write_pool_in_parts(mixed, tokenizer, tmp_path / "mixed", fractions, seed=5)
    write_pool(
        _batches(only_zeros + docs, 64), tokenizer, tmp_path / "mixed_stream", fractions, seed=5
    )
    assert _files(tmp_path / "mixed") == _files(tmp_path / "mixed_stream")


def test_a_failed_part_leaves_the_old_pool(tokenizer: Tokenizer, tmp_path: Path) -> None:
    docs, fractions, before = _old_pool(tokenizer, tmp_path)

    def unreadable() -> Iterator[DocBatch]:
        yield from _batches(docs[:20], 10)
        raise RuntimeError("shard unreadable")

    parts = [partial(_slice, docs, 0, 30), unreadable]
    with pytest.raises(RuntimeError, match="unreadable"):
        write_pool_in_parts(parts, tokenizer, tmp_path / "pool", fractions, seed=1)
    assert _files(tmp_path / "pool") == before
    assert [path.name for path in tmp_path.iterdir()] == ["pool"]  # no temporary left


def test_keep_fractions_and_unknown_groups(tokenizer: Tokenizer, tmp_path: Path) -> None:
    assert keep_fractions({0: 100, 1: 400, 2: 0}, 200) == {0: 1.0, 1: 0.5, 2: 1.0}
    with pytest.raises(ValueError, match="not one of the pool's"):
        write_pool(_batches([(5, "d", "ab")], 1), tokenizer, tmp_path / "p", {0: 1.0}, seed=0)
    assert not (tmp_path / "p").exists()
