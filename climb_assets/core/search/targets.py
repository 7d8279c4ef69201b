"""Target sets that a proxy is scored on, and the objective the mixture search maximizes.

Files are JSON Lines, one record per line (blank lines are skipped):

- text:             {"text": "..."}  (the field name comes from TargetSettings.text_field)
- multiple_choice:  {"query": "...", "choices": [" a", " b", ...], "gold": 0}

A choice is scored as the continuation of its query. When neither the query ends nor the choice
starts with whitespace, one space joins them (lm-evaluation-harness's default target delimiter),
so "The capital of France is" + "Paris" is scored as " Paris", the way running text tokenizes.

Metrics (keys of `score_targets`, as "<target name>/<metric>"):

- text: `loss` (mean NLL per token, nats) and `bits_per_byte` (total NLL / ln 2 / UTF-8 bytes).
- multiple_choice: `accuracy` (argmax over choices of the summed choice log-prob given the
  query), `accuracy_norm` (the same divided by the choice's UTF-8 bytes) and `gold_loss` (NLL per
  token of the gold choice). With `objective_only`, a target whose metric is `gold_loss` scores
  its gold choices alone and reports `gold_loss` alone: the search needs nothing else, and the
  other choices are most of the work (three quarters with four choices).

`objective` combines one metric per target into a single number where HIGHER IS BETTER:
lower-is-better metrics enter negated (see METRIC_DIRECTIONS).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from climb_assets.core.search.proxy_model import ProxyLM
from climb_assets.core.search.proxy_training import flush_denormals
from climb_assets.core.search.tokenizer import encode_many, eos_id
from climb_assets.settings import ProxySettings, TargetSettings

OBJECTIVE_HIGHER_IS_BETTER = True
# +1: higher is better, -1: lower is better. The objective adds direction * weight * value.
METRIC_DIRECTIONS: dict[str, int] = {
    "accuracy": 1,
    "accuracy_norm": 1,
    "loss": -1,
    "gold_loss": -1,
    "bits_per_byte": -1,
}
METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    "text": ("loss", "bits_per_byte"),
    "multiple_choice": ("accuracy", "accuracy_norm", "gold_loss"),
}
DEFAULT_METRIC = {"text": "bits_per_byte", "multiple_choice": "accuracy"}
EVAL_BATCH_SIZE = 32


class TargetFileError(ValueError):
    """A target file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class ChoiceExample:
    query: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class LoadedTarget:
    settings: TargetSettings
    texts: tuple[str, ...] = ()
    examples: tuple[ChoiceExample, ...] = ()

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def metric(self) -> str:
        return metric_of(self.settings)


def metric_of(target: TargetSettings) -> str:
    """The metric that enters the objective for this target (its explicit one or the default)."""
    metric = target.metric or DEFAULT_METRIC[target.kind]
    if metric not in METRICS_BY_KIND[target.kind]:
        raise ValueError(
            f"target {target.name!r}: metric {metric!r} does not apply to kind {target.kind!r} "
            f"(choose one of {METRICS_BY_KIND[target.kind]})"
        )
    return metric


# ---------------------------------------------------------------------------------- loading


def load_target(target: TargetSettings) -> LoadedTarget:
    """Read and validate a target file; every problem names the file and the line or field."""
    metric_of(target)
    path = Path(target.path)
    records = _read_jsonl(path, target.name)
    if target.max_examples is not None:
        records = records[: target.max_examples]
    if target.kind == "text":
        texts = tuple(_text_record(path, line, rec, target.text_field) for line, rec in records)
        return LoadedTarget(target, texts=texts)
    examples = tuple(_choice_record(path, line, rec) for line, rec in records)
    return LoadedTarget(target, examples=examples)


def _read_jsonl(path: Path, name: str) -> list[tuple[int, dict]]:
    """(line number, record) pairs; line numbers are 1-based."""
    if not path.is_file():
        raise TargetFileError(f"target {name!r}: file {path} does not exist")
    records: list[tuple[int, dict]] = []
    with path.open(encoding="utf-8-sig") as handle:  # a BOM is not part of the JSON
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TargetFileError(f"{path}, line {line_no}: invalid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise TargetFileError(f"{path}, line {line_no}: expected a JSON object")
            records.append((line_no, record))
    if not records:
        raise TargetFileError(f"target {name!r}: file {path} is empty (no JSON records)")
    return records


def _field(path: Path, line: int, record: dict, name: str, kind: type) -> object:
    if name not in record:
        raise TargetFileError(f"{path}, line {line}: missing field {name!r}")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TargetFileError(
            f"{path}, line {line}: field {name!r} must be {kind.__name__}, "
            f"got {type(value).__name__}"
        )
    return value


def _text_record(path: Path, line: int, record: dict, text_field: str) -> str:
    return str(_field(path, line, record, text_field, str))


def _choice_record(path: Path, line: int, record: dict) -> ChoiceExample:
    query = str(_field(path, line, record, "query", str))
    choices = _field(path, line, record, "choices", list)
    assert isinstance(choices, list)
    if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise TargetFileError(
            f"{path}, line {line}: field 'choices' must list at least 2 non-empty strings"
        )
    gold = _field(path, line, record, "gold", int)
    assert isinstance(gold, int)
    if not 0 <= gold < len(choices):
        raise TargetFileError(
            f"{path}, line {line}: field 'gold' is {gold}, outside 0..{len(choices) - 1}"
        )
    return ChoiceExample(query, tuple(choices), gold)


# ---------------------------------------------------------------------------------- scoring


def bits_per_byte(total_nll_nats: float, n_bytes: int) -> float:
    """Summed token NLL (nats) over the UTF-8 bytes the tokens spell, in bits."""
    if n_bytes <= 0:
        raise ValueError("bits_per_byte needs a positive byte count")
    return total_nll_nats / math.log(2) / n_bytes


@torch.inference_mode()
def score_targets(
    model: ProxyLM,
    tokenizer: Tokenizer,
    targets: Sequence[LoadedTarget],
    settings: ProxySettings,
    objective_only: bool = False,
    share: float = 1.0,
) -> dict[str, float]:
    """Every metric of every target, keyed "<name>/<metric>", plus the counts behind them
    ("<name>/tokens" and "<name>/bytes" for text, "<name>/examples" for multiple choice).
    With `objective_only`, multiple-choice targets scored by `gold_loss` skip the other metrics.
    With `share` < 1, only that share of each target is scored (`spread_share`): cheaper, for
    ranking proxies against each other (successive halving's rungs), not for reporting.

    Scoring runs in fp32, in eval mode, whatever precision the proxy was trained in."""
    was_training = model.training
    model.eval()
    scores: dict[str, float] = {}
    with flush_denormals():
        for target in targets:
            if target.settings.kind == "text":
                metrics = score_text(model, tokenizer, target.texts, settings, share)
            else:
                gold_only = objective_only and metric_of(target.settings) == "gold_loss"
                examples = [target.examples[i] for i in spread_share(len(target.examples), share)]
                metrics = score_choices(model, tokenizer, examples, settings.seq_len, gold_only)
            scores.update({f"{target.name}/{key}": value for key, value in metrics.items()})
    model.train(was_training)
    return scores


@torch.inference_mode()
def score_text(
    model: ProxyLM,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    settings: ProxySettings,
    share: float = 1.0,
) -> dict[str, float]:
    """Mean token loss and bits per byte over at most settings.eval_max_tokens document tokens
    (with `share` < 1, over that share of those documents, spread evenly over them).

    Each document is scored on its own, after an EOS token (as it would start in training), in
    non-overlapping windows of seq_len predicted tokens. Only document tokens are scored, so the
    bytes are exactly those of the scored documents (or of the kept prefix of the last one).
    """
    documents, doc_bytes = _text_documents(tokenizer, texts, settings.eval_max_tokens)
    kept = spread_share(len(documents), share)
    documents = [documents[i] for i in kept]
    n_bytes = sum(doc_bytes[i] for i in kept)
    windows = [w for doc in documents for w in _windows(doc, settings.seq_len)]
    nll = -sum(_continuation_logprobs(model, [(w, len(w) - 1) for w in windows]))
    n_tokens = sum(len(doc) - 1 for doc in documents)
    return {
        "loss": nll / n_tokens,
        "bits_per_byte": bits_per_byte(nll, n_bytes),
        "tokens": float(n_tokens),
        "bytes": float(n_bytes),
    }


def spread_share(n: int, share: float) -> list[int]:
    """Indices of `share` of n items (at least one), spread evenly from the first: a target
    that lists its domains one after another keeps every domain in its share."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    kept = min(n, max(1, math.ceil(share * n)))
    return [i * n // kept for i in range(kept)]


def _text_documents(
    tokenizer: Tokenizer, texts: Sequence[str], max_tokens: int
) -> tuple[list[list[int]], list[int]]:
    """[EOS, *ids] per document until max_tokens ids, and the UTF-8 bytes each one's ids
    spell."""
    eos = eos_id(tokenizer)
    documents: list[list[int]] = []
    doc_bytes: list[int] = []
    budget = 0
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    for text, encoding in zip(texts, encodings, strict=True):
        ids = encoding.ids
        if not ids:
            continue
        room = max_tokens - budget
        if len(ids) > room:  # cut the last document; count only the bytes its kept tokens cover
            ids = ids[:room]
            end_char = encoding.offsets[room - 1][1]
            doc_bytes.append(len(text[:end_char].encode("utf-8")))
        else:
            doc_bytes.append(len(text.encode("utf-8")))
        documents.append([eos, *ids])
        budget += len(ids)
        if budget >= max_tokens:
            break
    if not documents:
        raise ValueError("text target has no tokens to score (all documents empty?)")
    return documents, doc_bytes


def _windows(ids: list[int], seq_len: int) -> list[list[int]]:
    """Windows of up to seq_len + 1 tokens; each shares its first token with the previous
    window's last, so every token but the first is predicted exactly once."""
    return [ids[start : start + seq_len + 1] for start in range(0, len(ids) - 1, seq_len)]


@torch.inference_mode()
def score_choices(
    model: ProxyLM,
    tokenizer: Tokenizer,
    examples: Sequence[ChoiceExample],
    seq_len: int,
    gold_only: bool = False,
) -> dict[str, float]:
    """Log-likelihood accuracy, byte-length-normalized accuracy and gold-choice loss per token;
    with `gold_only`, the gold-choice loss alone, from the gold choices alone."""
    if gold_only:
        logprobs, n_tokens = choice_logprobs(model, tokenizer, examples, seq_len, gold_only=True)
        return {
            "gold_loss": float(-sum(lp[0] for lp in logprobs) / sum(nt[0] for nt in n_tokens)),
            "examples": float(len(examples)),
        }
    logprobs, n_tokens = choice_logprobs(model, tokenizer, examples, seq_len)
    correct = correct_norm = 0
    gold_nll = 0.0
    gold_tokens = 0
    for example, lp, nt in zip(examples, logprobs, n_tokens, strict=True):
        choice_bytes = np.array([len(c.encode("utf-8")) for c in continuations(example)])
        correct += int(np.argmax(lp) == example.gold)
        correct_norm += int(np.argmax(lp / choice_bytes) == example.gold)
        gold_nll -= lp[example.gold]
        gold_tokens += nt[example.gold]
    return {
        "accuracy": correct / len(examples),
        "accuracy_norm": correct_norm / len(examples),
        "gold_loss": float(gold_nll / gold_tokens),
        "examples": float(len(examples)),
    }


@torch.inference_mode()
def choice_logprobs(
    model: ProxyLM,
    tokenizer: Tokenizer,
    examples: Sequence[ChoiceExample],
    seq_len: int,
    gold_only: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per example: summed log-prob of each choice's tokens given EOS + query, and token counts
    (with `gold_only`, of the gold choice alone: arrays of length 1).

    If context + choice exceed seq_len + 1 tokens, the context is cut from the left (and a choice
    longer than seq_len tokens is cut to its first seq_len tokens).
    """
    eos = eos_id(tokenizer)
    scored = [[continuations(e)[e.gold]] if gold_only else continuations(e) for e in examples]
    queries = encode_many(tokenizer, [e.query for e in examples])
    choices = encode_many(tokenizer, [c for texts in scored for c in texts])
    sequences: list[tuple[list[int], int]] = []  # (ids, number of trailing choice tokens)
    position = 0
    for texts, query in zip(scored, queries, strict=True):
        for choice in choices[position : position + len(texts)]:
            sequences.append(_fit_context([eos, *query], choice, seq_len))
        position += len(texts)
    sums = _continuation_logprobs(model, sequences)
    logprobs, counts, position = [], [], 0
    for texts in scored:
        span = slice(position, position + len(texts))
        logprobs.append(np.array(sums[span]))
        counts.append(np.array([n for _, n in sequences[span]]))
        position += len(texts)
    return logprobs, counts


def continuations(example: ChoiceExample) -> list[str]:
    """The text scored for each choice: the choice, led by a space where the join needs one."""
    needs_space = bool(example.query) and not example.query[-1].isspace()
    return [
        " " + choice if needs_space and not choice[0].isspace() else choice
        for choice in example.choices
    ]


def _fit_context(context: list[int], choice: list[int], seq_len: int) -> tuple[list[int], int]:
    choice = choice[:seq_len]
    keep = seq_len + 1 - len(choice)
    return context[-keep:] + choice, len(choice)


def _continuation_logprobs(model: ProxyLM, sequences: list[tuple[list[int], int]]) -> list[float]:
    """Summed log-prob of the last n tokens of each sequence, in input order. Batched with right
    padding in length order, so a batch's rows are about as long as each other (a document's
    last window is short: in input order about a quarter of the rows' positions were padding)."""
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    sums = [0.0] * len(sequences)
    for first in range(0, len(order), EVAL_BATCH_SIZE):
        rows = order[first : first + EVAL_BATCH_SIZE]
        batch = [sequences[i] for i in rows]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width - 1), dtype=torch.bool)
        for row, (seq, n_choice) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, len(seq) - 1 - n_choice : len(seq) - 1] = True
        ids, mask = ids.to(device), mask.to(device)
        token_nll = _selected_token_nll(model, ids[:, :-1], ids[:, 1:], mask)
        per_row = torch.zeros(len(batch), dtype=torch.float64, device=device)
        per_row.index_add_(0, mask.nonzero()[:, 0], token_nll.double())
        for i, value in zip(rows, (-per_row).tolist(), strict=True):
            sums[i] = value
    return sums


def _selected_token_nll(
    model: ProxyLM, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """NLL (nats, fp32) of the target tokens where mask is True, in row-major order.

    Logits are computed only for the selected positions, in row chunks: the output layer is most
    of a small model's cost, and choices or padding leave many positions unscored.
    """
    hidden = model.hidden_states(inputs)[mask]
    wanted = targets[mask]
    weight = model.tok_emb.weight
    chunk_rows = max(1, 2**21 // weight.shape[0])
    parts = []
    for start in range(0, hidden.shape[0], chunk_rows):
        logits = hidden[start : start + chunk_rows] @ weight.T
        parts.append(F.cross_entropy(logits, wanted[start : start + chunk_rows], reduction="none"))
    return torch.cat(parts)


# ---------------------------------------------------------------------------------- objective


def objective(
    scores: Mapping[str, float], targets: Sequence[LoadedTarget | TargetSettings]
) -> float:
    """Weighted mean of each target's metric, signed so that HIGHER IS BETTER.

    objective = sum_t w_t * METRIC_DIRECTIONS[m_t] * scores["t/m_t"] / sum_t w_t, e.g. accuracy
    enters as is and bits_per_byte as its negative.
    """
    total_weight = 0.0
    value = 0.0
    for target in targets:
        settings = target.settings if isinstance(target, LoadedTarget) else target
        metric = metric_of(settings)
        key = f"{settings.name}/{metric}"
        if key not in scores:
            raise KeyError(f"objective needs score {key!r}, which score_targets did not produce")
        value += settings.weight * METRIC_DIRECTIONS[metric] * scores[key]
        total_weight += settings.weight
    if total_weight <= 0:
        raise ValueError("objective: target weights must sum to a positive number")
    return value / total_weight
