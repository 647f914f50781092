"""Domain tagging (news, encyclopedic, forum, code, shopping, adult, blog, other); the mixture
weights per domain are applied at tokenization (`dataproc.tokenization.mixture`).

Tagging combines two kinds of evidence, both from one data table (`DEFAULT_RULES`) so that
users can extend it (`DomainOptions.extra_patterns`) without code:

- URL rules: regexes on the URL's *key*, "host/path?query" lowercased with "www." and the
  scheme, user info, port and fragment removed (e.g. "en.wikipedia.org/wiki/anarchism").
  Each rule has a weight: a known host ("github.com") is strong evidence, a path word
  ("/docs/") weaker. Matching rules combine as a noisy-OR, 1 - prod(1 - weight), so two weak
  hints (a dated path on a "times" host) add up.
- Content rules: regexes counted in the text (prices, "add to cart", "posted by", datelines),
  each match adding its weight to the evidence E, scored 1 - exp(-E) (saturating: the 10th
  price says less than the first); and for code, the share of lines that look like code
  (the `line` rule), which is a ratio rather than a count since code pages have many lines.

A domain's score is a noisy-OR: 1 - (1 - url) * (1 - TEXT_WEIGHT * text), so URL and text
evidence reinforce each other, and text alone can reach at most TEXT_WEIGHT. The best-scoring
domain wins (ties go to the earlier domain of the table: adult first, as missing adult
content is the costliest mistake); below `min_score` the document gets `default` ("other")
with `domain_score` = 1 - best score, i.e. how sure it is that no domain applies.

Everything is computed column-wise with Arrow's RE2 kernels (`match_substring_regex`,
`count_substring_regex`) rather than a Python loop per document. Patterns are therefore RE2
syntax (no look-arounds or back-references). One RE2-in-Arrow subtlety shapes the content
patterns: counting restarts the search just after each match, where `^` matches again, so
content patterns anchor a line start with `\\n` (the text is searched with a newline
prepended) instead of `^`; `$` with `(?m)` works as usual.

"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from dataproc.options import StageOptions
from dataproc.documents.filters.url import DEFAULT_BANNED_SUBSTRINGS

DOMAIN_COLUMN = "domain"
SCORE_COLUMN = "domain_score"
# Text evidence alone caps a domain's score here; with min_score 0.4 it needs a clear signal
# (E ~ 1.1) to tag a page whose URL says nothing.
TEXT_WEIGHT = 0.6
# Patterns from options are deliberate, site-specific choices: they outrank built-in host rules.
USER_PATTERN_WEIGHT = 0.95
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class DomainRules:
    """Evidence for one domain. `url`: (RE2 regex on the URL key, weight in [0, 1]);
    `text`: (RE2 regex counted in the text, evidence per match); `line`: (RE2 regex a whole
    line must match, line share at which the line score reaches 1)."""

    url: tuple[tuple[str, float], ...] = ()
    text: tuple[tuple[str, float], ...] = ()
    line: tuple[str, float] | None = None


def _hosts(*names: str) -> str:
    """A URL-key regex matching these hosts (regexes) and their subdomains."""
    return rf"^(?:[^/]*\.)?(?:{'|'.join(names)})(?:/|\?|$)"


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
# A line of code: ends with { or } / ends with ; and has a call, "=" or "[" (a bare ";" ends
# items of prose lists) / starts with a declaration keyword / is an assignment. The keywords
# are ones that rarely start an English line in lower case.
_CODE_LINE = (
    r"(?m)\n(?:[^\n]*[{}][ \t]*|[^\n]*(?:\w\(|=|\[)[^\n]*;[ \t]*"
    r"|[ \t]*(?:def|import|from [\w.]+ import|return|elif|function|var|let|const|public|private|package|fn|func"
    r"|#include|#define|@\w+)\b[^\n]*"
    r"|[ \t]*[A-Za-z_][\w.\[\]'\"]*[ \t]*[-+*/%|&]?=[ \t]*[^=\s][^\n]*)$"
)

# Order = priority on ties. Weights were set by hand on what each rule is worth alone: a
# domain's own host ~0.8 (tags on its own), a telling path word 0.5-0.6 (tags on its own with
# min_score 0.4), an ambiguous one 0.3-0.4 (needs some text evidence).
DEFAULT_RULES: dict[str, DomainRules] = {
    "adult": DomainRules(
        url=(
            (_hosts(r"[^/]*(?:" + "|".join(DEFAULT_BANNED_SUBSTRINGS) + r")[^/]*", r"xvideos\.com", r"xhamster\.com",
                    r"redtube\.com", r"onlyfans\.com", r"sex\.com"), 0.8),
            (r"/(?:porn|xxx|nsfw|hentai)(?:[/?._-]|$)", 0.6),
        ),
        text=(
            (r"(?i)\b(?:porn|porno|xxx|nsfw|hentai|camgirls?|milfs?|horny|hardcore|nude|naked)\b", 0.15),
            (r"(?i)\b(?:adults only|18\+ only|you must be 18|age verification)", 0.4),
        ),
    ),
    "code": DomainRules(
        url=(
            (_hosts(r"github\.com", r"gitlab\.com", r"bitbucket\.org", r"stackoverflow\.com", r"sourceforge\.net",
                    r"pypi\.org", r"npmjs\.com", r"readthedocs\.(?:io|org)", r"crates\.io", r"pkg\.go\.dev",
                    r"docs\.rs", r"codepen\.io", r"jsfiddle\.net", r"pastebin\.com", r"rust-lang\.org",
                    r"python\.org"), 0.8),
            (r"^(?:docs|developers?|dev|api)\.", 0.7),
            (r"\.(?:py|js|ts|java|cpp|rs|go|ipynb)(?:\?|$)", 0.6),
            (r"/(?:docs|api|reference|sdk|manual)/", 0.3),
        ),
        text=(
            # Operators only between operands: "=====" rules and "==>" arrows are prose too.
            (r"```|console\.log|System\.out|printf\(|std::|#include|\bdef \w+\("
             r"|[\w)\]] ?(?:===|!==|=>|&&|\|\|) ?[\w(\[\"'$]", 0.15),
        ),
        line=(_CODE_LINE, 0.4),
    ),
    "shopping": DomainRules(
        url=(
            (_hosts(r"amazon\.[a-z.]+", r"ebay\.[a-z.]+", r"etsy\.com", r"walmart\.com", r"aliexpress\.com",
                    r"alibaba\.com", r"target\.com", r"bestbuy\.com", r"myshopify\.com", r"ikea\.com"), 0.8),
            (r"^(?:shop|store)\.", 0.7),
            (r"/(?:products?|shop|store|cart|checkout|basket|item|dp)(?:[/?.]|$)", 0.5),
            (r"[?&](?:product_id|sku|add-to-cart)=", 0.5),
        ),
        text=(
            (r"[$€£¥][ ]?\d{1,3}(?:[,.]\d{3})*(?:[.,]\d{2})?|\b\d+[.,]\d{2} ?(?:usd|eur|gbp|€)", 0.1),
            (r"(?i)\b(?:add to (?:cart|basket|bag|wishlist)|in stock|out of stock|free shipping|buy now"
             r"|shopping cart|checkout|sku|qty|customer reviews|ships within)\b", 0.3),
        ),
    ),
    "forum": DomainRules(
        url=(
            (_hosts(r"[a-z0-9-]+\.stackexchange\.com", r"reddit\.com", r"quora\.com", r"superuser\.com",
                    r"serverfault\.com", r"askubuntu\.com", r"4chan\.org", r"tapatalk\.com"), 0.8),
            (r"^(?:forums?|community|discuss|discourse|boards?|bbs)\.", 0.8),
            (r"/(?:forums?|threads?|topics?|t|viewtopic|showthread|board|discussions?|questions)(?:[/?.]|$)", 0.5),
        ),
        text=(
            (r"(?i)\b(?:posted by|originally posted|thread starter|joined:|posts:|replies:|member since"
             r"|reply with quote|quote from)", 0.3),
            (r"(?i)\b(?:reply|replies|quote|re:|upvotes?|permalink|moderator)\b", 0.08),
        ),
    ),
    "news": DomainRules(
        url=(
            (_hosts(r"bbc\.co\.uk", r"bbc\.com", r"cnn\.com", r"reuters\.com", r"apnews\.com", r"nytimes\.com",
                    r"theguardian\.com", r"washingtonpost\.com", r"foxnews\.com", r"nbcnews\.com",
                    r"bloomberg\.com", r"wsj\.com", r"aljazeera\.com", r"npr\.org", r"usatoday\.com"), 0.8),
            (r"^[^/]*(?:news|times|herald|tribune|gazette|chronicle|dispatch|courier)[^/]*(?:/|\?|$)", 0.6),
            (r"/(?:news|articles?|story|stories|politics)(?:[/?.]|$)", 0.5),
            # Dated paths are as common on blogs: below min_score alone, news with a news host
            # word or news-like text.
            (r"/(?:19|20)\d{2}/(?:0?[1-9]|1[0-2])/", 0.3),
        ),
        text=(
            # Dateline: "WASHINGTON (Reuters) - " / "LONDON, March 3 -- " at a line start.
            (r"\n[A-Z][A-Z .'-]{2,}(?:, [A-Z][A-Za-z.]+(?: \d{1,2})?)?(?: \((?:AP|Reuters|AFP|UPI)\))?"
             r" ?(?:-|--|—|–) ", 0.6),
            (r"\((?:AP|Reuters|AFP|UPI|CNN)\)", 0.5),
            (rf"(?i)\b(?:published|updated|posted)(?: on)?:? (?:\d{{1,2}} )?{_MONTH} \d{{1,2}}", 0.3),
            (r"(?i)\b(?:told reporters|said in a statement|according to|spokes(?:man|woman|person)"
             r"|press conference|correspondent)\b", 0.15),
        ),
    ),
    "encyclopedic": DomainRules(
        url=(
            (_hosts(r"wikipedia\.org", r"wikimedia\.org", r"wiktionary\.org", r"wikiwand\.com",
                    r"britannica\.com", r"encyclopedia\.com", r"scholarpedia\.org", r"newworldencyclopedia\.org"), 0.8),
            (r"^[^/]*wiki[^/]*(?:/|\?|$)", 0.6),
            (r"/wiki/", 0.6),
        ),
        text=(
            (r"\[\d{1,3}\]", 0.1),  # citation markers
            (r"\n(?:References|External links|See also|Further reading|Bibliography|Notes)[ \t]*(?:\n|$)", 0.4),
            (r"\((?:born [^)]{0,40}\d{4}|c?\.? ?\d{3,4} ?[–-] ?\d{3,4})\)", 0.3),  # lifespans
        ),
    ),
    "blog": DomainRules(
        url=(
            (_hosts(r"blogspot\.[a-z.]+", r"wordpress\.com", r"medium\.com", r"substack\.com", r"tumblr\.com",
                    r"typepad\.com", r"livejournal\.com", r"ghost\.io", r"blogger\.com"), 0.8),
            (r"^blogs?\.", 0.8),
            (r"/blogs?(?:[/?.]|$)", 0.5),
        ),
        text=(
            (r"(?i)\b(?:posted (?:on|in)|filed under|leave a (?:comment|reply)|\d+ comments|about the author"
             r"|share this|subscribe to)\b", 0.2),
        ),
    ),
}


def _re2_error(pattern: str) -> str | None:
    """Why Arrow's RE2 rejects `pattern`, or None when it compiles."""
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        return str(err)
    return None


class DomainOptions(StageOptions):
    """The `domains` stage: tags every row with `domain` and `domain_score`."""

    extra_patterns: dict[str, list[str]] = Field(
        default_factory=dict,
        description='domain -> RE2 regexes on the URL key "host/path?query" (lowercased, no www.); '
        "new domain names are allowed; these outrank the built-in rules",
    )
    default: str = Field(default="other", description="domain of documents no rule scores min_score for")
    min_score: float = Field(default=0.4, gt=0.0, le=1.0)
    max_chars: int = Field(default=20000, gt=0, description="content rules look at this many characters")

    @field_validator("extra_patterns")
    @classmethod
    def _compile(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for domain, patterns in value.items():
            if not _NAME_RE.match(domain):
                raise ValueError(f"extra_patterns key {domain!r}: a domain name is lowercase letters, digits, _")
            for p in patterns:
                err = _re2_error(p)
                if err is not None:
                    raise ValueError(f"extra_patterns[{domain!r}]: pattern {p!r} is not a valid RE2 regex: {err}")
        return value

    @field_validator("default")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"default {value!r}: a domain name is lowercase letters, digits, _")
        return value


_URL_PARTS = r"^(?:[a-z][a-z0-9+.\-]*://)?(?:[^@/?#]*@)?(?P<host>[^/?#:]*)(?::\d*)?(?P<path>[^#]*)"


def url_keys(urls: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.Array:
    """The key URL rules match: "host/path?query", lowercased, no scheme/"www."/port/fragment."""
    lower = pc.utf8_lower(_as_string_array(urls))
    parts = pc.extract_regex(lower, _URL_PARTS)
    host = pc.replace_substring_regex(pc.fill_null(pc.struct_field(parts, "host"), ""), r"^www\d*\.", "")
    path = pc.fill_null(pc.struct_field(parts, "path"), "")
    return pc.binary_join_element_wise(host, path, "")


def _as_string_array(values) -> pa.Array:
    """A non-null string Array (nulls become "") from an Arrow array/chunked array or a list."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    elif not isinstance(values, pa.Array):
        values = pa.array(values, pa.string())
    return pc.fill_null(values.cast(pa.string()), "")


def _to_numpy(arr: pa.Array) -> np.ndarray:
    # Inputs are null-free, so kernel outputs are too.
    return arr.to_numpy(zero_copy_only=False).astype(np.float64)


class DomainTagger:
    """Ray Data `map_batches` callable: adds `domain` (string) and `domain_score` (float64)
    from the `url` and `text` columns (either may be null)."""

    def __init__(self, options: DomainOptions | None = None, url_column: str = "url", text_column: str = "text"):
        self.options = options or DomainOptions()
        self.url_column, self.text_column = url_column, text_column
        self.rules = dict(DEFAULT_RULES)
        for domain, patterns in self.options.extra_patterns.items():
            base = self.rules.get(domain, DomainRules())
            self.rules[domain] = DomainRules(
                url=base.url + tuple((p, USER_PATTERN_WEIGHT) for p in patterns), text=base.text, line=base.line
            )
        self.names = list(self.rules)

    def score_matrix(self, urls, texts) -> np.ndarray:
        """Scores in [0, 1], shape (n_docs, len(self.names))."""
        keys = url_keys(urls)
        text_arr = pc.utf8_slice_codeunits(_as_string_array(texts), 0, self.options.max_chars)
        # A leading newline lets "\n" stand for a line start in content patterns (module doc).
        text_arr = pc.binary_join_element_wise("\n", text_arr, "")
        n = len(keys)
        lines = None
        out = np.zeros((n, len(self.rules)))
        for j, dom in enumerate(self.rules.values()):
            url_miss = np.ones(n)  # prod(1 - weight) over the matching URL rules
            for pattern, weight in dom.url:
                url_miss *= 1.0 - weight * _to_numpy(pc.match_substring_regex(keys, pattern))
            evidence = np.zeros(n)
            for pattern, weight in dom.text:
                evidence += weight * _to_numpy(pc.count_substring_regex(text_arr, pattern))
            text_score = 1.0 - np.exp(-evidence)
            if dom.line is not None:
                if lines is None:
                    lines = _to_numpy(pc.count_substring_regex(text_arr, r"\n[ \t]*\S"))
                pattern, full_share = dom.line
                share = _to_numpy(pc.count_substring_regex(text_arr, pattern)) / np.maximum(lines, 1)
                # Under 3 lines a share means little: one "x = 1" line is not a code page.
                line_score = np.where(lines >= 3, np.minimum(1.0, share / full_share), 0.0)
                text_score = np.maximum(text_score, line_score)
            out[:, j] = 1.0 - url_miss * (1.0 - TEXT_WEIGHT * text_score)
        return out

    def tag(self, urls, texts) -> tuple[list[str], np.ndarray]:
        """(domain per document, its score)."""
        scores = self.score_matrix(urls, texts)
        n = scores.shape[0]
        best = np.argmax(scores, axis=1)  # first maximum: table order breaks ties
        best_score = scores[np.arange(n), best]
        tagged = best_score >= self.options.min_score
        names = np.array(self.names, dtype=object)
        domains = np.where(tagged, names[best], self.options.default).tolist()
        return domains, np.where(tagged, best_score, 1.0 - best_score)

    def __call__(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        names, n = batch.column_names, batch.num_rows
        if self.url_column not in names and self.text_column not in names:
            raise KeyError(f"domain tagging needs a {self.url_column!r} or {self.text_column!r} column, "
                           f"batch has {names}")
        urls = batch.column(self.url_column) if self.url_column in names else pa.nulls(n, pa.string())
        texts = batch.column(self.text_column) if self.text_column in names else pa.nulls(n, pa.string())
        domains, scores = self.tag(urls, texts)
        new_columns = {DOMAIN_COLUMN: pa.array(domains, pa.string()), SCORE_COLUMN: pa.array(scores, pa.float64())}
        for name, values in new_columns.items():
            if name in batch.column_names:
                batch = batch.set_column(batch.column_names.index(name), name, values)
            else:
                batch = batch.append_column(name, values)
        return batch
