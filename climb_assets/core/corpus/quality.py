"""Heuristic quality signals for documents, after the published Gopher, C4 and FineWeb rules.

Every document gets numeric signals (columns prefixed `q_`), each rule in `QUALITY_RULES` turns one
signal into pass/fail, `quality_failed` lists the rules a document fails, and

    quality_score = (rules passed) / (rules evaluated)            in [0, 1]

so the score rises strictly with every extra rule passed. Thresholds are the published defaults as
datatrove documents them (Gopher: Rae et al. 2021, table A1; C4: Raffel et al. 2020; FineWeb:
Penedo et al. 2024).

Definitions, chosen to be linear-time and easy to check by hand:
- words are whitespace-separated tokens of the lowercased text (no NLTK: it is ~50x slower);
  word characters are the characters of those tokens, i.e. whitespace is never counted.
- lines are the non-blank lines, stripped. Blank lines separate paragraphs in the normalized text,
  so counting them as lines (as FineWeb's raw splitting does) would punish ordinary paragraphs.
- paragraphs are runs of non-blank lines separated by at least one blank line.
- a duplicate line (paragraph) is an occurrence after the first of an identical line (paragraph);
  its fraction is over lines (paragraphs) and its character fraction over line (paragraph) chars.
- top n-gram fraction (n = 2..4): occurrences x word characters of the most frequent word n-gram
  (ties: the longest), over all word characters, at most 1; 0 when no n-gram occurs twice.
- duplicate n-gram fraction (n = 5..10), Gopher's definition: word characters covered by any
  n-gram occurring at least twice (all occurrences, overlaps counted once), over all word chars.
  (Both n-gram signals are counted in `core.corpus.quality_ngrams`.)
- every ratio whose denominator is zero is 0.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from climb_assets.core.corpus.quality_ngrams import DUP_NGRAM_SIZES, TOP_NGRAM_SIZES, NgramBatch

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher's
SHORT_LINE_CHARS = 30  # FineWeb: a stripped line of at most this many characters is short
C4_MIN_LINE_WORDS = 3

# Regular expressions (Rust syntax: they run inside polars).
# Every line break str.splitlines() knows becomes "\n", so lines mean the same as in Python.
_LINE_BREAKS = "\r\n?|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"
_WORD = r"\S+"
_LETTER = r"\p{L}"  # the characters str.isalpha() accepts
# Unicode bullet glyphs, plus Markdown list markers (the plain-text bullets of today's web text)
_BULLET_START = r"^(?:[•●○◦▪▫■□‣⁃►▶]|[-*] )"
_ELLIPSIS_END = r"(?:\.\.\.|…)$"
_TERMINAL_END = r"[.!?\"'”’]$"  # C4's and FineWeb's terminal punctuation, curly quotes added
_CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"  # removed before C4's line checks
_C4_DROPPED_LINE = (
    "javascript|terms of use|privacy policy|cookie policy|uses? cookies|use of cookies"
)
_AT_LEAST_3_WORDS = r"\S\s+\S+\s+\S"
_SENTENCE_END = r"[.!?…]+[\"'”’)\]]*(?:\s|$)"

# --- the signal columns -------------------------------------------------------------------------

_INT_SIGNALS = (
    "q_n_words",
    "q_stop_words",
    "q_n_lines",
    "q_c4_sentences",
    "q_lorem_ipsum",
    "q_curly_brackets",
)
_TEXT_FLOAT_SIGNALS = (
    "q_mean_word_length",
    "q_hash_per_word",
    "q_ellipsis_per_word",
    "q_bullet_line_frac",
    "q_ellipsis_line_frac",
    "q_alpha_word_frac",
    "q_dup_line_frac",
    "q_dup_line_char_frac",
    "q_dup_para_frac",
    "q_dup_para_char_frac",
    "q_terminal_punct_line_frac",
    "q_short_line_frac",
    "q_lines_per_word",
)
_NGRAM_SIGNALS = tuple(f"q_top_{n}gram_char_frac" for n in TOP_NGRAM_SIZES) + tuple(
    f"q_dup_{n}gram_char_frac" for n in DUP_NGRAM_SIZES
)
SIGNAL_COLUMNS: tuple[str, ...] = _INT_SIGNALS + _TEXT_FLOAT_SIGNALS + _NGRAM_SIGNALS


def quality_schema() -> dict[str, pl.DataType]:
    """Column types of the frame `quality_signals` returns (for empty frames)."""
    schema: dict[str, pl.DataType] = {name: pl.Int64() for name in _INT_SIGNALS}
    schema.update({name: pl.Float64() for name in _TEXT_FLOAT_SIGNALS + _NGRAM_SIGNALS})
    schema["quality_failed"] = pl.List(pl.Utf8())
    schema["quality_score"] = pl.Float64()
    return schema


# --- rules --------------------------------------------------------------------------------------

_COMPARATORS: dict[str, Callable[[pl.Expr, float], pl.Expr]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class QualityRule:
    """A document fails the rule when `signal <fails_when> threshold`."""

    name: str
    family: Literal["gopher_quality", "gopher_repetition", "c4", "fineweb"]
    signal: str
    fails_when: Literal["<", "<=", ">", ">="]
    threshold: float

    def fail_expr(self) -> pl.Expr:
        return _COMPARATORS[self.fails_when](pl.col(self.signal), self.threshold)

    def describe(self) -> str:
        return f"fails when {self.signal} {self.fails_when} {self.threshold:g}"


def _gopher_repetition_rules() -> list[QualityRule]:
    rules = [
        QualityRule("gopher_dup_lines", "gopher_repetition", "q_dup_line_frac", ">", 0.30),
        QualityRule("gopher_dup_paragraphs", "gopher_repetition", "q_dup_para_frac", ">", 0.30),
        QualityRule(
            "gopher_dup_line_chars", "gopher_repetition", "q_dup_line_char_frac", ">", 0.20
        ),
        QualityRule(
            "gopher_dup_paragraph_chars", "gopher_repetition", "q_dup_para_char_frac", ">", 0.20
        ),
    ]
    for n, limit in zip(TOP_NGRAM_SIZES, (0.20, 0.18, 0.16), strict=True):
        signal = f"q_top_{n}gram_char_frac"
        rules.append(QualityRule(f"gopher_top_{n}gram", "gopher_repetition", signal, ">", limit))
    for n, limit in zip(DUP_NGRAM_SIZES, (0.15, 0.14, 0.13, 0.12, 0.11, 0.10), strict=True):
        signal = f"q_dup_{n}gram_char_frac"
        rules.append(QualityRule(f"gopher_dup_{n}gram", "gopher_repetition", signal, ">", limit))
    return rules


QUALITY_RULES: tuple[QualityRule, ...] = (
    QualityRule("gopher_few_words", "gopher_quality", "q_n_words", "<", 50),
    QualityRule("gopher_many_words", "gopher_quality", "q_n_words", ">", 100_000),
    QualityRule("gopher_short_words", "gopher_quality", "q_mean_word_length", "<", 3),
    QualityRule("gopher_long_words", "gopher_quality", "q_mean_word_length", ">", 10),
    QualityRule("gopher_hash_symbols", "gopher_quality", "q_hash_per_word", ">", 0.1),
    QualityRule("gopher_ellipsis_symbols", "gopher_quality", "q_ellipsis_per_word", ">", 0.1),
    QualityRule("gopher_bullet_lines", "gopher_quality", "q_bullet_line_frac", ">", 0.9),
    QualityRule("gopher_ellipsis_lines", "gopher_quality", "q_ellipsis_line_frac", ">", 0.3),
    QualityRule("gopher_alpha_words", "gopher_quality", "q_alpha_word_frac", "<", 0.8),
    QualityRule("gopher_stop_words", "gopher_quality", "q_stop_words", "<", 2),
    *_gopher_repetition_rules(),
    QualityRule("c4_few_sentences", "c4", "q_c4_sentences", "<", 5),
    QualityRule("c4_lorem_ipsum", "c4", "q_lorem_ipsum", ">", 0),
    QualityRule("c4_curly_bracket", "c4", "q_curly_brackets", ">", 0),
    QualityRule("fineweb_terminal_punct", "fineweb", "q_terminal_punct_line_frac", "<=", 0.12),
    QualityRule("fineweb_short_lines", "fineweb", "q_short_line_frac", ">=", 0.67),
    QualityRule("fineweb_dup_line_chars", "fineweb", "q_dup_line_char_frac", ">=", 0.01),
    QualityRule("fineweb_list_lines", "fineweb", "q_lines_per_word", ">", 0.3),
)


# --- word, line and paragraph signals: polars expressions over a batch of documents -------------


def _ratio(numerator: str, denominator: str) -> pl.Expr:
    den = pl.col(denominator)
    return pl.when(den > 0).then(pl.col(numerator) / den).otherwise(0.0)


def _doc_frame(texts: Sequence[str]) -> pl.DataFrame:
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    return frame.with_row_index("doc").with_columns(
        pl.col("doc").cast(pl.Int64), pl.col("text").str.replace_all(_LINE_BREAKS, "\n")
    )


def _word_frame(docs: pl.DataFrame) -> pl.DataFrame:
    """One row per word, in document order: doc, word (lowercased), length."""
    words = pl.col("text").str.to_lowercase().str.extract_all(_WORD).alias("word")
    return (
        docs.select("doc", words)
        .explode("word")
        .drop_nulls("word")  # a document without words explodes to one null
        .with_columns(pl.col("word").str.len_chars().cast(pl.Int64).alias("length"))
    )


def _line_frame(docs: pl.DataFrame) -> pl.DataFrame:
    """One row per non-blank line: doc, para (paragraph number in its doc), line (stripped)."""
    return (
        docs.select("doc", pl.col("text").str.split("\n").alias("line"))
        .explode("line")
        .with_columns(pl.col("line").str.strip_chars())
        .with_columns((pl.col("line") == "").cum_sum().over("doc").alias("para"))
        .filter(pl.col("line") != "")
    )


def _c4_sentences() -> pl.Expr:
    """Sentences C4 keeps from each line (column `c4_line`): 0 if C4 drops the line, else >= 1."""
    line = pl.col("c4_line")
    kept = (
        line.str.contains(_TERMINAL_END)
        & ~line.str.contains(_ELLIPSIS_END)
        & line.str.contains(_AT_LEAST_3_WORDS)
        & ~line.str.to_lowercase().str.contains(_C4_DROPPED_LINE)
    )
    sentences = pl.max_horizontal(line.str.count_matches(_SENTENCE_END), pl.lit(1, pl.UInt32))
    return pl.when(kept).then(sentences).otherwise(0)


def _word_stats(words: pl.DataFrame) -> pl.DataFrame:
    return words.group_by("doc").agg(
        pl.len().alias("q_n_words"),
        pl.col("length").sum().alias("word_chars"),
        pl.col("word").is_in(STOP_WORDS).sum().alias("q_stop_words"),
        pl.col("word").str.contains(_LETTER).sum().alias("alpha_words"),
    )


def _line_stats(lines: pl.DataFrame) -> pl.DataFrame:
    line = pl.col("line")
    ends_in_ellipsis = line.str.contains(_ELLIPSIS_END)
    c4_line = line.str.replace_all(_CITATION, "").str.strip_chars_end().alias("c4_line")
    return (
        lines.with_columns(c4_line)
        .group_by("doc")
        .agg(
            pl.len().alias("q_n_lines"),
            line.str.contains(_BULLET_START).sum().alias("bullet_lines"),
            ends_in_ellipsis.sum().alias("ellipsis_lines"),
            (line.str.contains(_TERMINAL_END) & ~ends_in_ellipsis).sum().alias("terminal_lines"),
            (line.str.len_chars() <= SHORT_LINE_CHARS).sum().alias("short_lines"),
            _c4_sentences().sum().alias("q_c4_sentences"),
        )
    )


def _duplicate_stats(units: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Per doc: units, their chars, and the repeated occurrences (after the first) and chars."""
    counts = units.group_by("doc", "line").agg(pl.len().alias("n"))
    counts = counts.with_columns(pl.col("line").str.len_chars().alias("chars"))
    repeats = pl.col("n") - 1
    return counts.group_by("doc").agg(
        pl.col("n").sum().alias(f"{kind}s"),
        (pl.col("n") * pl.col("chars")).sum().alias(f"{kind}_chars"),
        repeats.sum().alias(f"dup_{kind}s"),
        (repeats * pl.col("chars")).sum().alias(f"dup_{kind}_chars"),
    )


def _paragraphs(lines: pl.DataFrame) -> pl.DataFrame:
    """Paragraphs as stripped lines joined by newlines, in column `line` (for _duplicate_stats)."""
    return lines.group_by("doc", "para", maintain_order=True).agg(pl.col("line").str.join("\n"))


def _text_signals(docs: pl.DataFrame, words: pl.DataFrame) -> pl.DataFrame:
    """All signals except the n-gram ones, one row per document in order."""
    lines = _line_frame(docs)
    text = pl.col("text")
    per_doc = [
        _word_stats(words),
        _line_stats(lines),
        _duplicate_stats(lines, "line"),
        _duplicate_stats(_paragraphs(lines), "para"),
    ]
    frame = docs.select(
        "doc",
        text.str.to_lowercase().str.contains("lorem ipsum", literal=True).alias("q_lorem_ipsum"),
        text.str.count_matches("{", literal=True).alias("q_curly_brackets"),
        text.str.count_matches("#", literal=True).alias("hashes"),
        text.str.count_matches(r"\.\.\.|…").alias("ellipses"),
    )
    for stats in per_doc:
        frame = frame.join(stats, on="doc", how="left")
    return (
        frame.fill_null(0)
        .sort("doc")
        .with_columns(
            _ratio("word_chars", "q_n_words").alias("q_mean_word_length"),
            _ratio("hashes", "q_n_words").alias("q_hash_per_word"),
            _ratio("ellipses", "q_n_words").alias("q_ellipsis_per_word"),
            _ratio("bullet_lines", "q_n_lines").alias("q_bullet_line_frac"),
            _ratio("ellipsis_lines", "q_n_lines").alias("q_ellipsis_line_frac"),
            _ratio("alpha_words", "q_n_words").alias("q_alpha_word_frac"),
            _ratio("dup_lines", "lines").alias("q_dup_line_frac"),
            _ratio("dup_line_chars", "line_chars").alias("q_dup_line_char_frac"),
            _ratio("dup_paras", "paras").alias("q_dup_para_frac"),
            _ratio("dup_para_chars", "para_chars").alias("q_dup_para_char_frac"),
            _ratio("terminal_lines", "q_n_lines").alias("q_terminal_punct_line_frac"),
            _ratio("short_lines", "q_n_lines").alias("q_short_line_frac"),
            _ratio("q_n_lines", "q_n_words").alias("q_lines_per_word"),
        )
    )


# --- public API -----------------------------------------------------------------------------------


def _signals_chunk(texts: Sequence[str]) -> pl.DataFrame:
    docs = _doc_frame(texts)
    words = _word_frame(docs)
    ngrams = NgramBatch(words, docs.height).signals()
    return _text_signals(docs, words).with_columns(
        pl.Series(name, values) for name, values in ngrams.items()
    )


def _signal_frame(texts: Sequence[str], chunk_size: int) -> pl.DataFrame:
    schema = {name: dtype for name, dtype in quality_schema().items() if name in SIGNAL_COLUMNS}
    frames = [
        _signals_chunk(texts[start : start + chunk_size]).select(
            pl.col(name).cast(dtype) for name, dtype in schema.items()
        )
        for start in range(0, len(texts), chunk_size)
    ]
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def _check_rules(rules: tuple[QualityRule, ...], columns: Sequence[str]) -> None:
    if not rules:
        raise ValueError("quality rules: at least one rule is needed")
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"quality rules: names must be unique, got {names}")
    unknown = sorted({rule.signal for rule in rules} - set(columns))
    if unknown:
        raise ValueError(f"quality rules refer to unknown signal columns: {unknown}")


def apply_rules(
    signals: pl.DataFrame, rules: Iterable[QualityRule] = QUALITY_RULES
) -> pl.DataFrame:
    """Add `quality_failed` (names of failed rules, in rule order) and `quality_score`."""
    rules = tuple(rules)
    _check_rules(rules, signals.columns)
    failed = pl.concat_list(
        [pl.when(rule.fail_expr()).then(pl.lit(rule.name)) for rule in rules]
    ).list.drop_nulls()
    return signals.with_columns(failed.cast(pl.List(pl.Utf8)).alias("quality_failed")).with_columns(
        (1.0 - pl.col("quality_failed").list.len() / len(rules)).alias("quality_score")
    )


def quality_signals(
    texts: Sequence[str],
    rules: Iterable[QualityRule] = QUALITY_RULES,
    chunk_size: int = 4096,
) -> pl.DataFrame:
    """One row per text: the `q_*` signals, `quality_failed` and `quality_score`, in input order.

    Texts are processed `chunk_size` at a time so memory stays bounded for any number of texts.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return apply_rules(_signal_frame(list(texts), chunk_size), rules)
