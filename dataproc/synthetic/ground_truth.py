"""What a sample WARC holds, record by record: the ground truth tests and the demo check against.

`shingles` / `jaccard` define the similarity recorded for planted near-duplicates (word 5-gram
sets of lower-cased `\\w+` tokens), which MinHash dedup is measured against.
"""
from __future__ import annotations

import dataclasses
import json
import re
from os import PathLike
from pathlib import Path


@dataclasses.dataclass
class DocTruth:
    """One planted record. `expect` is the count key a correct reader with default options puts
    it under ('kept', 'skip_status', 'skip_not_html', 'skip_revisit', 'skip_corrupt', ...)."""

    record_id: str  # WARC-Record-ID without <>; "" for garbage
    url: str
    kind: str  # article, exact_dup, near_dup, boilerplate, spam, non_english, pii, blocked_url,
    #            non_html, non_200, revisit, charset, undecodable, bogus_charset, huge,
    #            warc018_bad_date, corrupt_header, missing_content_length, bad_content_length,
    #            garbage, truncated
    expect: str
    status: int | None = None
    content_type: str = ""
    lang: str = "en"
    dup_of: str | None = None  # record id of the source article (exact_dup, near_dup)
    jaccard: float | None = None  # near_dup: exact Jaccard of word 5-gram sets (see shingles())
    subkind: str = ""  # spam: stuffing/random/repeated; non_html: jpeg/pdf/text; non_200: 404/301
    pii: list[str] = dataclasses.field(default_factory=list)  # planted strings, verbatim
    charset: str = ""  # declared charset of the body bytes
    text: list[str] | None = None  # planted body paragraphs (Unicode) for special pages
    html_bytes: int = 0  # length of the HTTP body


@dataclasses.dataclass
class GroundTruth:
    path: str
    seed: int
    n_docs: int
    compression: str  # "gzip_per_record", "gzip_file" or "none"
    blocked_domains: list[str]
    docs: list[DocTruth]
    expected_counts: dict[str, int]  # what iter_html_responses reports with default options
    proportions: dict[str, float]
    options: dict

    def to_json(self, path: str | PathLike) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), ensure_ascii=False))

    @classmethod
    def from_json(cls, path: str | PathLike) -> "GroundTruth":
        data = json.loads(Path(path).read_text())
        data["docs"] = [DocTruth(**d) for d in data["docs"]]
        return cls(**data)

    def by_kind(self, kind: str) -> list[DocTruth]:
        return [d for d in self.docs if d.kind == kind]

    def kept_ids(self) -> set[str]:
        return {d.record_id for d in self.docs if d.expect == "kept"}


_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word n-gram set used for the recorded Jaccard: lower-cased `\\w+` tokens."""
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0
