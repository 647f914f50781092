"""Main-content extraction: exact output on handwritten pages, robustness on junk input, and
quality against trafilatura on its own evaluation set (skipped when the set is absent)."""
from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from dataproc.config import StagesConfig
from dataproc.documents.contract import StageResult
from dataproc.documents.extract import ExtractOptions, ExtractStage, extract_text

OPTS = ExtractOptions()

BLOG_PAGE = """<!doctype html><html><head><title>  Baking   bread | Example Blog </title>
<style>p{color:red}</style><script>var x = "<p>not text</p>";</script></head>
<body>
<header class="site-header"><a href="/">Example Blog</a>
  <ul class="main-menu"><li><a href="/a">Home</a></li><li><a href="/b">Recipes</a></li></ul>
</header>
<nav><a href="/x">Skip to content</a></nav>
<div id="cookie-banner">We use cookies to improve your experience. <button>Accept</button></div>
<div class="layout">
 <div class="main-nav-free article">
  <h1>Baking bread at home</h1>
  <p>Bread needs only flour, water, salt and
     yeast, yet the result depends on   patience.</p>
  <p>Knead the dough for <b>ten</b> minutes, then let it rise<br>for two hours in a warm place.</p>
  <ul><li>500 g flour</li><li>350 ml water</li></ul>
  <div class="share-buttons"><a href="/s1">Share on Facebook</a> <a href="/s2">Tweet</a></div>
  <h3>Related posts</h3>
  <ul class="related-posts"><li><a href="/r1">Sourdough starter guide for beginners</a></li>
    <li><a href="/r2">Ten mistakes everybody makes with yeast</a></li></ul>
 </div>
 <div class="sidebar"><h4>About me</h4><p>I write about food, travel and many other things.</p></div>
</div>
<div id="comments"><h3>Leave a comment</h3><form><textarea></textarea></form></div>
<footer><p>Copyright 2024 Example Blog. All rights reserved.</p></footer>
</body></html>"""

BLOG_TEXT = (
    "Baking bread at home\n"
    "Bread needs only flour, water, salt and yeast, yet the result depends on patience.\n"
    "Knead the dough for ten minutes, then let it rise\n"
    "for two hours in a warm place.\n"
    "500 g flour\n"
    "350 ml water"
)


def test_blog_page_keeps_article_drops_boilerplate() -> None:
    text, title = extract_text(BLOG_PAGE, OPTS)
    assert text == BLOG_TEXT
    assert title == "Baking bread | Example Blog"


def test_keep_title_off() -> None:
    text, title = extract_text(BLOG_PAGE, ExtractOptions(keep_title=False))
    assert (text, title) == (BLOG_TEXT, "")


# No semantic markup at all: the container is found by paragraph scoring, the link-only
# menu block by link density, and the lead next to the body is kept as a sibling.
TABLE_PAGE = """<html><head><meta property="og:title" content="Town council news"></head><body>
<div><a href="/1">News</a> | <a href="/2">Events</a> | <a href="/3">Contact</a> | <a href="/4">Archive</a></div>
<div>
  <div><p>The council met on Monday evening, and after a long debate it approved the new budget for schools and roads.</p></div>
  <div>
    <p>Spending on roads rises by ten percent, while schools get two new buildings.</p>
    <p>The mayor said, after the vote, that the plan was fair to every district.</p>
    <div><a href="/more">More news</a> <a href="/older">Older news</a></div>
  </div>
</div>
</body></html>"""


def test_scored_container_with_lead_sibling_and_og_title() -> None:
    text, title = extract_text(TABLE_PAGE, OPTS)
    assert text == (
        "The council met on Monday evening, and after a long debate it approved the new budget "
        "for schools and roads.\n"
        "Spending on roads rises by ten percent, while schools get two new buildings.\n"
        "The mayor said, after the vote, that the plan was fair to every district."
    )
    assert title == "Town council news"


def test_block_elements_each_on_own_line_without_blank_lines() -> None:
    html = """<html><body><main>
      <h2>Results</h2>
      <table><tr><td>Alice</td><td>12 points in the final round</td></tr>
             <tr><td>Bob</td><td>9 points in the final round</td></tr></table>
      <blockquote>   Winning   is a habit.   </blockquote>
      <pre>x = 1</pre>


      <p></p><p>   </p>
      <p>Thanks to everyone who took part in this year's contest, see you next year.</p>
    </main></body></html>"""
    text, _ = extract_text(html, OPTS)
    assert text == (
        "Results\nAlice\n12 points in the final round\nBob\n9 points in the final round\n"
        "Winning is a habit.\nx = 1\n"
        "Thanks to everyone who took part in this year's contest, see you next year."
    )


def test_non_ascii_text_preserved() -> None:
    html = (
        "<html><head><title>Grüße aus Köln</title></head><body><article>"
        "<p>Straße, Öl und Käse — 日本語のテキスト — emoji 🍞 und ½ Liter Milch.</p>"
        "<p>Ещё один абзац на русском языке, чтобы текст был длиннее.</p>"
        "</article></body></html>"
    )
    text, title = extract_text(html, OPTS)
    assert text == (
        "Straße, Öl und Käse — 日本語のテキスト — emoji 🍞 und ½ Liter Milch.\n"
        "Ещё один абзац на русском языке, чтобы текст был длиннее."
    )
    assert title == "Grüße aus Köln"


def test_utf8_bytes_extract_as_their_str() -> None:
    """The reader hands pages over as UTF-8 bytes: same text and title as from the str, also
    where the character limit cuts a page whose bytes are over it and its characters not."""
    page = (
        "<html><head><title>Grüße</title></head><body><article>"
        + "<p>Straße, Öl und Käse — 日本語のテキスト — emoji 🍞 und ½ Liter Milch.</p>" * 40
        + "</article></body></html>"
    )
    pages = [BLOG_PAGE, page, "", "<p>x</p>", "\ufeff<html><body><p>" + "é" * 80 + "</p></body></html>"]
    if EVAL_DIR.is_dir():
        pages += [p.html for p in _score_module().load_pages(EVAL_DIR)[:40]]
    chars = len(page)
    for options in (OPTS, ExtractOptions(max_html_chars=chars), ExtractOptions(max_html_chars=chars - 700),
                    ExtractOptions(max_html_chars=len(page.encode()) - 1, keep_title=False)):
        for html in pages:
            assert extract_text(html.encode(), options) == extract_text(html, options)
    assert extract_text(page.encode(), ExtractOptions(max_html_chars=chars))[0].count("\n") == 39  # uncut
    assert extract_text(page.encode(), ExtractOptions(max_html_chars=chars - 700))[0].count("\n") < 39


def test_entities_decoded() -> None:
    html = "<body><article><p>Fish &amp; chips &lt;3 &eacute;t&eacute; &#8364;5, " + "x" * 60 + "</p></article></body>"
    text, _ = extract_text(html, OPTS)
    assert text.startswith("Fish & chips <3 été €5, ")


def test_short_extraction_counts_as_empty() -> None:
    html = "<html><head><title>T</title></head><body><p>Too short.</p></body></html>"
    assert extract_text(html, OPTS) == ("", "")
    assert extract_text(html, ExtractOptions(min_text_chars=5)) == ("Too short.", "T")
    assert ExtractStage(OPTS).process(html) == StageResult("empty", {"title": ""}, text="")
    assert ExtractStage(ExtractOptions(min_text_chars=5)).process(html) == StageResult(
        None, {"title": "T"}, text="Too short."
    )


# Sloppy but common markup: unquoted attributes, unclosed <h2>/<p>/<li>, stray end tags. The
# parser closes the container at the first </div>, so the short list after it is not content.
SLOPPY_PAGE = """<html><head><title>Tide   tables</title></head>
<body><div id=main class=content>
<h2>High water
<p>The tide rises twice a day, about fifty minutes later each day.
<p>Spring tides follow the new and the full moon</div></div></span>
<ul><li>Mon 06:12<li>Tue 07:01</ul>
</body></html>"""


def test_stage_turns_a_sloppy_page_into_text_and_title() -> None:
    stage = ExtractStage(OPTS)
    assert (stage.reads, stage.rewrites, stage.consumes) == ("html", True, True)
    assert stage.process(SLOPPY_PAGE) == StageResult(
        None,
        {"title": "Tide tables"},
        text=(
            "High water\n"
            "The tide rises twice a day, about fifty minutes later each day.\n"
            "Spring tides follow the new and the full moon"
        ),
    )


@pytest.mark.parametrize(
    "html",
    [
        "",
        "   ",
        "<",
        "<html><body></body></html>",
        "<html><head><title>only a title</title></head></html>",
        "\x00\x01\x02\xff\xfe binary \ud800 junk",  # includes a lone surrogate
        "<div" * 5000,
        "</p>" * 1000 + "<<>><!---->",
        None,
        b"<html><body><p>bytes are not accepted</p></body></html>",
    ],
)
def test_broken_input_returns_empty(html) -> None:
    assert extract_text(html, OPTS) == ("", "")


def _is_clean_line(line: str) -> bool:
    return bool(line) and line == " ".join(line.split())


def test_random_bytes_never_raise_and_come_out_clean() -> None:
    # Junk decoded as text is mostly one long "paragraph": it comes out as text, and that text
    # still has the extractor's shape: no blank lines, single spaces, nothing shorter than allowed.
    rng = random.Random(0)
    non_empty = 0
    for _ in range(50):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000)))
        text, title = extract_text(junk.decode("latin-1"), OPTS)
        if text:
            non_empty += 1
            assert len(text) >= OPTS.min_text_chars
            assert all(_is_clean_line(line) for line in text.split("\n"))
            assert title == "" or _is_clean_line(title)
        else:
            assert title == ""
    assert non_empty == 48


def test_huge_input() -> None:  # deep input: test_html_depth.py
    para = "<p>" + "Deep content sentence, repeated for length. " * 3 + "</p>"
    huge = "<html><body><article>" + para * 20_000 + "</article></body></html>"  # ~3 MB
    text, _ = extract_text(huge, OPTS)
    assert text.count("\n") == 19_999

    text, _ = extract_text(huge, ExtractOptions(max_html_chars=10_000))
    assert 0 < text.count("\n") < 100


def test_options_validated() -> None:
    with pytest.raises(ValidationError):
        ExtractOptions(max_link_density=1.5)
    with pytest.raises(ValidationError):
        ExtractOptions(unknown_knob=1)
    # Every later stage works on extracted text: there is no switch to turn extraction off.
    with pytest.raises(ValidationError) as err:
        StagesConfig.model_validate({"extract": {"enabled": True}})
    assert [(e["loc"], e["type"]) for e in err.value.errors()] == [(("extract", "enabled"), "extra_forbidden")]


# --- quality on trafilatura's evaluation set ----------------------------------------------

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR = REPO.parent / "shared" / "data" / "extraction" / "trafilatura_eval"
F1_TOLERANCE = 0.02


def _score_module():
    path = REPO / "infra" / "bench" / "extraction_score.py"
    spec = importlib.util.spec_from_file_location("extraction_score", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("extraction_score", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared_data
@pytest.mark.skipif(
    not (EVAL_DIR / "evaldata_subset.json").is_file(),
    reason=f"trafilatura eval set not found at {EVAL_DIR}",
)
def test_f1_close_to_trafilatura_on_eval_set() -> None:
    trafilatura = pytest.importorskip(
        "trafilatura", reason="trafilatura not installed (pip install 'trafilatura==2.3.1')"
    )
    bench = _score_module()
    pages = bench.load_pages(EVAL_DIR)
    ours = bench.score("llmforge", lambda html: extract_text(html, OPTS)[0], pages)
    theirs = bench.score(
        "trafilatura",
        lambda html: trafilatura.extract(html, include_comments=False) or "",
        pages,
    )
    if os.environ.get("LLMFORGE_VERBOSE"):
        print(ours.summary(), theirs.summary())
    assert ours.f1 >= theirs.f1 - F1_TOLERANCE, (ours.summary(), theirs.summary())
