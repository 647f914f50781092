"""Cap how deeply a page's elements nest, before Lexbor parses it.

Depth costs quadratic time twice on the way to a page's text: Lexbor's tree builder checks the
stack of open elements at every block start tag, and each unwrap of an inline tag walks the
nested chain below it. 25,000 nested `<div>` took 3.3 s to parse and 25,000 unclosed `<span>`
11 s to extract, so one 5 MB page of either (a broken generator, or a crafted page) would hold a
worker for hours. Real pages nest far less: under 40 levels over the 415 real pages of the
test data (trafilatura's evaluation set and the WARC excerpts).

Browsers bound the same thing (Blink attaches elements past depth 512 to the 512th one), so
text is kept: start tags past `max_depth` are cut from the markup together with their end
tags, and what they held joins the element at `max_depth`.

The depth is tracked as an HTML tree builder would, closely enough for the cap: end tags close
the nearest open element of their name and every element opened inside it; void elements,
elements whose end tag is implied (`p`, `li`, `td`, ...) and a second `a`/`button`/`nobr` in
one do not nest; `script`, `style` and the other raw-text elements and comments hold no tags;
`/>` closes an element only inside `svg`/`math`.

A page with at most `check_above` `<` (the extractor's `depth_check_tags`) is not scanned, at the
cost of a count (~40 us for a 140 kB page; pages under 3 characters a `<` not even that):
scanning costs 2-3 us a tag, a third of extracting a big page, so it is kept for pages too big
to be harmless.
"""
from __future__ import annotations

import re
from typing import AnyStr, Iterable, Iterator

import numpy as np

_VOID = frozenset((
    "area", "base", "basefont", "bgsound", "br", "col", "command", "embed", "frame", "hr",
    "image", "img", "input", "keygen", "link", "meta", "param", "source", "spacer", "track", "wbr",
))  # fmt: skip
# End tags that are implied by the next sibling or the parent's end: they never stack up
# (a `<li>` closes the open `<li>`), and html/head/body exist once.
_IMPLIED = frozenset((
    "body", "caption", "colgroup", "dd", "dt", "head", "html", "li", "optgroup", "option", "p",
    "rb", "rp", "rt", "rtc", "tbody", "td", "tfoot", "th", "thead", "tr",
))  # fmt: skip
# A start tag of these closes an open one of the same name first (the adoption agency for `a`
# and `nobr`, the scope rule for `button`).
_NO_SELF_NESTING = frozenset(("a", "button", "nobr"))
_RAW_TEXT = frozenset(("iframe", "noembed", "noframes", "noscript", "script", "style", "textarea", "title", "xmp"))
_FOREIGN = frozenset(("math", "svg"))

# A tag: `/`?, name, attributes up to the next `<` or `>` (never past a `<`, so a run of
# unterminated tags stays linear), `/`? (greedy, then one step back: 2x faster than lazy).
_TAG = r"<(/?)([A-Za-z][^\s/<>]*)(?:[^<>]*[^<>/])?(/?)>"
# What holds no tags: comments and raw-text elements, to their end (or the page's).
_NO_TAGS = r"<!--.*?(?:-->|\Z)|<(" + "|".join(sorted(_RAW_TEXT)) + r")[\s>].*?(?:</\2[\s/>]|\Z)"
# One scan finds either; `plaintext` ends the markup outright (the rest is text).
_TOKENS = {kind: re.compile(convert(f"({_NO_TAGS})|<plaintext[\\s>]|{_TAG}"), re.S | re.I)
           for kind, convert in ((str, str), (bytes, str.encode))}


def cap_depth(html: AnyStr, max_depth: int, check_above: int = 0) -> AnyStr:
    """`html` with start tags nested deeper than `max_depth` (and their end tags) cut out; the
    same object when nothing nests that deep, or when it has at most `check_above` (or
    `max_depth`) `<` and is not looked at. str or UTF-8 bytes, returned as given."""
    kind, limit = type(html), max(max_depth, check_above)
    # A tag takes 3 characters at least: a page this short skips even the count.
    if len(html) <= 3 * limit or _count_lt(html) <= limit:
        return html
    tokens = _TOKENS[kind]
    # A first look without positions (the tags found in C); most pages that get here end here.
    if not any(_cut_marks(tokens.findall(html), max_depth)):
        return html
    matches = list(tokens.finditer(html))
    marks = _cut_marks((m.groups() for m in matches), max_depth)
    kept, last = [], 0
    for m, cut in zip(matches, marks):
        if cut:
            kept.append(html[last : m.start()])
            last = m.end()
    kept.append(html[last:])
    return html[:0].join(kept)


def _count_lt(html: str | bytes) -> int:
    """`<` in `html`; for bytes through numpy, 2-3x faster than `bytes.count` (~40-80 us for a
    140 kB page, much of it bringing the page into the cache the parse then finds it in)."""
    if isinstance(html, str):
        return html.count("<")
    return int(np.count_nonzero(np.frombuffer(html, np.uint8) == ord("<")))


def _cut_marks(tokens: Iterable[tuple], max_depth: int) -> Iterator[bool]:
    """For each token (the groups of `_TOKENS`), whether it is a tag to cut: a start tag past
    `max_depth`, or the end tag of one. Ends at `plaintext`."""
    names: list[str] = []  # the open elements, outermost first
    too_deep: list[bool] = []  # whether each one's start tag is cut
    count: dict[str, int] = {}
    foreign = 0  # open svg/math elements

    def close(name: str) -> bool:
        nonlocal foreign
        while True:
            top, cut = names.pop(), too_deep.pop()
            count[top] -= 1
            foreign -= top in _FOREIGN
            if top == name:
                return cut

    for no_tags, _, slash, name, self_closing in tokens:
        if not name:
            if not no_tags:  # <plaintext>
                return
            yield False  # a comment or raw text
            continue
        name = (name if isinstance(name, str) else name.decode("latin-1")).lower()
        if slash:
            yield bool(count.get(name)) and close(name)
            continue
        if name in _VOID or name in _IMPLIED or (self_closing and foreign):
            yield False
            continue
        if name in _NO_SELF_NESTING and count.get(name):
            close(name)
        cut = len(names) >= max_depth
        names.append(name)
        too_deep.append(cut)
        count[name] = count.get(name, 0) + 1
        foreign += name in _FOREIGN
        yield cut
