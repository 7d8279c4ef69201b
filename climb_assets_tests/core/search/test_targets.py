import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from climb_assets.core.search.pool_writer import build_pool
from climb_assets.core.search.proxy_model import ModelConfig, ProxyLM
from climb_assets.core.search.proxy_pool import ProxyPool
from climb_assets.core.search.proxy_training import train_proxy
from climb_assets.core.search.targets import (
    EVAL_BATCH_SIZE,
    METRIC_DIRECTIONS,
    OBJECTIVE_HIGHER_IS_BETTER,
    ChoiceExample,
    LoadedTarget,
    TargetFileError,
    _continuation_logprobs,
    bits_per_byte,
    choice_logprobs,
    continuations,
    load_target,
    objective,
    score_targets,
    score_text,
    spread_share,
)
from climb_assets.core.search.tokenizer import eos_id, train_bpe
from climb_assets.settings import ProxySettings, TargetSettings

SENTENCE = "the cat sat on the mat."
SETTINGS = ProxySettings(
    d_model=32,
    n_layers=1,
    n_heads=2,
    seq_len=32,
    batch_size=8,
    tokens_per_proxy=8_000,
    learning_rate=1e-2,
    precision="fp32",
    eval_max_tokens=1_000,
)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_bpe([SENTENCE] * 50 + ["the dog ran to the sky and a mat."] * 5, 300)


@pytest.fixture(scope="module")
def trained_model(tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> ProxyLM:
    """A proxy that has seen nothing but SENTENCE, over and over."""
    root = tmp_path_factory.mktemp("pool") / "pool"
    build_pool({0: [SENTENCE] * 100}, tokenizer, root)
    return train_proxy(ProxyPool.open(root), {0: 1.0}, SETTINGS, seed=0).model


@pytest.fixture(scope="module")
def random_model(tokenizer: Tokenizer) -> ProxyLM:
    torch.manual_seed(0)
    cfg = ModelConfig(tokenizer.get_vocab_size(), d_model=32, n_layers=1, n_heads=2, seq_len=32)
    return ProxyLM(cfg).eval()


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _choice(tmp_path: Path, lines: list[str]) -> TargetSettings:
    path = _write_jsonl(tmp_path / "mc.jsonl", lines)
    return TargetSettings(name="mc", kind="multiple_choice", path=path)


# ---------------------------------------------------------------------------- loading


def test_loads_both_kinds_skipping_blank_lines(tmp_path: Path) -> None:
    text_path = _write_jsonl(tmp_path / "t.jsonl", ['{"body": "hello"}', "", '{"body": "x"}'])
    text = load_target(TargetSettings(name="t", kind="text", path=text_path, text_field="body"))
    assert text.texts == ("hello", "x") and text.metric == "bits_per_byte"
    mc = load_target(_choice(tmp_path, ['{"query": "q", "choices": [" a", " b"], "gold": 1}']))
    assert mc.examples == (ChoiceExample("q", (" a", " b"), 1),) and mc.metric == "accuracy"


def test_max_examples_keeps_the_first(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", [json.dumps({"text": str(i)}) for i in range(5)])
    target = TargetSettings(name="t", kind="text", path=path, max_examples=2)
    assert load_target(target).texts == ("0", "1")


def test_missing_and_empty_files_name_the_file(tmp_path: Path) -> None:
    missing = TargetSettings(name="t", kind="text", path=tmp_path / "nope.jsonl")
    with pytest.raises(TargetFileError, match=r"'t'.*nope\.jsonl does not exist"):
        load_target(missing)
    empty = TargetSettings(
        name="t", kind="text", path=_write_jsonl(tmp_path / "e.jsonl", ["", " "])
    )
    with pytest.raises(TargetFileError, match=r"e\.jsonl is empty"):
        load_target(empty)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"query": "q", "choices": [" a", " b"], "gold": 0', r"line 2: invalid JSON"),
        ('["not", "an", "object"]', r"line 2: expected a JSON object"),
        ('{"choices": [" a", " b"], "gold": 0}', r"line 2: missing field 'query'"),
        ('{"query": 3, "choices": [" a", " b"], "gold": 0}', r"line 2: field 'query' must be str"),
        ('{"query": "q", "choices": " a", "gold": 0}', r"line 2: field 'choices' must be list"),
        ('{"query": "q", "choices": [" a"], "gold": 0}', r"line 2: field 'choices' must list"),
        ('{"query": "q", "choices": [" a", 2], "gold": 0}', r"line 2: field 'choices' must list"),
        ('{"query": "q", "choices": [" a", ""], "gold": 0}', r"line 2: field 'choices' must list"),
        ('{"query": "q", "choices": [" a", " b"]}', r"line 2: missing field 'gold'"),
        (
            '{"query": "q", "choices": [" a", " b"], "gold": "0"}',
            r"line 2: field 'gold' must be int",
        ),
        (
            '{"query": "q", "choices": [" a", " b"], "gold": true}',
            r"line 2: field 'gold' must be int",
        ),
        (
            '{"query": "q", "choices": [" a", " b"], "gold": 2}',
            r"line 2: field 'gold' is 2, outside",
        ),
        ('{"query": "q", "choices": [" a", " b"], "gold": -1}', r"line 2: field 'gold' is -1"),
    ],
)
def test_bad_choice_records_name_file_line_and_field(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    good = '{"query": "q", "choices": [" a", " b"], "gold": 0}'
    with pytest.raises(TargetFileError, match=r"mc\.jsonl, " + message):
        load_target(_choice(tmp_path, [good, bad_line, good]))


def test_bad_text_record_names_the_configured_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", ['{"text": "fine"}', '{"text": ["no"]}'])
    with pytest.raises(TargetFileError, match=r"t\.jsonl, line 2: field 'text' must be str"):
        load_target(TargetSettings(name="t", kind="text", path=path))
    with pytest.raises(TargetFileError, match=r"line 1: missing field 'body'"):
        load_target(TargetSettings(name="t", kind="text", path=path, text_field="body"))


def test_metric_must_fit_the_kind(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", ['{"text": "fine"}'])
    with pytest.raises(ValueError, match="metric 'accuracy' does not apply to kind 'text'"):
        load_target(TargetSettings(name="t", kind="text", path=path, metric="accuracy"))


# ---------------------------------------------------------------------------- scoring


def test_bits_per_byte_hand_example() -> None:
    # 4 tokens at probability 1/4 each = 8 bits of surprise, spread over 2 bytes.
    assert bits_per_byte(4 * math.log(4), 2) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)


def _hand_nll(model: ProxyLM, ids: list[int]) -> float:
    """Summed NLL of ids[1:] given the previous tokens, straight from the model's logits."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return -sum(float(log_probs[i, t]) for i, t in enumerate(ids[1:]))


def test_text_scores_match_a_hand_computation(random_model: ProxyLM, tokenizer: Tokenizer) -> None:
    texts = ["the cat sat.", "a mat é!"]  # é: 2 bytes, so bytes != characters
    eos = eos_id(tokenizer)
    encoded = [tokenizer.encode(t).ids for t in texts]
    total_nll = sum(_hand_nll(random_model, [eos, *ids]) for ids in encoded)
    n_tokens = sum(len(ids) for ids in encoded)
    scores = score_text(random_model, tokenizer, texts, SETTINGS)
    assert scores["tokens"] == n_tokens and scores["bytes"] == 12 + 9
    assert scores["loss"] == pytest.approx(total_nll / n_tokens, rel=1e-5)
    assert scores["bits_per_byte"] == pytest.approx(total_nll / math.log(2) / 21, rel=1e-5)


@pytest.mark.parametrize(
    ("n", "share", "expected"),
    [
        (8, 1.0, list(range(8))),
        (8, 0.25, [0, 4]),
        (10, 0.25, [0, 3, 6]),  # 2.5 of 10, rounded up
        (10, 0.5, [0, 2, 4, 6, 8]),
        (3, 0.01, [0]),  # at least one
        (0, 0.5, []),
    ],
)
def test_a_share_is_spread_evenly_from_the_first(n: int, share: float, expected: list) -> None:
    assert spread_share(n, share) == expected


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share must be in"):
        spread_share(4, share)


def test_a_share_of_a_target_scores_exactly_its_spread_documents_and_examples(
    random_model: ProxyLM, tokenizer: Tokenizer
) -> None:
    """What a rung scores (search.rung_target_share): the same as scoring the chosen documents
    and examples whole, so a share is a subset of the target, not a different measure."""
    texts = [f"the cat {'sat ' * i}on the mat." for i in range(8)]
    text = LoadedTarget(TargetSettings(name="t", kind="text", path=Path("t")), texts=tuple(texts))
    examples = tuple(
        ChoiceExample(f"the cat {'sat ' * i}on", (" mat.", " sky."), 0) for i in range(8)
    )
    mc = LoadedTarget(
        TargetSettings(name="c", kind="multiple_choice", path=Path("c")), examples=examples
    )
    part = score_targets(random_model, tokenizer, [text, mc], SETTINGS, share=0.25)
    by_hand = score_targets(
        random_model,
        tokenizer,
        [
            LoadedTarget(text.settings, texts=(texts[0], texts[4])),
            LoadedTarget(mc.settings, examples=(examples[0], examples[4])),
        ],
        SETTINGS,
    )
    assert part == by_hand
    whole = score_targets(random_model, tokenizer, [text, mc], SETTINGS)
    assert part["c/examples"] == 2 and whole["c/examples"] == 8
    assert part["t/tokens"] < whole["t/tokens"] and part["t/bytes"] < whole["t/bytes"]


def test_text_longer_than_a_window_and_the_token_budget(
    random_model: ProxyLM, tokenizer: Tokenizer
) -> None:
    text = " ".join(["the cat sat on the mat and the dog ran"] * 20)  # ASCII: bytes == chars
    ids = tokenizer.encode(text).ids
    assert len(ids) > 3 * SETTINGS.seq_len
    capped = SETTINGS.model_copy(update={"eval_max_tokens": 50})
    scores = score_text(random_model, tokenizer, [text], capped)
    assert scores["tokens"] == 50
    assert scores["bytes"] == len(tokenizer.decode(ids[:50]))
    full = score_text(random_model, tokenizer, [text], SETTINGS)
    assert full["tokens"] == len(ids)  # windows cover every token exactly once
    assert full["loss"] == pytest.approx(
        sum(_window_nll(random_model, [eos_id(tokenizer), *ids])) / len(ids), rel=1e-5
    )


def _window_nll(model: ProxyLM, stream: list[int]) -> list[float]:
    seq_len = model.cfg.seq_len
    return [
        _hand_nll(model, stream[start : start + seq_len + 1])
        for start in range(0, len(stream) - 1, seq_len)
    ]


def test_choice_logprob_matches_the_logits(random_model: ProxyLM, tokenizer: Tokenizer) -> None:
    example = ChoiceExample("the cat sat on the", (" mat.", " dog ran"), 0)
    (logprobs,), (counts,) = choice_logprobs(random_model, tokenizer, [example], seq_len=32)
    context = [eos_id(tokenizer), *tokenizer.encode(example.query).ids]
    choice = tokenizer.encode(" dog ran").ids
    with torch.no_grad():
        logits = random_model(torch.tensor([context + choice[:-1]]))[0]
    log_probs = F.log_softmax(logits.double(), dim=-1)
    by_hand = sum(float(log_probs[len(context) - 1 + i, t]) for i, t in enumerate(choice))
    assert counts[1] == len(choice)
    assert logprobs[1] == pytest.approx(by_hand, rel=1e-5)


def test_batched_logprobs_come_back_in_input_order(random_model: ProxyLM) -> None:
    """Sequences are batched by length; each result still belongs to its own sequence."""
    rng = np.random.default_rng(0)
    sequences = [
        (rng.integers(0, 200, size=int(rng.integers(3, 33))).tolist(), int(rng.integers(1, 3)))
        for _ in range(3 * EVAL_BATCH_SIZE)
    ]
    batched = _continuation_logprobs(random_model, sequences)
    alone = [_continuation_logprobs(random_model, [seq])[0] for seq in sequences]
    assert batched == pytest.approx(alone, rel=1e-5)


def test_choices_are_joined_to_the_query_by_one_space_when_needed() -> None:
    assert continuations(ChoiceExample("France is", ("Paris", " Rome", "\tOslo"), 0)) == [
        " Paris",
        " Rome",
        "\tOslo",
    ]
    assert continuations(ChoiceExample("France is ", ("Paris", "Rome"), 0)) == ["Paris", "Rome"]
    assert continuations(ChoiceExample("", ("Paris", "Rome"), 0)) == ["Paris", "Rome"]


def test_trained_model_picks_the_gold_continuation(
    trained_model: ProxyLM, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    records = [
        {"query": "the cat sat on the", "choices": [" sky.", " mat.", " dog."], "gold": 1},
        {"query": "the cat sat on", "choices": [" the mat.", " a dog."], "gold": 0},
        {"query": "the cat", "choices": [" ran to the sky.", " sat on the mat."], "gold": 1},
    ]
    mc = load_target(_choice(tmp_path, [json.dumps(r) for r in records]))
    text_path = _write_jsonl(tmp_path / "t.jsonl", [json.dumps({"text": SENTENCE})])
    text = load_target(TargetSettings(name="held_out", kind="text", path=text_path))
    scores = score_targets(trained_model, tokenizer, [mc, text], SETTINGS)
    assert scores["mc/accuracy"] == 1.0 and scores["mc/accuracy_norm"] == 1.0
    # memorised: far below the ~5.7 nats per token of a uniform guess over 300 tokens
    assert scores["mc/gold_loss"] < 1.0
    assert scores["held_out/bits_per_byte"] < 0.5
    assert not trained_model.training


def test_untrained_model_is_not_accurate_by_construction(
    random_model: ProxyLM, tokenizer: Tokenizer
) -> None:
    """Guards the accuracy test above: a random model fails some of many examples."""
    examples = [ChoiceExample("the", (" cat", " mat", " dog"), i % 3) for i in range(30)]
    target = LoadedTarget(
        TargetSettings(name="mc", kind="multiple_choice", path=Path("x")), examples=tuple(examples)
    )
    scores = score_targets(random_model, tokenizer, [target], SETTINGS)
    assert scores["mc/accuracy"] == pytest.approx(1 / 3)  # same answer every time, gold rotates


def test_objective_only_scores_gold_choices_for_gold_loss_alone(
    random_model: ProxyLM, tokenizer: Tokenizer
) -> None:
    """The search's scoring (objective_only) gives the same gold_loss from the gold choices alone;
    a target scored by accuracy still needs, and gets, every choice."""
    examples = tuple(
        ChoiceExample(f"the cat {'sat ' * i}on the", (" mat.", " sky.", " dog on a log."), i % 3)
        for i in range(40)
    )
    by_gold = LoadedTarget(
        TargetSettings(name="g", kind="multiple_choice", path=Path("g"), metric="gold_loss"),
        examples=examples,
    )
    by_accuracy = LoadedTarget(
        TargetSettings(name="a", kind="multiple_choice", path=Path("a")), examples=examples
    )
    full = score_targets(random_model, tokenizer, [by_gold, by_accuracy], SETTINGS)
    lean = score_targets(random_model, tokenizer, [by_gold, by_accuracy], SETTINGS, True)
    assert lean["g/gold_loss"] == pytest.approx(full["g/gold_loss"], rel=1e-9)
    assert "g/accuracy" not in lean and lean["g/examples"] == 40
    assert {k: v for k, v in lean.items() if k.startswith("a/")} == {
        k: v for k, v in full.items() if k.startswith("a/")
    }


# ---------------------------------------------------------------------------- objective


def test_objective_signs_and_weights() -> None:
    assert OBJECTIVE_HIGHER_IS_BETTER
    assert METRIC_DIRECTIONS["accuracy"] == 1 and METRIC_DIRECTIONS["bits_per_byte"] == -1
    targets = [
        TargetSettings(name="a", kind="multiple_choice", path=Path("a"), weight=1.0),
        TargetSettings(name="b", kind="text", path=Path("b"), weight=3.0),
        TargetSettings(name="c", kind="multiple_choice", path=Path("c"), metric="gold_loss"),
    ]
    scores = {"a/accuracy": 0.5, "b/bits_per_byte": 2.0, "c/gold_loss": 1.0, "c/accuracy": 9.0}
    assert objective(scores, targets) == pytest.approx((0.5 - 3 * 2.0 - 1.0) / 5)
    better = {**scores, "b/bits_per_byte": 1.5}
    assert objective(better, targets) > objective(scores, targets)
    with pytest.raises(KeyError, match="b/bits_per_byte"):
        objective({"a/accuracy": 0.5}, targets)
