"""HTML -> main-content text, readability/boilerpipe style, on selectolax's Lexbor parser.

Runs on every Common Crawl page, so subtree removal, CSS matching and text concatenation
happen in Lexbor's C code; Python only looks at named block elements (class/id), candidate
containers and blocks holding links.

Steps:
  1. parse; take the title from <title> / og:title / <h1>;
  2. drop non-content tags (script, nav, footer, form, the site <header> ...) and elements
     whose class/id/role names boilerplate (menu, cookie, share, related, comment, ...);
  3. pick the main container: the first well-known content container (itemprop=articleBody,
     .entry-content, <article>, #content, <main> ...) holding enough text, else the best
     readability-style paragraph score; add its text-rich, link-poor siblings (leads);
  4. inside it drop link-heavy blocks (menus and link lists without a telling class);
  5. unwrap inline tags so each remaining text node is one block; join blocks with "\n".

As a stage (`ExtractStage`) it reads `html` and writes `text` and `title`; `html` goes after
it. It has no `enabled` switch: every later stage works on its text.
"""
from __future__ import annotations

import re
from functools import lru_cache

import pyarrow as pa
from pydantic import Field
from selectolax.lexbor import LexborHTMLParser, LexborNode

from dataproc.documents.contract import Column, DocStage, StageResult
from dataproc.documents.html_depth import cap_depth
from llmforge.common.config import StrictModel


class ExtractOptions(StrictModel):
    """Knobs of the main-content extractor (defaults tuned on trafilatura's eval set)."""

    min_text_chars: int = Field(50, ge=0)
    """Extractions shorter than this count as empty: the stage drops the doc ("empty")."""

    keep_title: bool = True
    """Return the page title (<title>, else og:title, else the first <h1>)."""

    container_chars: int = Field(800, ge=0)
    """A well-known content container is used when it holds this many characters..."""

    container_share: float = Field(0.35, ge=0.0, le=1.0)
    """...or this share of the cleaned page text; a smaller one is a teaser or a widget."""

    max_boilerplate_share: float = Field(0.5, ge=0.0, le=1.0)
    """An element named like boilerplate is kept when it holds more than this share of the
    page text: it is a layout wrapper with an unlucky class (`l-outer--nav`), not a menu."""

    sibling_chars: int = Field(100, ge=0)
    """Siblings of the main container with this much text are content too (leads)..."""

    sibling_link_density: float = Field(0.1, ge=0.0, le=1.0)
    """...when at most this share of their text is link text."""

    max_link_density: float = Field(0.65, ge=0.0, le=1.0)
    """Blocks inside the container whose text is more than this share link text are
    navigation (related links, tag clouds): dropped."""

    min_line_chars: int = Field(1, ge=1)
    """Shorter lines are dropped (1 keeps all: short lines are often real list items)."""

    max_html_chars: int = Field(5_000_000, ge=0)
    """Longer pages are cut before parsing, bounding time and memory per page."""

    max_depth: int = Field(5_000, ge=1)
    """Elements nested deeper lose their tags before parsing and their text joins the element
    at this depth (`html_depth.cap_depth`): a tree's cost grows with its depth squared (25,000
    levels: seconds a page, a 5 MB page: hours), and real pages nest under 40."""

    depth_check_tags: int = Field(20_000, ge=0)
    """Pages with at most this many `<` skip the depth check (one count): the check costs
    2-3 us a tag, a third of extracting a big page, while no real page of the tests' 415 nests
    40 deep, and a page this small costs seconds at worst (20,000 unclosed `<span>`: ~7 s)."""


# Never content; removed with their whole subtree. One CSS query over the body finds them all
# (`strip_tags` walks the tree once per tag); <head> is left alone, nothing reads it after the title.
_JUNK_TAGS = [
    "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "frame",
    "frameset", "object", "embed", "applet", "video", "audio", "map", "head", "nav",
    "footer", "aside", "form", "button", "select", "input", "textarea", "dialog", "menu",
    "figure", "link", "meta",
]  # fmt: skip
_JUNK_CSS = ",".join(tag for tag in _JUNK_TAGS if tag != "head")

# Inline tags are unwrapped before text extraction so that every text node left is one block.
_INLINE_TAGS = [
    "a", "abbr", "acronym", "b", "bdi", "bdo", "big", "blink", "cite", "code", "data", "del",
    "dfn", "em", "font", "i", "img", "ins", "kbd", "label", "mark", "nobr", "q", "s", "samp",
    "small", "span", "strike", "strong", "sub", "sup", "time", "tt", "u", "var", "wbr",
]  # fmt: skip
# One query for all of them (`unwrap_tags` runs one per tag). Unwrapping in document order
# gives the same tree as tag by tag: whether an element is empty (then it stays) does not
# depend on which others were unwrapped before it.
_INLINE_CSS = ",".join(_INLINE_TAGS)

# Class/id words that name boilerplate.
_BOILER_WORDS = (
    "nav", "menu", "footer", "masthead", "cookie", "consent", "gdpr", "share",
    "sharing", "social", "related", "comment", "sidebar", "breadcrumb", "advert", "promo",
    "newsletter", "subscri", "banner", "popup", "modal", "pagination", "pager", "toolbar",
    "byline", "author", "meta", "sponsor", "recommend", "disqus", "print", "login", "signup",
    "teaser", "caption", "credit", "copyright", "disclaimer", "disclosure", "flyout", "alert",
    "buybox", "similar",
)  # fmt: skip
# Matching ~100 attribute-substring selectors in Lexbor costs more than one Python check
# per named block element. Inline tags and list items are skipped: menus and share bars
# are removed through their container.
_NAMED_CSS = ",".join(
    f"{tag}[{attr}]"
    for tag in ("div", "section", "ul", "ol", "dl", "p", "span", "table", "article", "td")
    for attr in ("class", "id")
) + ",[role]"
# Words name boilerplate when they start a dash/underscore/space separated segment
# ("relatedposts" yes, "ReadSpeaker" no); the short ones only as whole segments
# ("address", "tagStyle"). "teaser-text" is the lead in TYPO3 news, Drupal marks
# front-page articles "node-promoted".
_BOILER_PREFIXES = tuple(_BOILER_WORDS)
_BOILER_SEGMENTS = frozenset(("ad", "ads", "tags"))
_SEGMENT_SPLIT = re.compile(r"[\s_-]+").split
# Dropped from names before the check: BEM modifiers ("section--has-ads", "l-outer--nav")
# describe layout, not the element; plus the exceptions above.
_IGNORED_NAMES_RE = re.compile(r"--\S*|teaser[-_]?text|promoted")
_BOILER_ROLES = frozenset(("navigation", "banner", "contentinfo", "complementary", "dialog"))
# A class token like "article" or "entry-content" with no boilerplate word keeps the node:
# `class="main-nav-free article"` is the article, not a menu.
_CONTENT_RE = re.compile(
    r"(?:article|content|main|post|entry|story|text|blog)(?:[-_]+(?:content|body|text|inner))?"
    r"|.*(?:article|post|entry|story)[-_]?(?:body|content|text).*"
)


# Where the main text usually lives, most specific first (after trafilatura's BODY_XPATH).
# The first match in document order holding enough of the page's text wins. Selectors carry
# no tag (4x fewer for Lexbor to test); `_BOX_TAGS` is checked on the few matches instead.
_BOX_TAGS = frozenset(("article", "div", "main", "section"))
_CONTENT_CSS = [
    ",".join(group)
    for group in (
        (  # explicit article-body markup
            "[itemprop=articleBody]", "[itemprop=text]", "[class=post]", "[class=entry]",
            "[id=articleContent]", "[class*=post-text i]", "[class*=post_text i]",
            "[class*=post-body i]", "[class*=postentry i]", "[class*=post-entry i]",
            "[class*=post-content i]", "[class*=post_content i]", "[class*=postcontent i]",
            "[class*=article-text i]", "[class*=articletext i]", "[class*=entry-content i]",
            "[class*=text-content i]", "[class*=article-content i]", "[class*=art-content i]",
            "[class*=article__content i]", "[class*=article-body i]", "[class*=article__body i]",
            "[class*=articlebody i]", "[class*=body-text i]", "[class*=article__container i]",
            "[id*=entry-content i]", "[id*=article-content i]", "[id*=article-body i]",
            "[id*=articlebody i]", "[id*=body-text i]",
        ),
        ("article",),
        (  # story/post wrappers
            "[role=article]", "[id=article]", "[id=story]", "[class=postarea]", "[class=text]",
            "[class=story]", "[id^=primary]", "[id*=story-body]", "[class*=fulltext i]",
            '[class^="article "]', "[class*=story-content i]", "[class*=storycontent i]",
            "[class*=blog-content i]", "[class*=section-content i]", "[class*=single-content i]",
            "[class*=theme-content i]", "[class*=single-post i]", "[class*=main-column i]",
            "[class*=story-body i]", "[class*=field-body i]",
        ),
        (  # generic content areas
            "[id=content]", "[class=content]", "[id*=content-main i]", "[id*=content-body i]",
            "[class*=content-main i]", "[class*=content_main i]", "[class*=content-body i]",
            "[class*=content__body i]", "[id*=main-content i]", "[class*=main-content i]",
            "[class*=page-content i]",
        ),
        ("[class^=main]", "[id^=main]", "[role=main]", "main"),
    )
]  # fmt: skip
_PARAGRAPH_CSS = "p,pre,td,blockquote,li,dd,div,section"
_CONTAINER_TAGS = frozenset(("div", "section", "article", "main", "td", "body"))
_LINK_BLOCK_CSS = "ul,ol,dl,table,div,section,p"

_HEADING_TAGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))

_SEP = "\x00"  # Lexbor drops NULs from text while parsing, so this cannot clash


class ExtractStage(DocStage):
    """HTML -> main text (the row's new `text`) and `title`; drops pages with no usable text.

    A row dropped before extraction gets the title "", not null, like a page without one.
    """

    reads = "html"
    rewrites = True
    consumes = True
    reads_utf8 = True  # Lexbor parses UTF-8: bytes go to it as they are
    columns = (Column("title", pa.string(), missing=""),)

    def __init__(self, options: ExtractOptions | None = None):
        self.options = options or ExtractOptions()

    def process(self, html: str | bytes) -> StageResult:
        text, title = extract_text(html, self.options)
        drop = "empty" if len(text) < self.options.min_text_chars else None
        return StageResult(drop, {"title": title}, text=text)


def extract_text(html: str | bytes, options: ExtractOptions) -> tuple[str, str]:
    """Return (main text, title); ("", "") when nothing usable is found. Never raises.

    `html` as str, or as its UTF-8 bytes (the same result, without encoding it for the parser)."""
    try:
        return _extract(html, options)
    except Exception:  # noqa: BLE001 - one bad page must not kill a pipeline batch
        return "", ""


def _extract(html: str | bytes, options: ExtractOptions) -> tuple[str, str]:
    if not isinstance(html, (str, bytes)) or not html:
        return "", ""
    if isinstance(html, bytes) and len(html) > options.max_html_chars:
        html = html.decode("utf-8", "replace")  # the limit counts characters, not bytes
    html = html[: options.max_html_chars]
    if isinstance(html, str):  # as selectolax would, once: the depth check looks at the bytes
        html = html.encode("utf-8", "ignore")
    tree = LexborHTMLParser(cap_depth(html, options.max_depth, options.depth_check_tags))
    title = _title(tree) if options.keep_title else ""
    body = tree.body
    if body is None:
        return "", ""
    for node in body.css(_JUNK_CSS):
        node.decompose()  # nested matches too: removal unlinks, the nodes stay valid
    _drop_page_headers(body)
    _drop_boilerplate(body, options.max_boilerplate_share)
    roots = _main_roots(body, options)
    parts = []
    for root in roots:
        _drop_link_blocks(root, options.max_link_density)
        parts.append(_block_text(root, options.min_line_chars))
    text = "\n".join(p for p in parts if p)
    if len(text) < options.min_text_chars:
        return "", ""
    return text, title


def _title(tree: LexborHTMLParser) -> str:
    node = tree.css_first("title")
    title = node.text() if node is not None else ""
    if not title.strip():
        meta = tree.css_first('meta[property="og:title"]')
        title = (meta.attributes.get("content") or "") if meta is not None else ""
    if not title.strip():
        node = tree.css_first("h1")
        title = node.text() if node is not None else ""
    return " ".join(title.split())


def _drop_page_headers(body: LexborNode) -> None:
    """Drop the site header (logo, menus) but keep an article's own <header>: it holds the
    lead paragraph more often than not."""
    # Whether each is inside an article is decided before any is removed: a header nested in
    # a site header goes with it. Walking a few headers' ancestors took half the time of
    # matching "article header, main header, [role=main] header" over the whole tree.
    for node in [node for node in body.css("header") if not _in_article(node)]:
        node.decompose()


def _in_article(node: LexborNode) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag in ("article", "main") or parent.attributes.get("role") == "main":
            return True
        parent = parent.parent
    return False


def _drop_boilerplate(body: LexborNode, max_share: float) -> None:
    """Remove elements whose class/id/role names boilerplate, unless they look like content.

    A "boilerplate" node holding most of the page text is a layout wrapper with an unlucky
    modifier class (`l-outer--nav`, `<body class="menu-type-dropdown">`): kept.
    """
    limit = None  # of the page before any removal; measured only if something is named so
    for node in body.css(_NAMED_CSS):
        attrs = node.attributes
        role = attrs.get("role")
        if not (
            (role is not None and role.lower() in _BOILER_ROLES)
            or _is_boilerplate_name(attrs.get("class"), attrs.get("id"))
        ):
            continue
        if limit is None:
            limit = max_share * _text_len(body)
        if node.tag not in ("body", "html") and _text_len(node) <= limit:
            _drop_with_heading(node)


@lru_cache(maxsize=1 << 16)
def _is_boilerplate_name(cls: str | None, ident: str | None) -> bool:
    """Whether class/id name boilerplate, e.g. "post-share-bar" or "jp-relatedposts".

    Memoised: a site's class names repeat on every element and every page of the site."""
    names = f"{cls} {ident}" if cls and ident else cls or ident
    if not names:
        return False
    names = _IGNORED_NAMES_RE.sub(" ", names.lower())
    for token in names.split():
        # A content-looking class vetoes: `class="main-nav-free article"` is the article.
        if _CONTENT_RE.fullmatch(token):
            return False
    return _has_boiler_segment(names)


def _has_boiler_segment(names: str) -> bool:
    for seg in _SEGMENT_SPLIT(names):
        if seg in _BOILER_SEGMENTS or seg.startswith(_BOILER_PREFIXES):
            return True
    return False


def _drop_with_heading(node: LexborNode) -> None:
    """Remove `node` and a heading right before it: "Related posts" or "Share this" would
    otherwise be left dangling above nothing."""
    prev = node.prev
    while prev is not None and prev.is_text_node and not prev.text_content.strip():
        prev = prev.prev
    node.decompose()
    if prev is not None and prev.tag in _HEADING_TAGS:
        prev.decompose()


def _text_len(node: LexborNode) -> int:
    """Text size; whitespace-only nodes (markup indentation) are skipped in C."""
    return len(node.text(skip_empty=True))


def _main_roots(body: LexborNode, options: ExtractOptions) -> list[LexborNode]:
    """The main container(s), in document order."""
    total = _text_len(body)
    if total == 0:
        return []
    floor = max(
        options.min_text_chars, min(options.container_chars, options.container_share * total)
    )
    for selector in _CONTENT_CSS:
        for node in body.css(selector):
            if node.tag in _BOX_TAGS and _text_len(node) >= floor:
                return _with_siblings(node, options)
    best = _best_scored(body)
    return _with_siblings(best, options) if best is not None else [body]


def _with_siblings(root: LexborNode, options: ExtractOptions) -> list[LexborNode]:
    """The chosen container plus text-rich, link-poor siblings: leads and intros often sit
    next to the article body (`div.article__intro` + `div.article__body`)."""
    parent = root.parent
    if parent is None or root.tag == "body":
        return [root]
    roots = []
    for node in parent.iter():
        if node.mem_id == root.mem_id:
            roots.append(root)
            continue
        n = _text_len(node)
        if n >= options.sibling_chars and _link_density(node) <= options.sibling_link_density:
            roots.append(node)
    return roots


def _best_scored(body: LexborNode) -> LexborNode | None:
    """Readability's heuristic: each paragraph scores its container fully, the next one half."""
    scores: dict[int, float] = {}
    nodes: dict[int, LexborNode] = {}
    for para in body.css(_PARAGRAPH_CSS):
        # A <div> may hold both loose text and child blocks: only its own text is a paragraph.
        text = para.text(deep=para.tag not in _CONTAINER_TAGS)
        n = len(text.strip())
        if n < 25:
            continue
        score = 1 + text.count(",") + min(n // 100, 3)
        parent = _container_of(para)
        for weight in (1.0, 0.5):
            if parent is None:
                break
            key = parent.mem_id
            nodes[key] = parent
            scores[key] = scores.get(key, 0.0) + score * weight
            parent = _container_of(parent)
    if not scores:
        return None
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)[:5]
    return max((nodes[k] for k in ranked), key=lambda n: scores[n.mem_id] * (1 - _link_density(n)))


def _container_of(node: LexborNode) -> LexborNode | None:
    """Nearest ancestor that can hold a whole article (not a list or a paragraph)."""
    node = node.parent
    while node is not None and node.tag not in _CONTAINER_TAGS:
        node = node.parent
    return node


def _link_density(node: LexborNode) -> float:
    n = _text_len(node)
    if n == 0:
        return 1.0
    return sum(_text_len(a) for a in node.css("a")) / n


def _drop_link_blocks(root: LexborNode, max_density: float) -> None:
    """Remove link lists that survived the class/id pass (no telling class name).

    Blocks go in document order, so nothing inside a block has been removed when it is
    measured (a removal reaches only earlier blocks and the headings just before them): a
    link's text is measured once, not again for every block around it.
    """
    link_chars: dict[int, int] = {}
    for node in root.css(_LINK_BLOCK_CSS):
        anchors = node.css("a")
        if not anchors:
            continue
        n = _text_len(node)
        if n == 0:
            _drop_with_heading(node)
            continue
        chars = 0
        for anchor in anchors:
            key = anchor.mem_id
            size = link_chars.get(key)
            if size is None:
                size = link_chars[key] = _text_len(anchor)
            chars += size
        if chars / n > max_density:
            _drop_with_heading(node)


def _block_text(root: LexborNode, min_line_chars: int) -> str:
    """One line per block: with inline tags unwrapped and adjacent text merged, text-node
    boundaries are exactly block boundaries (or <br>), so Lexbor can join with a marker."""
    for node in root.css(_INLINE_CSS):
        node.unwrap()
    root.merge_text_nodes()
    raw = root.text(separator=_SEP, skip_empty=True)
    # Whitespace runs -> one space, stripped: str.split() and re's \s agree on what whitespace is.
    lines = (" ".join(line.split()) for line in raw.split(_SEP))
    return "\n".join(line for line in lines if len(line) >= min_line_chars)
