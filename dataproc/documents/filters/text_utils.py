"""Tokenisation helpers shared by the Gopher, C4 and FineWeb filters.

datatrove's filters tokenise English with spaCy's blank "en" tokenizer (earlier versions:
NLTK `word_tokenize`). Both split punctuation off words, so "Hello, world." is four tokens
and punctuation tokens count in the denominators of several ratios. `words` reproduces
spaCy's behaviour on ordinary prose with one compiled regex, an order of magnitude faster
and with no model to load:

- URLs ("https://...") stay one token;
- numbers with inner separators stay one token ("3.14", "1,000", "10:30", "1/2");
- English clitics are split off as spaCy does: "don't" -> "do" "n't", "it's" -> "it" "'s";
- other runs of word characters, keeping inner apostrophes ("O'Brien"), are one token;
- "..." (any run of 2+ dots) is one token;
- every other non-space character is a one-character token.

Known differences from spaCy: abbreviations ("e.g.", "U.S.") split at their dots, e-mail
addresses split at "@" and ".". The published thresholds are coarse enough that this does
not move typical documents across them.

No token holds whitespace or spans a line break (every line break `str.splitlines` knows is
whitespace), so a text's tokens are its lines' tokens in order, stripped or not.

`DocumentWords` is one document's split (tokens, their counts, lines), computed once and
shared: inside `shared_views()`, which the runner opens around a batch, `document_words(text)`
returns the same view to every stage that reads the same text, so Gopher repetition, Gopher
quality and FineWeb tokenise a document once between them.
"""
from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from typing import Iterator

# Characters datatrove treats as punctuation (datatrove.utils.text.PUNCTUATION): a token made
# only of these is a "symbol" and does not count as a word for length statistics.
PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)))
)

# Case-insensitive literals are spelled out as character classes instead of re.IGNORECASE,
# which slows every branch down by a third: [sSſ] is what "s" matches under IGNORECASE (U+017F,
# long s, folds to it); the other letters used here fold only to their ASCII pair.
_CLITIC = r"['’](?:[sSſ]|[rR][eE]|[vV][eE]|[lL][lL]|[dD]|[mM])\b"
_TOKEN_RE = re.compile(
    r"[hH][tT][tT][pP][sSſ]?://[^\s<>\"'`]*[\w/]"
    r"|\d+(?:[.,:/]\d+)+"
    rf"|{_CLITIC}"
    rf"|\w+(?:(?!{_CLITIC})['’]\w+)*"
    r"|\.{2,}|[^\w\s]"
)
# Splitting "n't" off inside the token regex needs a look-ahead at every word (a third
# slower); inserting a space before it first gives the same tokens, as spaces never count.
_NEGATION_RE = re.compile(r"\B[nN]['’][tT]\b")
_PARAGRAPH_RE = re.compile(r"\n{2,}")
_LINE_RUN_RE = re.compile(r"\n+")
# A sentence ends at ., ! or ? (optionally followed by closing quotes/brackets) before
# whitespace and an opening capital, digit or quote. This stands in for NLTK's punkt, which
# datatrove's C4 filter uses to count sentences; the look-behind keeps common abbreviations
# ("Mr. Smith", "e.g. The") and initials ("J. Smith") from ending a sentence.
_SENTENCE_END_RE = re.compile(
    # The leading look-ahead fails fast on the (most) positions that are not . ! or ?,
    # before the chain of look-behinds is tried.
    r"(?=[.!?])(?<!\b[A-Z])(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bvs)(?<!\bNo)(?<!\be\.g)(?<!\bi\.e)"
    r"(?<!\bJr)(?<!\bSr)(?<!\bInc)(?<!\bLtd)(?<!\bCo)(?<!\bProf)(?<!\betc)"
    r"[.!?]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])"
)


def words(text: str) -> list[str]:
    """Word and punctuation tokens, approximating spaCy's English tokenizer (see module doc)."""
    if "'" in text or "’" in text:
        text = _NEGATION_RE.sub(r" \g<0>", text)
    # Tokens never hold or span whitespace, and `str.split` splits on exactly what `\s`
    # matches, so tokenising chunk by chunk gives the same tokens. Most chunks (~80% of
    # real pages') are all letters, hence one `\w+` token: those skip the regex, which
    # would try its URL, number and clitic branches at each of them first.
    tokens: list[str] = []
    append, extend, findall = tokens.append, tokens.extend, _TOKEN_RE.findall
    for chunk in text.split():
        if chunk.isalpha():
            append(chunk)
        else:
            extend(findall(chunk))
    return tokens


def is_symbol(token: str) -> bool:
    """True when every character is punctuation (datatrove: not a "non-symbol word")."""
    return not token.strip(PUNCTUATION)


def paragraphs(text: str) -> list[str]:
    """Paragraphs as datatrove's Gopher repetition filter splits them (on 2+ newlines)."""
    text = text.strip()
    # Extracted text joins its blocks with single newlines: a substring test skips the regex.
    return _PARAGRAPH_RE.split(text) if "\n\n" in text else [text]


def line_runs(text: str) -> list[str]:
    """Lines as Gopher repetition splits them: on runs of newlines, so inner blank lines vanish."""
    return _LINE_RUN_RE.split(text) if "\n\n" in text else text.split("\n")


def count_sentences(line: str) -> int:
    """Sentences in one line of text; 0 for a blank line."""
    if not line.strip():
        return 0
    return len(_SENTENCE_END_RE.findall(line.strip())) + 1


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, characters in them): every occurrence after the first counts.

    datatrove's `find_duplicates`, used for the line and paragraph repetition ratios.
    """
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


class DocumentWords:
    """One document's tokens and lines; each part is computed on first use, then kept.

    Stages must not mutate what they get from it: the lists are shared.
    """

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def tokens(self) -> list[str]:
        """`words(text)`."""
        return words(self.text)

    @cached_property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @cached_property
    def token_counts(self) -> Counter[str]:
        """Occurrences per distinct token, keys in order of first appearance."""
        return Counter(self.tokens)

    @cached_property
    def lines(self) -> list[str]:
        """`text.splitlines()`."""
        return self.text.splitlines()

    @cached_property
    def newline_split(self) -> list[str]:
        """`text.split("\\n")`."""
        return self.text.split("\n")

    def has_tokens(self) -> bool:
        return "tokens" in self.__dict__

    def share_edited(self, text: str, lines: list[str], dropped: list[str], edited: list[tuple[str, str]]) -> None:
        """Hand the view of an edited version of this document to later stages of the batch.

        `text` is `"\\n".join(lines)`, where `lines` are this document's lines with `dropped`
        removed, `(old, new)` pairs of `edited` rewritten and the rest possibly stripped. As
        tokens are per line and never whitespace, its token count is this one's minus the
        dropped lines' tokens and the edits' difference: only those lines are tokenised.
        Does nothing outside `shared_views()`; leaves the count to be computed from `text`
        when this view was never tokenised (no Gopher stage ran) or `text` is the shorter.
        """
        memo = _SHARED.get()
        if memo is None or text in memo:
            return
        view = memo[text] = DocumentWords(text)
        view.newline_split = lines if lines else [""]
        removed = "\n".join(dropped)
        # Joined lines: one tokeniser call, same tokens. Only worth it while the removed lines
        # are shorter than what is left (list-like pages lose most of their lines).
        if self.has_tokens() and len(removed) < len(text):
            n = self.n_tokens - len(words(removed))
            if edited:
                n -= len(words("\n".join(old for old, _ in edited))) - len(words("\n".join(new for _, new in edited)))
            view.n_tokens = n


_SHARED: ContextVar[dict[str, DocumentWords] | None] = ContextVar("shared_document_words", default=None)


@contextmanager
def shared_views() -> Iterator[None]:
    """Within this block, `document_words` returns one view per distinct text (one batch)."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def document_words(text: str) -> DocumentWords:
    """The view of `text`: the shared one inside `shared_views()`, else a new one."""
    memo = _SHARED.get()
    if memo is None:
        return DocumentWords(text)
    view = memo.get(text)
    if view is None:
        view = memo[text] = DocumentWords(text)
    return view
