"""Gopher quality and repetition rules.

Source: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
Gopher" (arXiv:2112.11446), section A.1.1 and Table A1; definitions as implemented in
datatrove's `GopherQualityFilter` and `GopherRepetitionFilter` (huggingface/datatrove,
src/datatrove/pipeline/filters/gopher_{quality,repetition}_filter.py), which FineWeb uses.

Every threshold can be set to None to switch that rule off. Word tokens come from
`text_utils.words` (a regex stand-in for datatrove's spaCy tokenizer), through the document's
shared `DocumentWords` view: both filters (and FineWeb) tokenise a document once between them.

Quality rules, on the token list (punctuation tokens included unless said otherwise):
    words          tokens with at least one non-punctuation character; 50 <= count <= 100,000
    mean length    mean length of those words in [3, 10]
    symbol ratio   text.count("#") / tokens and (text.count("...") + text.count("…")) / tokens <= 0.1
    bullet lines   lines whose left-stripped text starts with "•" or "-" <= 90 % of lines
    ellipsis lines lines whose right-stripped text ends with "..." or "…" <= 30 % of lines
    alpha words    tokens containing an alphabetic character >= 80 % of tokens
    stop words     occurrences of {the, be, to, of, and, that, have, with} (case-sensitive) >= 2

Repetition rules (fractions of len(text) unless said otherwise):
    paragraphs (split on 2+ newlines): repeated paragraphs / paragraphs <= 0.3, chars <= 0.2
    lines (split on newline runs):     repeated lines / lines <= 0.3,           chars <= 0.2
    top n-gram, n = 2, 3, 4: len(most frequent n-gram, words joined by spaces) * its count
        <= 0.20, 0.18, 0.16
    duplicated n-grams, n = 5..10: characters (without spaces) of n-grams seen before, scanning
        left to right and jumping past each repeat so overlapping repeats count once,
        <= 0.15, 0.14, 0.13, 0.12, 0.11, 0.10
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from typing import Mapping, NamedTuple

import numpy as np
from pydantic import Field, field_validator, model_validator

from dataproc.documents.contract import Column, DocStage, StageResult, floats
from dataproc.options import StageOptions
from dataproc.documents.filters.text_utils import document_words, find_duplicates, is_symbol, line_runs, paragraphs

NAN = math.nan
Scores = dict[str, float]
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQualityOptions(StageOptions):
    """Thresholds of the quality rules; None switches a rule off.

    `min_alpha_words_ratio` is datatrove's `max_non_alpha_words_ratio` (same meaning: the
    minimum fraction of tokens with a letter), renamed after what it bounds.
    """

    min_doc_words: int | None = Field(50, ge=0)
    max_doc_words: int | None = Field(100_000, ge=1)
    min_avg_word_length: float | None = Field(3.0, ge=0.0)
    max_avg_word_length: float | None = Field(10.0, gt=0.0)
    max_symbol_word_ratio: float | None = Field(0.1, ge=0.0)
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0.0, le=1.0)
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0.0, le=1.0)
    min_alpha_words_ratio: float | None = Field(0.8, ge=0.0, le=1.0)
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: list[str] = Field(default_factory=lambda: list(STOP_WORDS))

    @model_validator(mode="after")
    def _ranges(self) -> "GopherQualityOptions":
        _check_range(self.min_doc_words, self.max_doc_words, "min_doc_words", "max_doc_words")
        _check_range(
            self.min_avg_word_length, self.max_avg_word_length, "min_avg_word_length", "max_avg_word_length"
        )
        return self


def _check_range(lo, hi, lo_name: str, hi_name: str) -> None:
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{lo_name} ({lo}) must be <= {hi_name} ({hi})")


class GopherQualityFilter(DocStage):
    """Gopher's document quality heuristics; all scores are computed from one tokenisation."""

    columns = floats(
        "gopher_word_count",
        "gopher_mean_word_length",
        "gopher_hash_ratio",
        "gopher_ellipsis_ratio",
        "gopher_bullet_lines_ratio",
        "gopher_ellipsis_lines_ratio",
        "gopher_alpha_words_ratio",
        "gopher_stop_words",
    )

    def __init__(self, options: GopherQualityOptions | None = None):
        self.opts = options or GopherQualityOptions()
        self.stop_words = frozenset(self.opts.stop_words)

    def scores(self, text: str) -> Scores:
        view = document_words(text)
        n_tokens = view.n_tokens
        # Per-token tests run once per distinct token: web text repeats most of its tokens.
        counts = view.token_counts
        n_words = word_chars = n_alpha = 0
        for token, count in counts.items():
            if not is_symbol(token):
                n_words += count
                word_chars += count * len(token)
            if _has_alpha(token):
                n_alpha += count
        n_stop = sum(counts[w] for w in self.stop_words)
        lines = view.lines or [""]

        def per_token(count: int) -> float:
            return count / n_tokens if n_tokens else NAN

        return {
            "gopher_word_count": float(n_words),
            "gopher_mean_word_length": word_chars / n_words if n_words else NAN,
            "gopher_hash_ratio": per_token(text.count("#")),
            "gopher_ellipsis_ratio": per_token(text.count("...") + text.count("…")),
            "gopher_bullet_lines_ratio": sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines),
            "gopher_ellipsis_lines_ratio": sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines),
            "gopher_alpha_words_ratio": per_token(n_alpha),
            "gopher_stop_words": float(n_stop),
        }

    def process(self, text: str) -> StageResult:
        s = self.scores(text)
        return StageResult(self.verdict(s), s)

    def verdict(self, s: Scores) -> str | None:
        o = self.opts
        n = s["gopher_word_count"]
        if o.min_doc_words is not None and n < o.min_doc_words:
            return "too_few_words"
        if o.max_doc_words is not None and n > o.max_doc_words:
            return "too_many_words"
        if n == 0:
            # Nothing below is defined without words; only reachable with min_doc_words 0/None.
            return None
        mean = s["gopher_mean_word_length"]
        if o.min_avg_word_length is not None and mean < o.min_avg_word_length:
            return "short_mean_word_length"
        if o.max_avg_word_length is not None and mean > o.max_avg_word_length:
            return "long_mean_word_length"
        if o.max_symbol_word_ratio is not None:
            if s["gopher_hash_ratio"] > o.max_symbol_word_ratio:
                return "too_many_hashes"
            if s["gopher_ellipsis_ratio"] > o.max_symbol_word_ratio:
                return "too_many_ellipses"
        if o.max_bullet_lines_ratio is not None and s["gopher_bullet_lines_ratio"] > o.max_bullet_lines_ratio:
            return "too_many_bullet_lines"
        if (
            o.max_ellipsis_lines_ratio is not None
            and s["gopher_ellipsis_lines_ratio"] > o.max_ellipsis_lines_ratio
        ):
            return "too_many_ellipsis_lines"
        if o.min_alpha_words_ratio is not None and s["gopher_alpha_words_ratio"] < o.min_alpha_words_ratio:
            return "too_few_alpha_words"
        if o.min_stop_words is not None and s["gopher_stop_words"] < o.min_stop_words:
            return "too_few_stop_words"
        return None


def _has_alpha(token: str) -> bool:
    # Most tokens are all-alphabetic, so the C-level isalpha() answers before the scan.
    return token.isalpha() or any(c.isalpha() for c in token)


# ---------------------------------------------------------------------------- repetition

DEFAULT_TOP_NGRAMS = {2: 0.20, 3: 0.18, 4: 0.16}
DEFAULT_DUP_NGRAMS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


class GopherRepetitionOptions(StageOptions):
    """Maximum repetition fractions; None (or an empty n-gram mapping) switches a rule off."""

    max_dup_line_frac: float | None = Field(0.3, ge=0.0, le=1.0)
    max_dup_para_frac: float | None = Field(0.3, ge=0.0, le=1.0)
    max_dup_line_char_frac: float | None = Field(0.2, ge=0.0, le=1.0)
    max_dup_para_char_frac: float | None = Field(0.2, ge=0.0, le=1.0)
    # n -> max fraction of characters; an empty mapping switches the rule off.
    top_ngram_max_frac: dict[int, float] = Field(default_factory=lambda: dict(DEFAULT_TOP_NGRAMS))
    dup_ngram_max_frac: dict[int, float] = Field(default_factory=lambda: dict(DEFAULT_DUP_NGRAMS))

    @field_validator("top_ngram_max_frac", "dup_ngram_max_frac")
    @classmethod
    def _ngram_map(cls, value: dict[int, float]) -> dict[int, float]:
        for n, frac in value.items():
            if not 1 <= n <= 32:
                raise ValueError(f"n-gram size must be in [1, 32], got {n}")
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"fraction for n={n} must be in [0, 1], got {frac}")
        return dict(sorted(value.items()))


def repetition_columns(top_ngrams, dup_ngrams) -> tuple[Column, ...]:
    return floats(
        "gopher_dup_para_frac",
        "gopher_dup_para_char_frac",
        "gopher_dup_line_frac",
        "gopher_dup_line_char_frac",
        *(f"gopher_top_{n}_gram_frac" for n in top_ngrams),
        *(f"gopher_dup_{n}_gram_frac" for n in dup_ngrams),
    )


class GopherRepetitionFilter(DocStage):
    """Gopher's repetition heuristics. Stops at the first failed rule; later scores are NaN.

    Its columns depend on the configured n-gram sizes, so they are set per instance.
    """

    def __init__(self, options: GopherRepetitionOptions | None = None):
        self.opts = options or GopherRepetitionOptions()
        self.top_ngrams = self.opts.top_ngram_max_frac
        self.dup_ngrams = self.opts.dup_ngram_max_frac
        self.columns = repetition_columns(self.top_ngrams, self.dup_ngrams)

    def process(self, text: str) -> StageResult:
        scores: Scores = {c.name: NAN for c in self.columns}
        reason = self._check(text, scores)
        return StageResult(reason, scores)

    def _check(self, text: str, s: Scores) -> str | None:
        o = self.opts
        n_chars = len(text)
        if n_chars == 0:
            for key in s:
                s[key] = 0.0
            return None

        paras = paragraphs(text)
        dup, dup_chars = find_duplicates(paras)
        s["gopher_dup_para_frac"] = dup / len(paras)
        s["gopher_dup_para_char_frac"] = dup_chars / n_chars
        if _over(s["gopher_dup_para_frac"], o.max_dup_para_frac):
            return "dup_para_frac"
        if _over(s["gopher_dup_para_char_frac"], o.max_dup_para_char_frac):
            return "dup_para_char_frac"

        lines = line_runs(text)
        dup, dup_chars = find_duplicates(lines)
        s["gopher_dup_line_frac"] = dup / len(lines)
        s["gopher_dup_line_char_frac"] = dup_chars / n_chars
        if _over(s["gopher_dup_line_frac"], o.max_dup_line_frac):
            return "dup_line_frac"
        if _over(s["gopher_dup_line_char_frac"], o.max_dup_line_char_frac):
            return "dup_line_char_frac"

        if not (self.top_ngrams or self.dup_ngrams):
            return None
        view = document_words(text)
        ngrams = _NGramIndex(view.tokens, view.token_counts)
        for n, max_frac in self.top_ngrams.items():
            frac = ngrams.top_chars(n) / n_chars
            s[f"gopher_top_{n}_gram_frac"] = frac
            if frac > max_frac:
                return f"top_{n}_gram"
        for n, max_frac in self.dup_ngrams.items():
            frac = ngrams.duplicated_chars(n) / n_chars
            s[f"gopher_dup_{n}_gram_frac"] = frac
            if frac > max_frac:
                return f"duplicated_{n}_gram"
        return None


def _over(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


class _NGramIndex:
    """The repeated n-grams of a token list, with exact integer ids, built lazily n by n.

    Only n-grams that occur more than once matter to both rules (the most frequent one, when
    none repeats, is simply the first), and an n-gram can repeat only where its (n-1)-gram
    prefix and its (n-1)-gram suffix both repeat. So level n is built from the start positions
    of level n-1 whose next position is also there, and keeps those whose n-gram repeats: on
    ordinary text these thin out within a few words, and each level costs an `np.unique` over
    what is left instead of over every position. The id of a repeated n-gram is the rank of
    (id of its prefix, id of its last word) among the candidates' pairs, so ids are
    collision-free. Once a level has no repeated n-gram the levels above it are empty too.
    """

    def __init__(self, tokens: list[str], counts: Mapping[str, int] | None = None):
        """`counts`: occurrences per distinct token in order of first appearance, when known."""
        n = self.n_tokens = len(tokens)
        counts = Counter(tokens) if counts is None else counts
        # Word ids in order of first appearance; map() keeps the per-token work in C.
        index = {w: i for i, w in enumerate(counts)}
        self.word_ids = np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=n)
        self.vocab_size = max(len(index), 1)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=n)
        self.char_cum = np.concatenate(([0], np.cumsum(lengths)))
        # n -> _Repeats of the n-grams that occur more than once
        self._levels: dict[int, _Repeats] = {}
        if n:
            word_counts = np.fromiter(counts.values(), dtype=np.int64, count=len(index))
            # Ids grow at each first appearance, so those positions are where a new maximum starts.
            running_max = np.maximum.accumulate(self.word_ids)
            first = np.flatnonzero(np.concatenate(([True], self.word_ids[1:] > running_max[:-1])))
            positions = np.flatnonzero(word_counts[self.word_ids] > 1)
            self._levels[1] = _Repeats(positions, self.word_ids[positions], word_counts, first)

    def _repeats(self, n: int) -> _Repeats:
        k = max(self._levels)
        while k < n:
            prev = self._levels[k]
            k += 1
            if prev.positions.size == 0:  # nothing repeats from here on; only `positions` is read
                self._levels[k] = prev
                continue
            # Candidates: a repeated (k-1)-gram at i whose suffix, the (k-1)-gram at i + 1, repeats;
            # positions are ascending and distinct, so i + 1 is there when it comes next.
            keep = np.zeros(prev.positions.size, dtype=bool)
            keep[:-1] = prev.positions[1:] == prev.positions[:-1] + 1
            positions = prev.positions[keep]
            pairs = prev.ids[keep] * self.vocab_size + self.word_ids[positions + (k - 1)]
            _, first, ids, counts = np.unique(pairs, return_index=True, return_inverse=True, return_counts=True)
            ids = ids.reshape(-1)
            kept = counts[ids] > 1
            self._levels[k] = _Repeats(positions[kept], ids[kept], counts, positions[first])
        return self._levels[n]

    def _chars(self, start: int, n: int) -> int:
        return int(self.char_cum[start + n] - self.char_cum[start])

    def top_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram (words joined by spaces) times its count.

        Ties go to the n-gram seen first, as `Counter.most_common` does.
        """
        if n > self.n_tokens:
            return 0
        rep = self._repeats(n)
        if rep.positions.size == 0:  # every n-gram occurs once: the first one wins
            return self._chars(0, n) + n - 1
        tied = np.flatnonzero(rep.counts == rep.counts.max())
        start = int(rep.first[tied].min())
        return int(rep.counts[tied[0]]) * (self._chars(start, n) + n - 1)

    def duplicated_chars(self, n: int) -> int:
        """Characters (words concatenated) of n-grams already seen, scanning left to right.

        datatrove's `find_all_duplicate`: at a repeat, count it and jump n tokens ahead, so
        overlapping repeats are not counted twice; jumped-over n-grams are never recorded.
        Positions that are an n-gram's first occurrence are always new and always recorded,
        so only positions where the n-gram occurred earlier need the sequential logic; and
        an n-gram that occurs once is never looked up, so only repeated ones are recorded.
        """
        if n > self.n_tokens:
            return 0
        rep = self._repeats(n)
        later = np.flatnonzero(rep.first[rep.ids] < rep.positions)
        if later.size == 0:
            return 0
        positions = rep.positions.tolist()
        ids = rep.ids.tolist()
        seen: set[int] = set()
        pos = repeated = 0
        recorded = 0  # index into positions of the first one not yet recorded or jumped
        for j in later.tolist():
            r = positions[j]
            if r < pos:
                continue
            recorded = bisect_left(positions, pos, recorded)
            seen.update(ids[recorded:j])
            if ids[j] in seen:
                repeated += self._chars(r, n)
                pos = r + n
            else:
                seen.add(ids[j])
                pos = r + 1
        return repeated


class _Repeats(NamedTuple):
    """The n-grams of one size that occur more than once."""

    positions: np.ndarray  # their start positions, ascending
    ids: np.ndarray  # the n-gram id at each of those positions
    counts: np.ndarray  # occurrences per id (ids of n-grams that occur once included)
    first: np.ndarray  # first start position per id
