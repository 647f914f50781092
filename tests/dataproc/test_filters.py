"""Document filters: verdicts and scores on hand-built texts, thresholds at their edges,
options validation. Expected numbers are worked out by hand in the comments. The stages are
called through their `DocStage` contract (`process`), as the runner calls them."""
from __future__ import annotations

import gzip
import math
import random
from collections import Counter

import pytest
from pydantic import ValidationError

from dataproc.documents.contract import DocStage, StageResult
from dataproc.documents.filters.c4 import C4Filter, C4Options
from dataproc.documents.filters.fineweb import FineWebFilter, FineWebOptions
from dataproc.documents.filters.gopher import (
    GopherQualityFilter,
    GopherQualityOptions,
    GopherRepetitionFilter,
    GopherRepetitionOptions,
)
from dataproc.documents.filters.language import LanguageFilter, LanguageOptions
from dataproc.documents.filters.pii import PiiOptions, PiiRedactor
from dataproc.documents.filters import pii as pii_module
from dataproc.documents.filters import text_utils
from dataproc.documents.filters.text_utils import count_sentences, find_duplicates, line_runs, paragraphs, words
from dataproc.documents.filters.url import UrlFilter, UrlFilterOptions, parse_blocklist
from tests.support.gopher_oracle import find_all_duplicate as _datatrove_find_all_duplicate


def approx(expected: dict[str, float]) -> dict:
    return {k: pytest.approx(v, rel=1e-12, nan_ok=True) for k, v in expected.items()}


def check(stage: DocStage, value: str) -> tuple[str | None, dict]:
    """(drop reason, scores) of a stage that only filters: it must leave the text alone."""
    result = stage.process(value)
    assert result.text is None
    return result.drop, dict(result.scores)


def rewrite(stage: DocStage, text: str) -> tuple[str, dict]:
    """(new text, scores) of a stage that only rewrites: it must never drop."""
    result = stage.process(text)
    assert result.drop is None and result.text is not None
    return result.text, dict(result.scores)


def names(stage: DocStage) -> list[str]:
    return [column.name for column in stage.columns]


# ------------------------------------------------------------------------------ text_utils


def test_words_split_punctuation_and_clitics_like_spacy():
    assert words("I don't know, it's O'Brien's car... See https://ex.com/a?b=1. Costs 1,000.50 at 10:30") == [
        "I", "do", "n't", "know", ",", "it", "'s", "O'Brien", "'s", "car", "...",
        "See", "https://ex.com/a?b=1", ".", "Costs", "1,000.50", "at", "10:30",
    ]  # fmt: skip
    assert words("well-known #tag") == ["well", "-", "known", "#", "tag"]
    assert words("") == []


# Pieces that exercise every branch of the token regex and of the PII patterns, for the
# random texts below: whitespace of several kinds, clitics, URLs, numbers, addresses, phones.
_PIECES = [
    *"abnNtTsSdm'’ .,-_:/0123456789hH\n\t\x1c\x85\u00a0\u2028ſKéß\u0301…\"()[]<>@#+",
    "http://", "https://x.org/a", "n't", "N’T", "...", "'s", "’re", "O'Brien", "3.14", "1,000",
    "a@b.co", "x.y@mail.example.org", "logo@2x.png", " 8.8.8.8 ", "192.168.1.1", "1.2.3.4.5",
    "::1", "2001:4860:4860::8888", "::ffff:8.8.4.4", "a::b", "12:30:45:11:22:33:44",
    "+49 30 1234567", "+4930123456789", "+1 (212) 555-0100", "(212) 555-0100", "212-555-0100",
    "212.555.0100", "1-800-555-0199", "555-123 4567", "2023 1234", "\n\n", " the ",
]  # fmt: skip


def _random_texts(seed: int, count: int, max_pieces: int = 16) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(0, max_pieces))) for _ in range(count)]


def test_words_chunk_by_chunk_equals_one_regex_pass_over_the_text():
    # `words` tokenises whitespace-separated chunks and lets all-letter chunks skip the
    # regex; the definition is the regex over the whole text.
    def one_pass(text: str) -> list[str]:
        if "'" in text or "’" in text:
            text = text_utils._NEGATION_RE.sub(r" \g<0>", text)
        return text_utils._TOKEN_RE.findall(text)

    for text in _random_texts(0, 20_000):
        assert words(text) == one_pass(text), repr(text)


def test_paragraph_and_line_splits_equal_the_regex_splits():
    for text in [*_random_texts(1, 3_000), "", "\n", "a\n\n", "\n\nab\n\n\ncd\n", " \n\n x \n\n "]:
        assert paragraphs(text) == text_utils._PARAGRAPH_RE.split(text.strip()), repr(text)
        assert line_runs(text) == text_utils._LINE_RUN_RE.split(text), repr(text)


def test_count_sentences_skips_abbreviations_and_initials():
    assert count_sentences("Mr. Smith went to Washington. He saw e.g. The Capitol! Did he? J. R. Tolkien did.") == 4
    assert count_sentences("One sentence only") == 1
    assert count_sentences("   ") == 0


def test_find_duplicates_counts_every_repeat_after_the_first():
    assert find_duplicates(["ab", "c", "ab", "ab", "c"]) == (3, 2 + 2 + 1)


# -------------------------------------------------------------------------- gopher quality

QUALITY = GopherQualityFilter()


def test_gopher_quality_all_scores_by_hand():
    # 4 lines "- the data of the data #": tokens - the data of the data #  -> 5 words, 2 symbols
    # 6 lines "the data with the data...": tokens the data with the data ... -> 5 words, 1 symbol
    text = "\n".join(["- the data of the data #"] * 4 + ["the data with the data..."] * 6)
    reason, scores = check(QUALITY, text)
    assert scores == approx(
        {
            "gopher_word_count": 50,  # 4*5 + 6*5
            "gopher_mean_word_length": (4 * (3 + 4 + 2 + 3 + 4) + 6 * (3 + 4 + 4 + 3 + 4)) / 50,  # 3.44
            "gopher_hash_ratio": 4 / 64,  # 64 tokens = 50 words + 8 + 6 symbols
            "gopher_ellipsis_ratio": 6 / 64,
            "gopher_bullet_lines_ratio": 4 / 10,
            "gopher_ellipsis_lines_ratio": 6 / 10,
            "gopher_alpha_words_ratio": 50 / 64,
            "gopher_stop_words": 4 * 3 + 6 * 3,  # the, of, the / the, with, the
        }
    )
    assert reason == "too_many_ellipsis_lines"  # 0.6 > 0.3; every earlier rule passes
    assert list(scores) == names(GopherQualityFilter())


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        (["the", "data"] * 25, None),  # 50 words: the minimum
        (["the", "data"] * 24 + ["data"], "too_few_words"),  # 49
        (["the", "cat"] * 25, None),  # mean length exactly 3.0
        (["the"] * 48 + ["to", "of"], "short_mean_word_length"),  # (144 + 4) / 50 = 2.96
        (["the", "abcdefghijklmnopq"] * 25, None),  # (3 + 17) / 2 = 10.0 exactly
        (["the", "abcdefghijklmnopqr"] * 25, "long_mean_word_length"),  # 10.5
        (["the", "data"] * 27 + ["#"] * 6, None),  # 6 / 60 tokens = 0.1, not above
        (["the", "data"] * 27 + ["#"] * 7, "too_many_hashes"),  # 7 / 61
        (["..."] * 6 + ["the", "data"] * 27, None),  # not at the end: no ellipsis line
        (["..."] * 7 + ["the", "data"] * 27, "too_many_ellipses"),
        (["the", "data"] * 20 + ["123"] * 10, None),  # 40 / 50 tokens with a letter = 0.8
        (["the", "data"] * 20 + ["123"] * 11, "too_few_alpha_words"),  # 40 / 51
        (["data"] * 48 + ["the", "of"], None),  # 2 stop words
        (["data"] * 49 + ["the"], "too_few_stop_words"),
        (["data"] * 48 + ["The", "Of"], "too_few_stop_words"),  # case-sensitive, as datatrove
    ],
)
def test_gopher_quality_thresholds(tokens, reason):
    assert check(QUALITY, " ".join(tokens))[0] == reason


@pytest.mark.parametrize(("n_bullets", "reason"), [(9, None), (10, "too_many_bullet_lines")])
def test_gopher_quality_bullet_lines(n_bullets, reason):
    lines = ["- the data the data the data"] * n_bullets + ["the data the data the data"] * (10 - n_bullets)
    reason_, scores = check(QUALITY, "\n".join(lines))
    assert reason_ == reason
    assert scores["gopher_bullet_lines_ratio"] == n_bullets / 10


@pytest.mark.parametrize(("n_ellipsis", "reason"), [(3, None), (4, "too_many_ellipsis_lines")])
def test_gopher_quality_ellipsis_lines(n_ellipsis, reason):
    lines = ["the data the data the data..."] * n_ellipsis + ["the data the data the data."] * (10 - n_ellipsis)
    assert check(QUALITY, "\n".join(lines))[0] == reason


def test_gopher_quality_max_words_and_disabled_rules():
    strict = GopherQualityFilter(GopherQualityOptions(max_doc_words=60))
    assert check(strict, " ".join(["the", "data"] * 30))[0] is None
    assert check(strict, " ".join(["the", "data"] * 30 + ["x"]))[0] == "too_many_words"
    lax = GopherQualityFilter(GopherQualityOptions(min_doc_words=None, min_stop_words=None))
    assert check(lax, "data data")[0] is None


def test_gopher_quality_empty_text():
    reason, scores = check(QUALITY, "")
    assert reason == "too_few_words"
    assert scores["gopher_word_count"] == 0
    assert math.isnan(scores["gopher_mean_word_length"])


def test_gopher_quality_options_validation():
    with pytest.raises(ValidationError) as err:
        GopherQualityOptions(min_doc_words=-1)
    assert err.value.errors()[0]["loc"] == ("min_doc_words",)
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        GopherQualityOptions(min_words=5)
    with pytest.raises(ValidationError, match=r"min_doc_words \(200\) must be <= max_doc_words \(100\)"):
        GopherQualityOptions(min_doc_words=200, max_doc_words=100)
    with pytest.raises(ValidationError) as err:
        GopherQualityOptions(max_bullet_lines_ratio=1.5)
    assert err.value.errors()[0]["loc"] == ("max_bullet_lines_ratio",)


# ----------------------------------------------------------------------- gopher repetition

NO_NGRAMS = {"top_ngram_max_frac": {}, "dup_ngram_max_frac": {}}


def test_gopher_repetition_paragraphs():
    text = "a b\n\na b\n\nc d"  # 13 chars; paragraphs [a b, a b, c d]
    reason, scores = check(GopherRepetitionFilter(), text)
    assert reason == "dup_para_frac"
    assert scores["gopher_dup_para_frac"] == 1 / 3
    assert scores["gopher_dup_para_char_frac"] == 3 / 13
    assert math.isnan(scores["gopher_dup_line_frac"])  # not reached
    reason, _ = check(GopherRepetitionFilter(GopherRepetitionOptions(max_dup_para_frac=None)), text)
    assert reason == "dup_para_char_frac"  # 3/13 = 0.23 > 0.2


@pytest.mark.parametrize(
    ("n_unique", "n_dups", "reason"),
    [(6, 3, None), (8, 4, "dup_para_frac")],  # 3 of 10 = 0.3 is kept; 4 of 13 = 0.31 is not
)
def test_gopher_repetition_paragraph_fraction_boundary(n_unique, n_dups, reason):
    paras = [f"paragraph number {i} is unique" for i in range(n_unique)] + ["x"] + ["x"] * n_dups
    options = GopherRepetitionOptions(max_dup_line_frac=None, **NO_NGRAMS)
    reason_, scores = check(GopherRepetitionFilter(options), "\n\n".join(paras))
    assert scores["gopher_dup_para_frac"] == n_dups / len(paras)
    assert reason_ == reason


def test_gopher_repetition_lines():
    text = "x\nx\ny"  # one paragraph; lines [x, x, y]; 5 chars
    reason, scores = check(GopherRepetitionFilter(), text)
    assert reason == "dup_line_frac"
    assert scores["gopher_dup_para_frac"] == 0
    assert scores["gopher_dup_line_frac"] == 1 / 3
    assert scores["gopher_dup_line_char_frac"] == 1 / 5


def test_gopher_repetition_top_ngram():
    text = "ab cd ab cd ab cd ef gh"  # 23 chars; "ab cd" (5 chars) 3 times
    reason, scores = check(GopherRepetitionFilter(), text)
    assert reason == "top_2_gram"
    assert scores["gopher_top_2_gram_frac"] == 15 / 23


def test_gopher_repetition_top_ngram_ties_go_to_the_first_seen():
    # Every bigram occurs once; Counter.most_common picks the first, "x y" (3 chars), not "zzz www".
    options = GopherRepetitionOptions(top_ngram_max_frac={2: 1.0}, dup_ngram_max_frac={})
    _, scores = check(GopherRepetitionFilter(options), "x y zzz www")
    assert scores["gopher_top_2_gram_frac"] == 3 / 11


def test_gopher_repetition_duplicated_ngrams_count_overlaps_once():
    # [a b c d e] x 3: 5-grams at 0..4 are new; at 5 "abcde" repeats (+5 chars, jump to 10);
    # at 10 it repeats again (+5). 10 chars of 29; counting every repeated position would give 30.
    text = "a b c d e a b c d e a b c d e"
    options = GopherRepetitionOptions(max_dup_line_frac=None, top_ngram_max_frac={})
    reason, scores = check(GopherRepetitionFilter(options), text)
    assert reason == "duplicated_5_gram"
    assert scores["gopher_dup_5_gram_frac"] == 10 / 29
    assert math.isnan(scores["gopher_dup_6_gram_frac"])


@pytest.mark.parametrize(("extra_char", "reason"), [(True, None), (False, "duplicated_5_gram")])
def test_gopher_repetition_duplicated_ngram_boundary(extra_char, reason):
    # "aaa bbb ccc ddd eee" twice: 15 repeated chars. Middle: 14 three-char words and one
    # four-char word = 46 chars + 14 spaces = 60, so len = 19 + 1 + 60 + 1 + 19 = 100 -> 0.15.
    middle = [f"w{i:02d}" for i in range(14)] + ["wxyz" if extra_char else "wxy"]
    text = " ".join(["aaa bbb ccc ddd eee", *middle, "aaa bbb ccc ddd eee"])
    reason_, scores = check(GopherRepetitionFilter(GopherRepetitionOptions(top_ngram_max_frac={})), text)
    assert scores["gopher_dup_5_gram_frac"] == 15 / len(text)
    assert len(text) == (100 if extra_char else 99)
    assert reason_ == reason


def test_gopher_repetition_matches_datatrove_scan_on_random_texts():
    rng = random.Random(0)
    options = GopherRepetitionOptions(
        max_dup_line_frac=None, max_dup_para_frac=None, max_dup_line_char_frac=None,
        max_dup_para_char_frac=None, top_ngram_max_frac={},
        dup_ngram_max_frac={n: 1.0 for n in range(5, 11)},
    )  # fmt: skip
    filt = GopherRepetitionFilter(options)
    for _ in range(200):
        tokens = [rng.choice(["a", "bb", "ccc", "the", "of"]) for _ in range(rng.randint(0, 60))]
        text = " ".join(tokens) or "-"
        _, scores = check(filt, text)
        for n in range(5, 11):
            assert scores[f"gopher_dup_{n}_gram_frac"] == _datatrove_find_all_duplicate(words(text), n) / len(text)


def _most_common_chars(tokens: list[str], n: int) -> int:
    """datatrove's top n-gram score numerator: Counter.most_common over joined n-grams."""
    grams = [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0
    gram, count = Counter(grams).most_common(1)[0]
    return len(gram) * count


def test_gopher_repetition_ngram_scores_match_the_oracles_on_random_and_repetitive_texts():
    # Long texts with repeated stretches reach the deep n-gram levels, which are built only
    # from positions whose shorter n-grams repeat.
    rng = random.Random(2)
    options = GopherRepetitionOptions(
        max_dup_line_frac=None, max_dup_para_frac=None, max_dup_line_char_frac=None,
        max_dup_para_char_frac=None, top_ngram_max_frac={n: 1.0 for n in (1, 2, 3, 4, 7)},
        dup_ngram_max_frac={n: 1.0 for n in range(5, 13)},
    )  # fmt: skip
    filt = GopherRepetitionFilter(options)
    vocab = [f"w{i}" for i in range(40)] + ["the", "of", "a"]
    for trial in range(300):
        tokens = [rng.choice(vocab[: rng.randint(1, len(vocab))]) for _ in range(rng.randint(0, 200))]
        for _ in range(trial % 4):  # paste copies of stretches of the text back into it
            if tokens:
                start = rng.randrange(len(tokens))
                stretch = tokens[start : start + rng.randint(1, 30)]
                at = rng.randrange(len(tokens) + 1)
                tokens[at:at] = stretch
        text = " ".join(tokens) or "-"
        _, scores = check(filt, text)
        toks = words(text)
        for n in (1, 2, 3, 4, 7):
            assert scores[f"gopher_top_{n}_gram_frac"] == _most_common_chars(toks, n) / len(text), (text, n)
        for n in range(5, 13):
            assert scores[f"gopher_dup_{n}_gram_frac"] == _datatrove_find_all_duplicate(toks, n) / len(text), (text, n)


def test_gopher_repetition_clean_text_passes_and_custom_columns():
    text = (
        "The committee met on Tuesday to review the budget. Members raised concerns about rising costs.\n\n"
        "After a long discussion, they agreed to postpone the vote until next month."
    )
    reason, scores = check(GopherRepetitionFilter(), text)
    assert reason is None
    assert not any(math.isnan(v) for v in scores.values())
    assert list(scores) == names(GopherRepetitionFilter())
    custom = GopherRepetitionFilter(GopherRepetitionOptions(top_ngram_max_frac={3: 0.5}, dup_ngram_max_frac={}))
    assert names(custom)[-1] == "gopher_top_3_gram_frac"
    assert check(GopherRepetitionFilter(), "")[0] is None


def test_gopher_repetition_options_validation():
    with pytest.raises(ValidationError, match="fraction for n=5 must be in"):
        GopherRepetitionOptions(dup_ngram_max_frac={5: 1.5})
    with pytest.raises(ValidationError) as err:
        GopherRepetitionOptions(max_dup_line_frac=-0.1)
    assert err.value.errors()[0]["loc"] == ("max_dup_line_frac",)
    with pytest.raises(ValidationError):
        GopherRepetitionOptions(dup_line_frac=0.3)  # datatrove's name: not ours


# ---------------------------------------------------------------------------------- fineweb


def _long_lines(n: int, n_punct: int) -> list[str]:
    # 8 tokens and > 30 chars each ("line number 07 has several distinct words here").
    return [f"line number {i:02d} has several distinct words here" + ("." if i < n_punct else "") for i in range(n)]


@pytest.mark.parametrize(("n_punct", "reason"), [(3, "line_punct_ratio"), (4, None)])
def test_fineweb_line_punctuation(n_punct, reason):
    reason_, scores = check(FineWebFilter(), "\n".join(_long_lines(25, n_punct)))
    assert reason_ == reason  # 3/25 = 0.12 is dropped (<=), 4/25 kept
    assert scores["fineweb_line_punct_ratio"] == n_punct / 25
    if reason is None:
        assert scores == approx(
            {
                "fineweb_line_punct_ratio": 4 / 25,
                "fineweb_short_line_ratio": 0.0,
                "fineweb_char_dup_ratio": 0.0,
                "fineweb_newline_ratio": 24 / (25 * 8 + 4),  # the 4 "." are tokens too
            }
        )


@pytest.mark.parametrize(("n_short", "reason"), [(66, None), (67, "short_line_ratio")])
def test_fineweb_short_lines(n_short, reason):
    short = [f"Short line {i:03d}." for i in range(n_short)]  # 15 chars
    long = [f"This is a longer line number {i:03d} of the text." for i in range(100 - n_short)]
    reason_, scores = check(FineWebFilter(FineWebOptions(new_line_ratio=None)), "\n".join(short + long))
    assert scores["fineweb_short_line_ratio"] == n_short / 100
    assert reason_ == reason


@pytest.mark.parametrize(("dup_len", "reason"), [(9, None), (10, "char_dup_ratio")])
def test_fineweb_duplicated_line_chars(dup_len, reason):
    dup = "d" * (dup_len - 1) + "."
    lines = [f"{i}" * 98 + "." for i in range(1, 10)] + [dup, dup]
    total = 9 * 99 + 2 * dup_len  # newlines excluded: 9/909 = 0.0099 kept, 10/911 = 0.011 dropped
    reason_, scores = check(FineWebFilter(FineWebOptions(new_line_ratio=None)), "\n".join(lines))
    assert scores["fineweb_char_dup_ratio"] == dup_len / total
    assert reason_ == reason


@pytest.mark.parametrize(("n_lines", "reason"), [(10, None), (11, "list_ratio")])
def test_fineweb_newline_ratio(n_lines, reason):
    text = "\n".join(f"Item{i} x." for i in range(n_lines))  # 3 tokens a line
    reason_, scores = check(FineWebFilter(FineWebOptions(short_line_thr=None)), text)
    assert scores["fineweb_newline_ratio"] == (n_lines - 1) / (3 * n_lines)  # 0.3 / 0.303
    assert reason_ == reason


def test_fineweb_options_validation():
    with pytest.raises(ValidationError) as err:
        FineWebOptions(line_punct_thr=1.5)
    assert err.value.errors()[0]["loc"] == ("line_punct_thr",)
    with pytest.raises(ValidationError):
        FineWebOptions(short_line_length=-1)


# --------------------------------------------------------------------------------------- c4

C4_TEXT = "\n".join(
    [
        "This is a proper sentence. And another one here.",  # kept, 2 sentences
        "no terminal punctuation here",  # dropped
        "Too short.",  # dropped: 2 words
        "Please enable JavaScript to view this page.",  # dropped
        "Read our Privacy Policy before you continue.",  # dropped
        "Wikipedia says this is true.[1]",  # citation removed, kept, 1 sentence
        "Third line is fine. It has two sentences!",  # kept, 2 sentences
        "Wait for it...",  # dropped: ellipsis
    ]
)


def test_c4_keeps_and_rewrites_lines():
    assert C4Filter().process(C4_TEXT) == StageResult(
        None,
        {"c4_lines_kept_frac": 3 / 8, "c4_sentences": 5.0},
        text=(
            "This is a proper sentence. And another one here.\n"
            "Wikipedia says this is true.\n"
            "Third line is fine. It has two sentences!"
        ),
    )


def test_c4_too_few_sentences_at_the_boundary():
    text = C4_TEXT.replace("It has two sentences!", "it has one sentence!")  # 4 sentences now
    result = C4Filter().process(text)
    assert (result.text, result.drop, result.scores["c4_sentences"]) == (None, "too_few_sentences", 4.0)
    assert C4Filter(C4Options(min_num_sentences=4)).process(text).drop is None


def test_c4_page_rules():
    assert C4Filter().process(C4_TEXT + "\nLorem ipsum dolor sit amet.").drop == "lorem_ipsum"
    assert C4Filter().process(C4_TEXT + "\nThe function returns {x} for all inputs.").drop == "curly_bracket"
    # A "{" on a line the line rules already removed does not condemn the page.
    assert C4Filter().process(C4_TEXT + "\nvar x = {a: 1}").drop is None
    result = C4Filter().process("Lorem ipsum dolor sit amet.")
    assert result.drop == "lorem_ipsum" and math.isnan(result.scores["c4_sentences"]) and result.text is None


def test_c4_switches():
    lenient = C4Filter(C4Options(filter_javascript=False, filter_policy=False, min_num_sentences=0))
    new_text, scores = rewrite(lenient, C4_TEXT)
    assert "JavaScript" in new_text and "Privacy Policy" in new_text
    assert scores["c4_sentences"] == 7.0
    no_punct = C4Filter(C4Options(filter_no_terminal_punct=False, min_words_per_line=0, min_num_sentences=0))
    assert "no terminal punctuation here" in rewrite(no_punct, C4_TEXT)[0]
    long_word = "x" * 1001
    assert long_word not in rewrite(C4Filter(C4Options(min_num_sentences=0)), f"A {long_word} b c.")[0]
    with pytest.raises(ValidationError) as err:
        C4Options(min_num_sentences=-1)
    assert err.value.errors()[0]["loc"] == ("min_num_sentences",)


# -------------------------------------------------------------------------------------- pii

PII = PiiRedactor()


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("Write to John.Doe@Example.com today", "Write to <EMAIL> today", (1, 0, 0)),
        ("a@b.co and x_y+z@mail.example.org.", "<EMAIL> and <EMAIL>.", (2, 0, 0)),
        ("Server at 8.8.8.8, backup 1.1.1.1:53", "Server at <IP_ADDRESS>, backup <IP_ADDRESS>:53", (0, 2, 0)),
        ("v6 2606:4700:4700::1111 here", "v6 <IP_ADDRESS> here", (0, 1, 0)),
        ("Call +44 20 7946 0958 now", "Call <PHONE_NUMBER> now", (0, 0, 1)),
        ("Ring +1 (555) 234-5678.", "Ring <PHONE_NUMBER>.", (0, 0, 1)),
        ("Tel +33 1 23 45 67 89 or +4930123456", "Tel <PHONE_NUMBER> or <PHONE_NUMBER>", (0, 0, 2)),
        ("(212) 555-0123, 212-555-0123, 212.555.0123", "<PHONE_NUMBER>, <PHONE_NUMBER>, <PHONE_NUMBER>", (0, 0, 3)),
        ("Toll free 1-800-555-0199.", "Toll free <PHONE_NUMBER>.", (0, 0, 1)),
    ],
)
def test_pii_redacts(text, expected, counts):
    new_text, scores = rewrite(PII, text)
    assert new_text == expected
    assert (scores["pii_emails"], scores["pii_ips"], scores["pii_phones"]) == counts


@pytest.mark.parametrize(
    "text",
    [
        "In 2023-2024 we sold 1234567890 items for $1,234.56 on 2024-01-15 at 10:30:45.",
        "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2, SSN-like 123-45-6789.",
        "Version 1.2.3.4.5, build 10.0.19041.1, Chrome 120.0.6099.109.",
        "Private hosts 192.168.1.1, 10.0.0.1, 127.0.0.1 and doc range 203.0.113.5.",
        "IPv6 ::1, fe80::1, 2001:db8::1; C++ std::vector and a::b::c; MAC 00:1a:2b:3c:4d:5e.",
        "Retina logo@2x.png, npm package@1.2.3, user@localhost.",
        "Scores +10 20 30 and +12345678 views; population 8 000 000.",
        "Exchange 555-123-4567 (starts with 1) and mixed 555-234 5678.",
    ],
)
def test_pii_leaves_non_pii_alone(text):
    assert rewrite(PII, text) == (text, {"pii_emails": 0.0, "pii_ips": 0.0, "pii_phones": 0.0})


def test_pii_guards_hold_for_every_match_of_their_patterns():
    # Each full pattern runs only where its guard matches: the guard must match wherever
    # the pattern does, or an address would go unredacted.
    pairs = [
        (pii_module.EMAIL_RE, pii_module._EMAIL_GUARD),
        (pii_module.IPV4_RE, pii_module._IPV4_GUARD),
        (pii_module.IPV6_RE, pii_module._IPV6_GUARD),
        (pii_module.PHONE_INTL_RE, pii_module._PHONE_INTL_GUARD),
        (pii_module.PHONE_NANP_RE, pii_module._PHONE_NANP_GUARD),
    ]
    matched = Counter()
    for text in _random_texts(3, 20_000):
        for pattern, guard in pairs:
            for match in pattern.finditer(text):
                matched[pattern.pattern] += 1
                assert guard.search(match.group(0)), (pattern.pattern, match.group(0))
    assert len(matched) == len(pairs)  # every pattern matched something


def test_pii_options():
    text = "mail a@b.com from 192.168.0.1 or 8.8.8.8, call 212-555-0123"
    all_ips = PiiRedactor(PiiOptions(public_ips_only=False, ip_placeholder="[IP]"))
    assert rewrite(all_ips, text)[0] == "mail <EMAIL> from [IP] or [IP], call <PHONE_NUMBER>"
    off = PiiRedactor(PiiOptions(emails=False, ip_addresses=False, phone_numbers=False))
    assert rewrite(off, text) == (text, {"pii_emails": 0.0, "pii_ips": 0.0, "pii_phones": 0.0})
    with pytest.raises(ValidationError):
        PiiOptions(email=False)


# --------------------------------------------------------------------------------- language


@pytest.fixture(scope="module")
def language_filter() -> LanguageFilter:
    return LanguageFilter()


LANGUAGE_SAMPLES = {
    "en": "The quick brown fox jumps over the lazy dog.\nThis paragraph is written in plain English.",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund.\nDieser Absatz ist auf Deutsch.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux. Ce paragraphe est en français.",
    "zh": "敏捷的棕色狐狸跳过了懒狗。这一段是用中文写的。",
}


def test_language_detects_samples(language_filter):
    results = language_filter.process_batch(list(LANGUAGE_SAMPLES.values()))
    assert [r.scores["lang"] for r in results] == list(LANGUAGE_SAMPLES)
    for result, text in zip(results, LANGUAGE_SAMPLES.values()):
        assert 0.65 <= result.scores["lang_score"] <= 1.0
        assert language_filter.detect(text) == (result.scores["lang"], result.scores["lang_score"])


def test_language_verdicts(language_filter):
    reason, scores = check(language_filter, LANGUAGE_SAMPLES["en"])
    assert reason is None and list(scores) == ["lang", "lang_score"] == names(language_filter)
    assert scores["lang"] == "en" and 0.65 <= scores["lang_score"] <= 1.0
    assert check(language_filter, LANGUAGE_SAMPLES["de"])[0] == "not_allowed"
    assert language_filter.verdict("en", 0.64) == "low_score"
    assert language_filter.verdict("en", 0.65) is None
    assert check(language_filter, "")[0] == "low_score"
    assert check(language_filter, "   \n ")[1] == {"lang": "", "lang_score": 0.0}
    results = language_filter.process_batch([LANGUAGE_SAMPLES["en"], LANGUAGE_SAMPLES["zh"]])
    assert [r.drop for r in results] == [None, "not_allowed"]
    assert [r.scores["lang"] for r in results] == ["en", "zh"]


def test_language_any_language_and_validation():
    anything = LanguageFilter(LanguageOptions(languages=[], min_score=0.5))
    assert check(anything, LANGUAGE_SAMPLES["de"])[0] is None
    assert anything.verdict("de", 0.4) == "low_score"
    with pytest.raises(ValueError, match=r"lid.176 has no language \['xx'\]"):
        LanguageFilter(LanguageOptions(languages=["en", "xx"]))
    with pytest.raises(ValidationError) as err:
        LanguageOptions(min_score=1.5)
    assert err.value.errors()[0]["loc"] == ("min_score",)


# -------------------------------------------------------------------------------------- url


def test_url_default_blocklist_covers_subdomains():
    f = UrlFilter()
    assert f.process("https://www.pornhub.com/view?x=1") == StageResult("blocked_domain")
    assert f.process("http://a.b.xvideos.com:8080/") == StageResult("blocked_domain")
    assert check(f, "https://PornHub.com/") == ("blocked_domain", {})  # mixed case
    domains_only = UrlFilter(UrlFilterOptions(banned_substrings=[]))
    assert domains_only.process("https://notpornhub.com/") == StageResult()  # a suffix, not a label match
    assert domains_only.process("https://pornhub.com.example.org/") == StageResult()
    assert f.process("https://en.wikipedia.org/wiki/Sussex") == StageResult()
    assert f.process("") == StageResult() and f.process(None) == StageResult()


def test_url_banned_substrings_are_matched_on_the_normalised_url():
    f = UrlFilter()
    assert f.process("https://example.com/free-p-o-r-n/") == StageResult("banned_substring")
    assert f.process("https://example.com/XXX/videos") == StageResult("banned_substring")
    assert UrlFilter(UrlFilterOptions(banned_substrings=[])).process("https://example.com/xxx") == StageResult()


def test_url_user_blocklists(tmp_path):
    plain = tmp_path / "domains"
    plain.write_text("# my list\nexample.com\n\n*.bad.org  # wildcard form\nhttp://evil.net/path\n")
    packed = tmp_path / "more.gz"
    with gzip.open(packed, "wt") as f:
        f.write("packed.io\n")
    f = UrlFilter(UrlFilterOptions(use_default_blocklist=False, blocklist_paths=[str(plain), str(packed)]))
    assert f.blocked == {"example.com", "bad.org", "evil.net", "packed.io"}
    assert f.process("https://deep.sub.example.com/x").drop == "blocked_domain"
    assert f.process("https://bad.org/").drop == "blocked_domain"
    assert f.process("https://cdn.packed.io/").drop == "blocked_domain"
    assert f.process("https://example.co/").drop is None
    assert f.process("https://xhamster.com/").drop is None  # default list switched off
    with pytest.raises(FileNotFoundError, match="no such file"):
        UrlFilter(UrlFilterOptions(blocklist_paths=[str(tmp_path / "missing")]))


def test_url_options_validation():
    assert parse_blocklist(["  # only a comment", ""]) == set()
    with pytest.raises(ValidationError, match="can never match"):
        UrlFilterOptions(banned_substrings=["--"])
    with pytest.raises(ValidationError):
        UrlFilterOptions(blocklist="x")
