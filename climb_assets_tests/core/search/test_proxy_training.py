import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from climb_assets.core.search.pool_writer import build_pool
from climb_assets.core.search.proxy_pool import ProxyPool
from climb_assets.core.search.proxy_training import (
    TrainingState,
    _lr_factor,
    rung_step,
    train_proxy,
)
from climb_assets.core.search.tokenizer import train_bpe
from climb_assets.core.shared.precision import cpu_has_native_bf16
from climb_assets.settings import ProxySettings

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "seq_len": 32, "batch_size": 8}
TEXTS = {
    0: [f"the cat number {i} sat on the mat and looked at the dog." for i in range(200)],
    1: [f"a ship of {i} sails crossed the grey sea under the moon." for i in range(200)],
}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_bpe([t for texts in TEXTS.values() for t in texts], vocab_size=400)


@pytest.fixture(scope="module")
def pool(tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> ProxyPool:
    root = tmp_path_factory.mktemp("pool") / "pool"
    build_pool(TEXTS, tokenizer, root)
    return ProxyPool.open(root)


def _settings(**overrides: object) -> ProxySettings:
    base = {**TINY, "tokens_per_proxy": 20_000, "learning_rate": 1e-2, "precision": "fp32"}
    return ProxySettings(**{**base, **overrides})


def test_learning_rate_schedule() -> None:
    settings = ProxySettings(warmup_fraction=0.1, min_lr_fraction=0.1)
    factors = [_lr_factor(step, n_steps=100, settings=settings) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))


def test_loss_decreases_on_a_tiny_stream(pool: ProxyPool) -> None:
    steps: list[tuple[int, int, float]] = []
    run = train_proxy(
        pool, {0: 1.0, 1: 1.0}, _settings(), seed=0, on_step=lambda *a: steps.append(a)
    )
    first, last = run.loss_curve[0][1], run.final_loss
    assert first > math.log(pool.vocab_size) - 1.0  # starts near uniform
    assert last < first - 2.0
    assert run.tokens_seen >= 20_000 and run.tokens_per_second > 0
    assert not run.model.training
    assert [s[1] for s in steps] == [t for t, _ in run.loss_curve]
    summary = run.summary()
    assert summary["precision"] == "fp32" and summary["n_parameters"] == run.n_parameters


def test_same_seed_same_loss_other_seed_differs(pool: ProxyPool) -> None:
    settings = _settings(tokens_per_proxy=6_000)
    a = train_proxy(pool, {0: 0.7, 1: 0.3}, settings, seed=11)
    b = train_proxy(pool, {0: 0.7, 1: 0.3}, settings, seed=11)
    c = train_proxy(pool, {0: 0.7, 1: 0.3}, settings, seed=12)
    assert a.loss_curve == b.loss_curve
    assert a.final_loss != c.final_loss
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_a_proxy_stopped_at_its_rung_and_resumed_ends_as_if_never_stopped(
    pool: ProxyPool, tmp_path: Path
) -> None:
    """Successive halving stops proxies at a rung and resumes the kept ones, possibly in another
    process: the state goes through a file, and the resumed run must match a straight one."""
    settings = _settings(tokens_per_proxy=8_000)
    straight = train_proxy(pool, {0: 0.6, 1: 0.4}, settings, seed=5)
    assert straight.state is None
    stop = rung_step(settings, 0.3)
    n_steps = math.ceil(8_000 / (8 * 32))
    assert 0 < stop < n_steps and stop % max(1, n_steps // 100) == 0
    stopped = train_proxy(pool, {0: 0.6, 1: 0.4}, settings, seed=5, stop_after=stop)
    assert stopped.state is not None and stopped.state.step == stop
    assert stopped.tokens_seen == stop * 8 * 32
    assert stopped.loss_curve == straight.loss_curve[: len(stopped.loss_curve)]
    stopped.state.save(tmp_path / "rung.pt")
    resumed = train_proxy(
        pool, {0: 0.6, 1: 0.4}, settings, seed=5, resume=TrainingState.load(tmp_path / "rung.pt")
    )
    assert resumed.state is None and resumed.tokens_seen == straight.tokens_seen
    assert resumed.loss_curve == straight.loss_curve
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_mixture_changes_what_is_learned(pool: ProxyPool, tokenizer: Tokenizer) -> None:
    """A proxy trained only on group 0 predicts group 0 text better than one trained on group 1."""
    settings = _settings(tokens_per_proxy=10_000)
    on_cats = train_proxy(pool, {0: 1.0, 1: 0.0}, settings, seed=0).model
    on_ships = train_proxy(pool, {0: 0.0, 1: 1.0}, settings, seed=0).model
    ids = torch.tensor([tokenizer.encode(TEXTS[0][3]).ids[:32]])
    with torch.no_grad():
        assert on_cats(ids[:, :-1], ids[:, 1:]) < on_ships(ids[:, :-1], ids[:, 1:])


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU lacks native bf16")
def test_bf16_training_runs_after_fp32_in_one_process(pool: ProxyPool) -> None:
    train_proxy(pool, {0: 1.0}, _settings(tokens_per_proxy=1_000), seed=0)
    run = train_proxy(pool, {0: 1.0}, _settings(tokens_per_proxy=4_000, precision="bf16"), seed=0)
    assert run.precision == "bf16"
    assert run.final_loss < run.loss_curve[0][1]
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # fp32 master weights
