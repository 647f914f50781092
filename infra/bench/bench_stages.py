"""Benchmark: the per-document stages on real pages, single thread.

Pages are trafilatura's evaluation set (../shared/data/extraction/trafilatura_eval, 256 real
HTML pages). Everything runs on one thread; times are CPU seconds of the measuring process
(`time.process_time`), each measurement is repeated `--rounds` times, interleaved, and the best
round counts, so that other load on a shared machine hurts as little as possible.

  extraction  llmforge `extract_text` vs resiliparse `extract_plain_text(main_content=True)`
              (parse included), pages/s over all pages. resiliparse is not a dependency: it
              is imported when installed here, else run from --resiliparse-python /
              $RESILIPARSE_PYTHON / .venv-peer (one subprocess per round), else skipped.
  filters     each filter stage, in pipeline order, on every extracted text (nothing dropped
              in between, so every stage sees every document), run as the runner runs them:
              stage by stage over one batch, sharing one word/line split per document.
              ms per document for each stage and for the Gopher+C4+FineWeb chain.
  pipeline    `DocumentStages` (URL filter ... PII, default config) on the pages' HTML as one
              batch: ms per document each stage looked at (the runner's t_<stage> columns,
              wall time).
  reading     the pages 8 times over as one gzip-per-record WARC (as Common Crawl's), read by
              `iter_html_responses` (records, HTTP headers, charset decoding to str) inflating
              with ISA-L (the reader's default) and with zlib, as the job reads (ISA-L, pages as
              UTF-8 bytes: checked, not decoded), and by warcio's ArchiveIterator (records and
              payload bytes only, no decoding): ms per page.

    .venv/bin/python infra/bench/bench_stages.py [--rounds 5] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction_score import DEFAULT_DATA, load_pages  # noqa: E402

FILTERS = ("language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "pii")
CHAIN = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


def _resiliparse_extract():
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return lambda html: extract_plain_text(HTMLTree.parse(html), main_content=True)


def _time_all(fn, items) -> float:
    start = time.process_time()
    for item in items:
        fn(item)
    return time.process_time() - start


def _resiliparse_runner(python: str | None, data: Path):
    """A callable returning the seconds of one resiliparse round over `htmls`, or None."""
    try:
        extract = _resiliparse_extract()
        return lambda htmls: _time_all(extract, htmls), "in process"
    except ImportError:
        pass
    py = resiliparse_python(python)
    if py is None:
        return None, "not installed (pass --resiliparse-python)"
    cmd = [py, __file__, "--resiliparse-round", "--data", str(data)]
    return (lambda htmls: json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)["seconds"]), py


def resiliparse_python(python: str | None = None) -> str | None:
    """The first interpreter that imports resiliparse: `python`, $RESILIPARSE_PYTHON, .venv-peer."""
    candidates = [python, os.environ.get("RESILIPARSE_PYTHON"), str(REPO / ".venv-peer" / "bin" / "python")]
    for py in filter(None, candidates):
        if Path(py).exists() and subprocess.run([py, "-c", "import resiliparse"], capture_output=True).returncode == 0:
            return py
    return None


def bench_extraction(htmls: list[str], rounds: int, resiliparse_python: str | None, data: Path) -> dict:
    from dataproc.documents.extract import ExtractOptions, extract_text

    options = ExtractOptions()
    ours = lambda html: extract_text(html, options)  # noqa: E731
    peer, where = _resiliparse_runner(resiliparse_python, data)
    best = {"llmforge": float("inf"), "resiliparse": float("inf")}
    for _ in range(rounds):
        best["llmforge"] = min(best["llmforge"], _time_all(ours, htmls))
        if peer is not None:
            best["resiliparse"] = min(best["resiliparse"], peer(htmls))
    out = {"pages": len(htmls), "llmforge_pages_s": len(htmls) / best["llmforge"], "resiliparse": where}
    if peer is not None:
        out["resiliparse_pages_s"] = len(htmls) / best["resiliparse"]
    return out


def _shared_views():
    try:  # the batch scope the runner opens; absent before the filters shared one split
        from dataproc.documents.filters.text_utils import shared_views
    except ImportError:
        return contextlib.nullcontext()
    return shared_views()


def bench_filters(texts: list[str], rounds: int) -> dict[str, float]:
    """ms/doc per filter stage, every stage on every text, in pipeline order within one batch."""
    from dataproc.config import StagesConfig
    from dataproc.documents.registry import DOCUMENT_STAGES

    config = StagesConfig()
    stages = [(name, DOCUMENT_STAGES[name].build(getattr(config, name))) for name in FILTERS]
    best = {name: float("inf") for name in FILTERS}
    for _ in range(rounds):
        current = list(texts)
        with _shared_views():
            for name, stage in stages:
                start = time.process_time()
                results = stage.process_batch(current)
                best[name] = min(best[name], time.process_time() - start)
                if stage.rewrites:  # C4's cleaned text is what FineWeb and PII see
                    current = [r.text if r.text is not None else t for r, t in zip(results, current)]
    ms = {name: 1000 * best[name] / len(texts) for name in FILTERS}
    ms["gopher+c4+fineweb"] = sum(ms[name] for name in CHAIN)
    return ms


def bench_pipeline(htmls: list[str], rounds: int) -> dict[str, float]:
    import pyarrow as pa

    from dataproc.config import StagesConfig
    from dataproc.documents.runner import DocumentStages

    n = len(htmls)
    batch = pa.table({"id": [str(i) for i in range(n)], "url": [f"https://bench-{i}.example.org/page" for i in range(n)],
                      "html": pa.array(htmls, pa.large_string()), "source": ["bench"] * n, "seq": list(range(n))})
    stages = DocumentStages(StagesConfig())
    best: dict[str, float] = {}
    for _ in range(rounds):
        table = stages(batch)
        reasons = table.column("drop_reason").to_pylist()
        for name, _stage in stages.stages:
            seen = n - sum(1 for r in reasons if r is not None and not _dropped_at_or_after(r, name, stages))
            total = sum(table.column(f"t_{name}").to_pylist())
            best[name] = min(best.get(name, float("inf")), 1000 * total / max(seen, 1))
    return best


def bench_reading(htmls: list[str], rounds: int) -> dict[str, float]:
    import collections
    import tempfile
    import zlib

    from warcio.archiveiterator import ArchiveIterator

    from dataproc.reading import framing
    from dataproc.reading.records import WarcReadOptions, iter_html_responses
    from dataproc.synthetic.real_pages import write_warc_from_html_pages

    isal = framing._inflate, framing._INFLATE_ERRORS
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pages.warc.gz"
        pages = [(f"https://bench-{i}.example.org/{k}", h.encode()) for i in range(8) for k, h in enumerate(htmls)]
        write_warc_from_html_pages(path, pages)

        def ours(inflate, utf8: bool = False) -> float:
            framing._inflate, framing._INFLATE_ERRORS = inflate
            try:
                start = time.process_time()
                with open(path, "rb") as f:
                    n = sum(1 for _ in iter_html_responses(f, "bench", WarcReadOptions(), collections.Counter(), utf8))
                assert n == len(pages), n
                return time.process_time() - start
            finally:
                framing._inflate, framing._INFLATE_ERRORS = isal

        def warcio() -> float:
            start = time.process_time()
            with open(path, "rb") as f:
                n = sum(len(r.content_stream().read()) > 0 for r in ArchiveIterator(f) if r.rec_type == "response")
            assert n == len(pages), n
            return time.process_time() - start

        runs = {"llmforge (ISA-L)": lambda: ours(isal), "llmforge (zlib)": lambda: ours((zlib, (zlib.error,))),
                "llmforge (ISA-L, UTF-8)": lambda: ours(isal, utf8=True), "warcio": warcio}
        best = {name: fn() for name, fn in runs.items()}
        for _ in range(rounds - 1):
            for name, fn in runs.items():
                best[name] = min(best[name], fn())
    return {name: 1000 * sec / len(pages) for name, sec in best.items()}


def _dropped_at_or_after(reason: str, name: str, stages) -> bool:
    order = [s for s, _ in stages.stages]
    return order.index(reason.split(":", 1)[0]) >= order.index(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--resiliparse-python", help="interpreter with resiliparse installed (when not importable here)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--resiliparse-round", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not (args.data / "evaldata_subset.json").is_file():
        raise SystemExit(f"needs {args.data}")
    htmls = [page.html for page in load_pages(args.data)]
    if args.resiliparse_round:  # one round in a peer interpreter
        print(json.dumps({"seconds": _time_all(_resiliparse_extract(), htmls)}))
        return

    from dataproc.documents.extract import ExtractOptions, extract_text

    options = ExtractOptions()
    texts = [t for t in (extract_text(h, options)[0] for h in htmls) if t]
    result = {
        "extraction": bench_extraction(htmls, args.rounds, args.resiliparse_python, args.data),
        "filters_ms_per_doc": bench_filters(texts, args.rounds),
        "pipeline_ms_per_doc": bench_pipeline(htmls, args.rounds),
        "reading_ms_per_page": bench_reading(htmls, args.rounds),
    }
    if args.json:
        print(json.dumps(result))
        return
    ex = result["extraction"]
    line = f"extraction, {ex['pages']} pages, 1 thread: llmforge {ex['llmforge_pages_s']:.0f} pages/s"
    if "resiliparse_pages_s" in ex:
        line += f", resiliparse {ex['resiliparse_pages_s']:.0f} pages/s ({ex['llmforge_pages_s'] / ex['resiliparse_pages_s']:.2f}x)"
    else:
        line += f", resiliparse {ex['resiliparse']}"
    print(line)
    print(f"filters, each on all {len(texts)} extracted texts (ms/doc):")
    for name, ms in result["filters_ms_per_doc"].items():
        print(f"  {name:<20} {ms:7.3f}")
    print("pipeline, one batch of the pages' HTML (ms per doc the stage looked at):")
    for name, ms in result["pipeline_ms_per_doc"].items():
        print(f"  {name:<20} {ms:7.3f}")
    reading = result["reading_ms_per_page"]
    print(f"reading a gzip-per-record WARC of the pages x8, 1 thread (ms/page, best of {args.rounds} interleaved rounds):")
    for name, ms in reading.items():
        print(f"  {name:<24} {ms:7.3f}  ({ms / reading['llmforge (ISA-L)']:.2f}x llmforge (ISA-L)'s time)")


if __name__ == "__main__":
    main()
