"""Quality signals and rules against hand-computed examples."""

from __future__ import annotations

import polars as pl
import pytest

from climb_assets.core.corpus.quality import (
    QUALITY_RULES,
    SIGNAL_COLUMNS,
    QualityRule,
    apply_rules,
    quality_schema,
    quality_signals,
)

GOOD_TEXT = """\
The river town of Alder sits where two cold streams meet before they reach the sea.
Every spring the fishermen repair their boats and paint the hulls in bright colours.
Visitors often walk along the old stone wall to watch the herons hunt at low tide.
The local bakery opens before dawn and sells rye bread that is still warm at six.
In the evening the square fills with families who share stories about the long winter.
Most of them agree that the town has changed slowly, and they like it that way."""


def signals_of(text: str) -> dict:
    return quality_signals([text]).row(0, named=True)


def test_word_signals_match_hand_counts() -> None:
    # words: the quick fox and the lazy dog 42 #1 ...  -> 10 words, 31 word characters
    row = signals_of("The quick fox and the lazy dog 42 #1 ...")
    assert row["q_n_words"] == 10
    assert row["q_stop_words"] == 3  # the, and, the (case-insensitive)
    assert row["q_mean_word_length"] == pytest.approx(31 / 10)
    assert row["q_alpha_word_frac"] == pytest.approx(7 / 10)  # "42", "#1", "..." have no letter
    assert row["q_hash_per_word"] == pytest.approx(1 / 10)
    assert row["q_ellipsis_per_word"] == pytest.approx(1 / 10)
    # the symbol rules fail only *above* 0.1; the alpha rule fails below 0.8
    assert "gopher_hash_symbols" not in row["quality_failed"]
    assert "gopher_ellipsis_symbols" not in row["quality_failed"]
    assert "gopher_alpha_words" in row["quality_failed"]


def test_line_signals_ignore_blank_lines() -> None:
    text = (
        "• first bullet\n"
        "• second bullet\n"
        "\n"
        "A complete sentence here.\n"
        "Trailing off...\n"
        "\n\n" + "x" * 40
    )
    row = signals_of(text)
    assert row["q_n_lines"] == 5
    assert row["q_bullet_line_frac"] == pytest.approx(2 / 5)
    assert row["q_ellipsis_line_frac"] == pytest.approx(1 / 5)
    assert row["q_terminal_punct_line_frac"] == pytest.approx(1 / 5)  # "..." is not terminal
    assert row["q_short_line_frac"] == pytest.approx(4 / 5)  # all but the 40-character line
    assert row["q_lines_per_word"] == pytest.approx(5 / 13)


def test_markdown_list_markers_count_as_bullets_but_not_a_bare_dash() -> None:
    row = signals_of("- one item\n* two item\n-3 degrees\n--- rule")
    assert row["q_bullet_line_frac"] == pytest.approx(2 / 4)


def test_duplicate_lines_and_paragraphs() -> None:
    # paragraphs: "one two\nthree", "four", "one two\nthree" (the last indented, CRLF newlines)
    text = "one two\nthree\n\nfour\n\n\n  one two  \r\nthree"
    row = signals_of(text)
    # lines: one two (7), three (5), four (4), one two (7), three (5): two repeats, 12 chars
    assert row["q_dup_line_frac"] == pytest.approx(2 / 5)
    assert row["q_dup_line_char_frac"] == pytest.approx(12 / 28)
    # paragraph "one two\nthree" is 13 characters; one repeat of three paragraphs
    assert row["q_dup_para_frac"] == pytest.approx(1 / 3)
    assert row["q_dup_para_char_frac"] == pytest.approx(13 / 30)
    assert {"gopher_dup_lines", "gopher_dup_line_chars", "gopher_dup_paragraphs"} <= set(
        row["quality_failed"]
    )


def test_top_ngram_fraction() -> None:
    # "to be" occurs twice: 2 x 4 characters over 13 word characters; no 3-gram repeats
    row = signals_of("to be or not to be")
    assert row["q_top_2gram_char_frac"] == pytest.approx(8 / 13)
    assert row["q_top_3gram_char_frac"] == 0.0


def test_top_ngram_ties_go_to_the_longest() -> None:
    # "aa b" and "dd ee" both occur twice; the longer one (4 characters) counts: 8 / 15
    row = signals_of("aa b aa b c dd ee dd ee")
    assert row["q_top_2gram_char_frac"] == pytest.approx(8 / 15)


def test_top_ngram_fraction_is_at_most_one() -> None:
    row = signals_of("x x x x x")  # "x x" occurs 4 times (overlapping) in 5 characters
    assert row["q_top_2gram_char_frac"] == 1.0


def test_duplicate_ngram_coverage() -> None:
    # "a b c d e" occurs twice: 10 of 13 single-character words are covered
    row = signals_of("a b c d e x a b c d e y z")
    assert row["q_dup_5gram_char_frac"] == pytest.approx(10 / 13)
    assert row["q_dup_6gram_char_frac"] == 0.0


def test_overlapping_duplicate_ngrams_count_each_character_once() -> None:
    row = signals_of("p q r s t u p q r s t u")
    assert row["q_dup_5gram_char_frac"] == 1.0  # four repeated 5-grams, but only 12 characters
    assert row["q_dup_6gram_char_frac"] == 1.0
    assert row["q_dup_7gram_char_frac"] == 0.0


def test_ngrams_never_match_across_documents() -> None:
    # concatenated, the two documents would repeat "x a b c d"; apart, nothing repeats
    rows = quality_signals(["a b c d e", "a b c d e", "x a b", "c d e x a b c d e"]).to_dicts()
    assert [row["q_dup_5gram_char_frac"] for row in rows] == [0.0, 0.0, 0.0, 0.0]
    # inside the last document "c d" (and "d e") does repeat: 2 x 2 of 9 characters
    assert [row["q_top_2gram_char_frac"] for row in rows] == pytest.approx([0, 0, 0, 4 / 9])


def test_c4_sentences_and_document_rules() -> None:
    text = "\n".join(
        [
            "This is one. This is two!",  # kept: 2 sentences
            "Enable javascript to see this page.",  # dropped: javascript
            "Too short.",  # dropped: fewer than 3 words
            "No ending here",  # dropped: no terminal punctuation
            "A cited claim stands here.[1]",  # kept once the citation is removed: 1
            "Lorem Ipsum dolor sit amet {x} {y}.",  # kept: 1
        ]
    )
    row = signals_of(text)
    assert row["q_c4_sentences"] == 4
    assert row["q_lorem_ipsum"] == 1
    assert row["q_curly_brackets"] == 2
    assert {"c4_few_sentences", "c4_lorem_ipsum", "c4_curly_bracket"} <= set(row["quality_failed"])


def test_good_prose_passes_every_rule() -> None:
    row = signals_of(GOOD_TEXT)
    assert row["quality_failed"] == []
    assert row["quality_score"] == 1.0


def test_empty_text_gives_zeros_not_errors() -> None:
    row = signals_of("")
    assert all(row[name] == 0 for name in SIGNAL_COLUMNS)
    assert "gopher_few_words" in row["quality_failed"]


def test_frame_shape_types_and_order() -> None:
    texts = [GOOD_TEXT, "short", "", GOOD_TEXT + "\n" + GOOD_TEXT]
    frame = quality_signals(texts)
    assert frame.schema == pl.Schema(quality_schema())
    assert frame.columns[: len(SIGNAL_COLUMNS)] == list(SIGNAL_COLUMNS)
    assert all(name.startswith("q_") for name in SIGNAL_COLUMNS)
    assert frame["q_n_words"].to_list() == [len(text.split()) for text in texts]
    assert quality_signals([]).schema == frame.schema


def test_chunking_and_repeated_runs_give_identical_results() -> None:
    texts = [GOOD_TEXT, "a b c d e a b c d e", "to be or not to be", "x\n\nx", GOOD_TEXT]
    whole = quality_signals(texts)
    assert quality_signals(texts, chunk_size=2).equals(whole)
    assert quality_signals(texts).equals(whole)


def test_score_is_the_share_of_rules_passed() -> None:
    rules = [
        QualityRule("high", "c4", "q_x", ">", 0.4),
        QualityRule("very_high", "c4", "q_x", ">=", 1.0),
    ]
    frame = apply_rules(pl.DataFrame({"q_x": [0.0, 0.4, 0.5, 1.0]}), rules)
    assert frame["quality_failed"].to_list() == [[], [], ["high"], ["high", "very_high"]]
    assert frame["quality_score"].to_list() == [1.0, 1.0, 0.5, 0.0]


def test_default_rules_are_consistent() -> None:
    assert len(QUALITY_RULES) == 30
    assert len({rule.name for rule in QUALITY_RULES}) == len(QUALITY_RULES)
    assert {rule.signal for rule in QUALITY_RULES} <= set(SIGNAL_COLUMNS)
    rows = quality_signals(["", "short text"]).to_dicts()
    for row in rows:
        assert row["quality_score"] == pytest.approx(1 - len(row["quality_failed"]) / 30)


def test_bad_rules_are_rejected_with_the_reason() -> None:
    frame = pl.DataFrame({"q_x": [1.0]})
    with pytest.raises(ValueError, match="q_missing"):
        apply_rules(frame, [QualityRule("r", "c4", "q_missing", ">", 0)])
    with pytest.raises(ValueError, match="unique"):
        apply_rules(frame, [QualityRule("r", "c4", "q_x", ">", 0)] * 2)
    with pytest.raises(ValueError, match="chunk_size"):
        quality_signals(["x"], chunk_size=0)
