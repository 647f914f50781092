"""URL filter: drop documents from blocklisted domains or with banned words in the URL.

Source: FineWeb (Penedo et al. 2024, arXiv:2406.17557, section 3.2) blocks adult content
with the UT1 blacklist (https://dsi.ut-capitole.fr/blacklists/) plus banned words in the
URL, as implemented in datatrove's `URLFilter`
(huggingface/datatrove, src/datatrove/pipeline/filters/url_filter.py). Following it:

- a host is blocked when it or any parent domain is listed, so "a.b.example.com" is blocked
  by "example.com"; each lookup is a set membership test per suffix of the host (a handful),
  however long the list;
- banned substrings are searched in the URL lowercased with everything but [a-z0-9] removed
  (datatrove's `banned_subwords` normalisation), which also catches "p-o-r-n"-style spelling.

The shipped list (`dataproc/resources/url_blocklist.txt`) is a small demonstration sample;
real runs pass the UT1 lists via `blocklist_paths`. The shipped substrings are short and
unambiguous on purpose: words such as "sex" would block "sussex.ac.uk".

This filter looks at the URL, not the text (`reads = "url"`). Rows without a URL are kept.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from dataproc.documents.contract import DocStage, StageResult
from dataproc.options import StageOptions

DEFAULT_BANNED_SUBSTRINGS = ("porn", "xxx", "hentai", "camgirl")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


class UrlFilterOptions(StageOptions):
    use_default_blocklist: bool = True
    blocklist_paths: list[str] = Field(
        default_factory=list, description="files of domains, one per line, '#' comments; .gz allowed"
    )
    banned_substrings: list[str] = Field(default_factory=lambda: list(DEFAULT_BANNED_SUBSTRINGS))

    @field_validator("banned_substrings")
    @classmethod
    def _normalisable(cls, value: list[str]) -> list[str]:
        for word in value:
            if not _normalize(word):
                raise ValueError(f"banned substring {word!r} has no letters or digits, so it can never match")
        return value


def _normalize(s: str) -> str:
    return _NON_ALNUM.sub("", s.lower())


def default_blocklist_path() -> Path:
    # Relative to this file rather than importlib.resources: an editable install can expose
    # `dataproc` as a namespace package, which importlib.resources cannot read from.
    return Path(__file__).resolve().parents[2] / "resources" / "url_blocklist.txt"


def parse_blocklist(lines: Iterable[str]) -> set[str]:
    """Domains from blocklist lines: comments and blanks skipped, "*." / URL forms reduced to hosts."""
    domains: set[str] = set()
    for raw in lines:
        entry = raw.split("#", 1)[0].strip().lower()
        if not entry:
            continue
        if "/" in entry:
            entry = _host(entry) or ""
        entry = entry.removeprefix("*.").strip(".")
        if entry:
            domains.add(entry)
    return domains


def load_blocklist(path: str | Path) -> set[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"url_filter.blocklist_paths: no such file {str(path)!r}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return parse_blocklist(f)


def _host(url: str) -> str | None:
    # urlsplit only finds the host after "//"; crawl URLs always have a scheme, user lists not.
    if "//" not in url:
        url = "//" + url
    try:
        host = urlsplit(url).hostname
    except ValueError:  # e.g. an unbalanced "[" in the netloc
        return None
    return host.strip(".") if host else None


class UrlFilter(DocStage):
    """Drop by blocklisted domain (subdomains included) or banned substring of the URL."""

    reads = "url"

    def __init__(self, options: UrlFilterOptions | None = None):
        self.opts = options or UrlFilterOptions()
        self.blocked: set[str] = set()
        if self.opts.use_default_blocklist:
            self.blocked |= load_blocklist(default_blocklist_path())
        for path in self.opts.blocklist_paths:
            self.blocked |= load_blocklist(path)
        self.banned = tuple(_normalize(w) for w in self.opts.banned_substrings)

    def process(self, url: str | None) -> StageResult:
        if not url:
            return StageResult()
        host = _host(url)
        if host and self.blocked and self.is_blocked_host(host):
            return StageResult("blocked_domain")
        if self.banned:
            normalized = _normalize(url)
            if any(word in normalized for word in self.banned):
                return StageResult("banned_substring")
        return StageResult()

    def is_blocked_host(self, host: str) -> bool:
        """True when `host` or one of its parent domains is on the blocklist."""
        labels = host.lower().split(".")
        return any(".".join(labels[i:]) in self.blocked for i in range(len(labels)))
