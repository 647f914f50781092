#!/usr/bin/env python
"""Score a main-content extractor on trafilatura's evaluation set.

The set (`evaldata_subset.json` + `html/*.html.gz`) maps each URL to snippets that must
appear in the extracted text ("with") and snippets that must not ("without", i.e.
boilerplate). As in trafilatura's own evaluation, per page each "with" snippet found is a
true positive (else a false negative) and each "without" snippet found is a false positive
(else a true negative); precision/recall/F1/accuracy are computed over the pooled counts.

    python infra/bench/extraction_score.py --extractor llmforge [--json] [--data DIR]

Nothing from llmforge is imported at module level so the script (and `score`) can run
against any extractor; the extractors are imported lazily by `get_extractor`.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "extraction" / "trafilatura_eval"

Extractor = Callable[[str], str]


@dataclass(frozen=True)
class Page:
    url: str
    html: str
    with_snippets: tuple[str, ...]
    without_snippets: tuple[str, ...]


@dataclass
class Score:
    extractor: str
    pages: int = 0
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    seconds: float = 0.0
    # URL -> (missed "with" snippets, leaked "without" snippets); for debugging an extractor.
    errors: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        total = self.tp + self.fn + self.fp + self.tn
        return (self.tp + self.tn) / total if total else 0.0

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "errors"}
        d.update(
            precision=round(self.precision, 4),
            recall=round(self.recall, 4),
            f1=round(self.f1, 4),
            accuracy=round(self.accuracy, 4),
            pages_per_s=round(self.pages_per_s, 1),
            seconds=round(self.seconds, 3),
        )
        return d


def decode_html(raw: bytes) -> str:
    """Decode page bytes: UTF-8 when valid, else a declared charset, else cp1252.

    The eval pages are mostly UTF-8 but a few older German pages are Latin-1; decoding
    those as UTF-8 with replacement would turn umlauts into U+FFFD and make snippets miss
    for reasons unrelated to extraction.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    head = raw[:4096].decode("ascii", errors="replace").lower()
    marker = head.find("charset=")
    if marker >= 0:
        name = head[marker + 8 :].lstrip("\"' ")
        name = name[: next((i for i, c in enumerate(name) if c in "\"'>;/ "), len(name))]
        try:
            return raw.decode(name, errors="replace")
        except LookupError:
            pass
    return raw.decode("cp1252", errors="replace")


def load_pages(data_dir: Path) -> list[Page]:
    meta = json.loads((data_dir / "evaldata_subset.json").read_text(encoding="utf-8"))
    pages = []
    for url, item in meta.items():
        raw = gzip.decompress((data_dir / item["html_path"]).read_bytes())
        pages.append(
            Page(url, decode_html(raw), tuple(item.get("with", ())), tuple(item.get("without", ())))
        )
    return pages


def score(name: str, extract: Extractor, pages: Iterable[Page]) -> Score:
    """Run `extract` on every page and pool the snippet counts; time covers extraction only."""
    result = Score(extractor=name)
    for page in pages:
        start = time.perf_counter()
        text = extract(page.html) or ""
        result.seconds += time.perf_counter() - start
        result.pages += 1
        missed = [s for s in page.with_snippets if s not in text]
        leaked = [s for s in page.without_snippets if s in text]
        result.tp += len(page.with_snippets) - len(missed)
        result.fn += len(missed)
        result.fp += len(leaked)
        result.tn += len(page.without_snippets) - len(leaked)
        if missed or leaked:
            result.errors[page.url] = (missed, leaked)
    return result


def get_extractor(name: str) -> Extractor:
    if name == "llmforge":
        from dataproc.documents.extract import ExtractOptions, extract_text

        options = ExtractOptions()
        return lambda html: extract_text(html, options)[0]
    if name == "trafilatura":
        import trafilatura

        return lambda html: trafilatura.extract(html, include_comments=False) or ""
    if name == "curator":
        # NeMo Curator's WARC extractor as its pipeline runs it (pycld2 language id on the page,
        # then jusText with that language's stop list); needs .venv-curator.
        from nemo_curator.stages.text.download.common_crawl.extract import CommonCrawlHTMLExtractor
        from nemo_curator.stages.text.download.html_extractors.justext import JusTextExtractor

        curator = CommonCrawlHTMLExtractor(algorithm=JusTextExtractor())
        record = {"url": "", "warc_id": "", "source_id": ""}
        return lambda html: (curator.extract({**record, "content": html.encode("utf-8")}) or {}).get("text", "")
    raise ValueError(f"unknown extractor {name!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval set directory")
    ap.add_argument("--extractor", choices=("llmforge", "trafilatura", "curator"), default="llmforge")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--errors", action="store_true", help="list missed/leaked snippets per page")
    args = ap.parse_args(argv)

    if not (args.data / "evaldata_subset.json").is_file():
        print(f"no eval set at {args.data}", file=sys.stderr)
        return 2
    if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
        sys.path.insert(0, str(REPO_ROOT))

    pages = load_pages(args.data)
    result = score(args.extractor, get_extractor(args.extractor), pages)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{result.extractor}: pages={result.pages} precision={result.precision:.4f} "
            f"recall={result.recall:.4f} f1={result.f1:.4f} accuracy={result.accuracy:.4f} "
            f"pages/s={result.pages_per_s:.1f} (tp={result.tp} fn={result.fn} "
            f"fp={result.fp} tn={result.tn})"
        )
    if args.errors:
        for url, (missed, leaked) in result.errors.items():
            print(f"\n{url}\n  missed: {missed}\n  leaked: {leaked}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
