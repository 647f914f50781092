"""The text filters share one word/line split per document (`text_utils.DocumentWords`): their
verdicts and scores must be exactly those of a straightforward implementation that splits the
text again in every rule. The references below are that: each filter's rules written out
plainly (datatrove-style n-gram counting for Gopher repetition), compared bit for bit on
generated documents built to hit every rule and edge (citation markers, blank and whitespace
lines, every line break `splitlines` knows, clitics, URLs, repeats) and on real pages."""
from __future__ import annotations

import gzip
import math
import random
import re
import struct
from collections import Counter
from pathlib import Path

import pytest

from dataproc.documents.extract import ExtractOptions, extract_text
from dataproc.documents.filters.c4 import CITATION_RE, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS, C4Filter
from dataproc.documents.filters.fineweb import STOP_CHARS, FineWebFilter
from dataproc.documents.filters.gopher import GopherQualityFilter, GopherRepetitionFilter
from dataproc.documents.filters.text_utils import (
    count_sentences,
    document_words,
    find_duplicates,
    is_symbol,
    line_runs,
    paragraphs,
    shared_views,
    words,
)
from tests.support.gopher_oracle import find_all_duplicate as _dup_chars

NAN = math.nan
EVAL_HTML = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "extraction" / "trafilatura_eval" / "html"

# ------------------------------------------------------------------------------ references


def ref_gopher_quality(f: GopherQualityFilter, text: str):
    tokens = words(text)
    n = len(tokens)
    real = [t for t in tokens if not is_symbol(t)]
    lines = text.splitlines() or [""]
    per = lambda c: c / n if n else NAN  # noqa: E731
    s = {
        "gopher_word_count": float(len(real)),
        "gopher_mean_word_length": sum(map(len, real)) / len(real) if real else NAN,
        "gopher_hash_ratio": per(text.count("#")),
        "gopher_ellipsis_ratio": per(text.count("...") + text.count("…")),
        "gopher_bullet_lines_ratio": sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines),
        "gopher_ellipsis_lines_ratio": sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines),
        "gopher_alpha_words_ratio": per(sum(any(c.isalpha() for c in t) for t in tokens)),
        "gopher_stop_words": float(sum(t in f.stop_words for t in tokens)),
    }
    return f.verdict(s), s, None


def _top_chars(tokens: list[str], n: int) -> int:
    grams = [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    top = Counter(grams).most_common(1)
    return len(top[0][0]) * top[0][1] if top else 0


def ref_gopher_repetition(f: GopherRepetitionFilter, text: str):
    o, s = f.opts, {c.name: NAN for c in f.columns}
    if not text:
        return None, dict.fromkeys(s, 0.0), None
    for kind, items in (("para", paragraphs(text)), ("line", line_runs(text))):
        dup, chars = find_duplicates(items)
        s[f"gopher_dup_{kind}_frac"] = dup / len(items)
        s[f"gopher_dup_{kind}_char_frac"] = chars / len(text)
        for rule in (f"dup_{kind}_frac", f"dup_{kind}_char_frac"):
            limit = getattr(o, f"max_{rule}")
            if limit is not None and s[f"gopher_{rule}"] > limit:
                return rule, s, None
    tokens = words(text)
    for n, limit in f.top_ngrams.items():
        s[f"gopher_top_{n}_gram_frac"] = _top_chars(tokens, n) / len(text)
        if s[f"gopher_top_{n}_gram_frac"] > limit:
            return f"top_{n}_gram", s, None
    for n, limit in f.dup_ngrams.items():
        s[f"gopher_dup_{n}_gram_frac"] = _dup_chars(tokens, n) / len(text)
        if s[f"gopher_dup_{n}_gram_frac"] > limit:
            return f"duplicated_{n}_gram", s, None
    return None, s, None


def ref_c4(f: C4Filter, text: str):
    o, lines, kept, n_sent = f.opts, text.splitlines(), [], 0
    for line in lines:
        line = line.strip()
        line_words = line.split()  # counted before citation markers go, as the reference code does
        if o.max_word_length is not None and any(len(w) > o.max_word_length for w in line_words):
            continue
        if o.remove_citations:
            line = CITATION_RE.sub("", line)
        if o.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            continue
        if len(line_words) < o.min_words_per_line:
            continue
        if o.filter_lorem_ipsum and "lorem ipsum" in line.lower():
            return "lorem_ipsum", {"c4_lines_kept_frac": NAN, "c4_sentences": NAN}, None
        if o.filter_javascript and "javascript" in line.lower():
            continue
        if o.filter_curly_bracket and "{" in line:
            return "curly_bracket", {"c4_lines_kept_frac": NAN, "c4_sentences": NAN}, None
        if o.filter_policy and any(p in line.lower() for p in POLICY_SUBSTRINGS):
            continue
        n_sent += count_sentences(line)
        kept.append(line)
    s = {"c4_lines_kept_frac": len(kept) / len(lines) if lines else 0.0, "c4_sentences": float(n_sent)}
    if n_sent < o.min_num_sentences:
        return "too_few_sentences", s, None
    return None, s, "\n".join(kept)


def ref_fineweb(f: FineWebFilter, text: str):
    o, s = f.opts, {c.name: NAN for c in f.columns}
    lines = text.split("\n")
    s["fineweb_line_punct_ratio"] = r = sum(line.endswith(STOP_CHARS) for line in lines) / len(lines)
    if o.line_punct_thr is not None and r <= o.line_punct_thr and not (r == 0 and o.line_punct_exclude_zero):
        return "line_punct_ratio", s, None
    s["fineweb_short_line_ratio"] = r = sum(len(line) <= o.short_line_length for line in lines) / len(lines)
    if o.short_line_thr is not None and r >= o.short_line_thr:
        return "short_line_ratio", s, None
    n_chars = len(text) - text.count("\n")
    s["fineweb_char_dup_ratio"] = r = (
        find_duplicates([line for line in lines if line.strip()])[1] / n_chars if n_chars else 0.0
    )
    if o.char_duplicates_ratio is not None and r >= o.char_duplicates_ratio:
        return "char_dup_ratio", s, None
    n_words = len(words(text))
    s["fineweb_newline_ratio"] = r = (len(lines) - 1) / n_words if n_words else (math.inf if len(lines) > 1 else 0.0)
    if o.new_line_ratio is not None and r > o.new_line_ratio:
        return "list_ratio", s, None
    return None, s, None


# ------------------------------------------------------------------------------ documents

_LINE_BREAKS = ["\n", "\n", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
_PIECES = [
    "The", "cat", "sat", "on", "the", "mat", "and", "of", "to", "with", "that", "don't", "it's", "O'Brien",
    "won’t", "n't", "'s", "we're", "3.14", "1,000", "10:30", "https://example.org/a?b=c", "e.g.", "U.S.",
    "...", "…", "#tag", "-", "•", "[1]", "[edit]", "[citation needed]", "[]", "{x}", "JavaScript", "privacy policy",
    "lorem ipsum", "naïve", "Straße", "日本語", "x" * 30, ".", ",", "!", "?", '"', "'", "(", ")", "Mr.", "Smith",
]  # fmt: skip


def generated_docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        lines = []
        pool = [" ".join(rng.choice(_PIECES[: 20 + i % 30]) for _ in range(rng.randint(0, 18))) for _ in range(12)]
        for _ in range(rng.randint(1, 40)):
            line = rng.choice(pool) if rng.random() < 0.3 else " ".join(
                rng.choice(_PIECES) for _ in range(rng.randint(0, 25))
            )
            if rng.random() < 0.5:
                line += rng.choice([".", "!", "?", ".[2]", "...", '."', " "])
            lines.append(rng.choice(["", " ", "\t"]) + line)
        docs.append("".join(line + rng.choice(_LINE_BREAKS) for line in lines)[: rng.choice([None, -1])])
    # Clean prose that passes every filter, so the later rules and FineWeb's word count run too.
    prose = "The cat sat on the mat with the dog and it's fine. Then it was time to go to the shop."
    for i in range(n // 5):
        body = [f"{prose} Line {j} of {i} has a citation.[{j}]" if j % 3 == 0 else f"{prose} Number {j}." for j in range(8)]
        docs.append("\n".join(body + ["menu", "Home | About", "Read our privacy policy."]))
    return docs + ["", "\n", " \n\n ", "a", "Hello, world...\n\n\nHello, world...\n"]


@pytest.fixture(scope="module")
def documents() -> list[str]:
    docs = generated_docs(160)  # > 20 C4-cleaned texts without the real pages too
    if EVAL_HTML.is_dir():  # real pages: 60 of trafilatura's eval set, extracted
        options = ExtractOptions()
        for path in sorted(EVAL_HTML.glob("*.html.gz"))[::4]:
            text = extract_text(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"), options)[0]
            if text:
                docs.append(text)
    return docs


# ------------------------------------------------------------------------------ tests

# The tokenizer as first written, with re.IGNORECASE (text_utils spells the cases out).
_REF_CLITIC = r"['’](?:s|re|ve|ll|d|m)\b"
_REF_TOKEN_RE = re.compile(
    rf"https?://[^\s<>\"'`]*[\w/]|\d+(?:[.,:/]\d+)+|{_REF_CLITIC}|\w+(?:(?!{_REF_CLITIC})['’]\w+)*|\.{{2,}}|[^\w\s]",
    re.IGNORECASE,
)
_REF_NEGATION_RE = re.compile(r"\Bn['’]t\b", re.IGNORECASE)


def ref_words(text: str) -> list[str]:
    if "'" in text or "’" in text:
        text = _REF_NEGATION_RE.sub(r" \g<0>", text)
    return _REF_TOKEN_RE.findall(text)


def test_words_match_the_ignorecase_tokenizer(documents):
    rng = random.Random(1)
    # Every letter case-folding could touch (long s, Kelvin sign, dotted/dotless i ...).
    alphabet = "hHtTpPsSſrReEvVlLdDmMnNkKKİıiI'’:/.,- \n" + "x1"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(3000)]
    texts += ["HTTPS://A.B/c DON’T it'S we'RE he'Ll ſ'ſ 'ſ ﬅ", "httpſ://x.y/z doN'T"]
    for text in texts + documents:
        assert words(text) == ref_words(text), text


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("d", a) == struct.pack("d", b) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def test_tokens_are_per_line(documents):
    """What the shared split relies on: a text's tokens are its lines' tokens, stripped or not."""
    for text in documents:
        per_line = [t for line in text.splitlines() for t in words(line)]
        assert words(text) == per_line
        assert per_line == [t for line in text.splitlines() for t in words(line.strip())]


def test_filters_sharing_one_split_match_the_references(documents):
    stages = [
        (GopherRepetitionFilter(), ref_gopher_repetition),
        (GopherQualityFilter(), ref_gopher_quality),
        (C4Filter(), ref_c4),
        (FineWebFilter(), ref_fineweb),
    ]
    with shared_views():  # as the runner runs a batch: stage by stage, C4's text feeds FineWeb
        texts = list(documents)
        for stage, reference in stages:
            results = stage.process_batch(texts)
            for text, result in zip(texts, results):
                drop, scores, new_text = reference(stage, text)
                assert result.drop == drop, (type(stage).__name__, text)
                assert result.scores.keys() == scores.keys()
                assert all(_same(result.scores[k], scores[k]) for k in scores), (result.scores, scores, text)
                assert result.text == new_text
            if stage.rewrites:
                texts = [r.text if r.text is not None else t for r, t in zip(results, texts)]
    assert sum(1 for t in texts if t not in documents) > 20  # FineWeb saw many C4-cleaned texts


def test_c4_hands_fineweb_the_cleaned_texts_word_count(documents):
    c4 = C4Filter()
    derived = 0
    with shared_views():
        for text in documents:
            document_words(text).tokens  # Gopher ran first
            result = c4.process(text)
            if result.text is not None and result.text != text:
                view = document_words(result.text)
                assert view.newline_split == result.text.split("\n")
                # Set by C4 unless the cleaned text is shorter than what it removed.
                derived += "n_tokens" in vars(view)
                assert view.n_tokens == len(words(result.text))
    assert derived > 20
    # Outside a batch scope every call gets a fresh view and nothing is kept.
    assert document_words("a b") is not document_words("a b")
