"""The nesting cap before parsing: deep pages come out at most `max_depth` elements deep with
their text, what does not nest is not counted, and real pages are never touched."""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest
from selectolax.lexbor import LexborHTMLParser

from dataproc.documents.extract import ExtractOptions, extract_text
from dataproc.documents.html_depth import cap_depth

PARA = "<p>" + "Deep content sentence, repeated for length. " * 3 + "</p>"
HTML_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "extraction" / "trafilatura_eval" / "html"


def element_depth(html: str | bytes) -> int:
    """Elements on the longest path below <body> (the body itself not counted)."""
    deepest, stack = 0, [(LexborHTMLParser(html).body, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        child = node.child
        while child is not None:
            if child.tag != "-text":
                stack.append((child, depth + 1))
            child = child.next
    return deepest


def body_text(html: str | bytes) -> str:
    return LexborHTMLParser(html).body.text(deep=True)


@pytest.mark.parametrize("page", [
    "<html><body>" + "<div>" * 3_000 + PARA + "</div>" * 3_000 + "<p>after</p></body></html>",  # closed
    "<html><body>" + "<span>x" * 3_000 + PARA + "</body></html>",  # never closed
    "<html><body>" + "<div><b>x</b>" * 1_500 + "<i>y" * 1_500 + PARA + "</body></html>",  # mixed
    "<html><body>" + "<div/>" * 3_000 + PARA + "</body></html>",  # `/>` closes nothing in HTML
], ids=["closed", "unclosed", "mixed", "div-slash"])
def test_deep_pages_come_out_capped_with_all_their_text(page) -> None:
    assert element_depth(page) >= 3_000
    out = cap_depth(page, 1_000)
    assert element_depth(out) == 1_000 + 1  # and the <p>: its end is implied, it never stacks up
    assert body_text(out) == body_text(page)  # every text node, in order
    assert cap_depth(page.encode(), 1_000) == out.encode()  # bytes in, the same bytes out


@pytest.mark.parametrize("page", [
    "<script>" + "'<div>' + " * 3_000 + "''</script>",  # raw text holds no tags
    "<style>" + "<div>" * 3_000 + "</style>",
    "<textarea>" + "<div>" * 3_000 + "</textarea>",
    "<!--" + "<div>" * 3_000 + "-->",
    "<plaintext>" + "<div>" * 3_000,  # the rest of the page is text
    "<svg>" + '<path d="M0 0"/>' * 3_000 + "</svg>",  # `/>` closes in svg
    "<p>x" * 3_000 + "<li>x" * 3_000 + "<td>x" * 3_000,  # end tags implied by the next one
    "<a href=#>x" * 3_000 + "<nobr>y" * 3_000,  # an `a` closes the open `a`
    "<br><img src=x.png><hr>" * 3_000,  # void
    "<div>x</div>" * 3_000 + "<span>y</span>" * 3_000,  # long but flat
], ids=["script", "style", "textarea", "comment", "plaintext", "svg", "implied", "a-nobr", "void", "flat"])
def test_what_does_not_nest_is_not_counted(page) -> None:
    page = "<html><body>" + page + "</body></html>"
    assert page.count("<") > 3_000
    assert cap_depth(page, 100) is page
    assert element_depth(page) < 100


def test_small_pages_are_not_scanned() -> None:
    page = "<html><body>" + "<div>" * 500 + PARA + "</body></html>"
    assert cap_depth(page, 100, check_above=1_000) is page  # 500 levels stand: too few tags to look
    assert element_depth(cap_depth(page, 100, check_above=500)) == 100 + 1  # and the <p>


def test_extraction_keeps_the_text_of_pages_too_deep_to_parse() -> None:
    # 25x Python's recursion limit; uncapped, 25,000 levels cost Lexbor's parse 3.3 s and
    # 25,000 unclosed <span> 11 s of unwrapping (both quadratic in depth).
    deep = "<html><body>" + "<div>" * 25_000 + PARA + "</div>" * 25_000 + "</body></html>"
    text, _ = extract_text(deep, ExtractOptions())
    assert text.startswith("Deep content sentence")
    spans = "<html><body>" + "<span>word " * 25_000 + PARA + "</body></html>"
    text, _ = extract_text(spans, ExtractOptions())
    assert text.split("\n") == [("word " * 25_000).strip(), PARA[3:-4].strip()]
    # Past `max_depth` blocks lose their tags, so their lines join the line of the block at it.
    a, b = "First block of text, long enough to count.", "Second block of text, long enough too."
    page = f"<html><body><div><div><div>{a}</div><div>{b}</div></div></div></body></html>"
    assert extract_text(page, ExtractOptions())[0] == f"{a}\n{b}"
    assert extract_text(page, ExtractOptions(max_depth=2, depth_check_tags=0))[0] == a + b


@pytest.mark.shared_data
@pytest.mark.skipif(not HTML_DIR.is_dir(), reason=f"trafilatura eval pages not found at {HTML_DIR}")
def test_real_pages_are_never_touched() -> None:
    pages = [gzip.decompress(p.read_bytes()) for p in sorted(HTML_DIR.glob("*.html.gz"))]
    assert len(pages) > 200
    # The count follows the tree: of the pages cut at 24, all but one are deeper than 24 ...
    cut = [p for p in pages if cap_depth(p, 24) is not p]
    assert len(cut) >= 5
    assert sum(element_depth(p) > 24 for p in cut) >= len(cut) - 1
    # ... and none nests 40 deep by it (the deepest tree: 36 below <body>); a page cut at 40
    # would be cut at 24 too.
    assert [p for p in cut if cap_depth(p, 40) is not p] == []


def test_tag_soup_never_raises_and_str_and_bytes_agree() -> None:
    # extract_text turns any exception into an empty page, which would drop it unseen.
    names = ["div", "SPAN", "a", "b", "p", "li", "td", "table", "svg", "path", "script", "title", "plaintext",
             "button", "nobr", "br", "x-y", "iframe"]
    attrs = ["", " a=1", " /", "/", ' x="<"', " y='>'"]
    other = ["<!--", "-->", "<", ">", "</", "<!", "<<div", "text", "é", " "]
    rng = random.Random(0)
    cut = 0
    for _ in range(600):
        parts = []
        for _ in range(rng.randrange(1, 300)):
            r, name = rng.random(), rng.choice(names)
            parts.append("<" + name + rng.choice(attrs) + ">" if r < 0.45 else "</" + name + ">" if r < 0.75
                         else rng.choice(other))
        page = "".join(parts)
        out = cap_depth(page, 3)
        assert cap_depth(page.encode(), 3) == out.encode()
        cut += out != page
    assert 100 < cut < 600  # both kinds were exercised
