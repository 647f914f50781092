"""Benchmark: extraction on pages nested too deep, and what the nesting cap costs real pages.

  deep pages  seconds for `extract_text` on synthetic pages N elements deep: closed `<div>`s,
              unclosed `<div>`s, unclosed `<span>`s (N = 12,500 and 25,000), then 1 MB of each
              (now only: uncapped, 1 MB of `<span>x` is ~170,000 levels, hours by the
              quadratic growth). Past the cap blocks lose their tags, so the text can differ from
              the uncapped page's: lines joined, or more of the flattened blocks in the main
              container (25,000 unclosed `<div>x`: 20,002 x instead of one); the paragraph is
              checked to be there.
  real pages  pages/s of `extract_text` over trafilatura's 256 evaluation pages (UTF-8 bytes,
              as the job hands them over), best of --rounds interleaved rounds, with the
              documents checked identical.

Both against `dataproc/documents/extract.py` at git revision --compare-to (default HEAD); the
deep pages also with resiliparse (`extract_plain_text(main_content=True)`, also on Lexbor) from
--resiliparse-python / $RESILIPARSE_PYTHON / .venv-peer when installed (`bash infra/bench/setup_peer.sh`), one
subprocess per page, given up after --peer-timeout seconds.

    .venv/bin/python infra/bench/bench_deep_pages.py [--compare-to REV] [--rounds 11]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stages import resiliparse_python  # noqa: E402
from extraction_score import DEFAULT_DATA, load_pages  # noqa: E402

PARA = "<p>" + "Deep content sentence, repeated for length. " * 3 + "</p>"
SHAPES = {
    "closed <div>": lambda n: "<div>" * n + PARA + "</div>" * n,
    "unclosed <div>": lambda n: "<div>x" * n + PARA,
    "unclosed <span>": lambda n: "<span>x" * n + PARA,
}


def page(shape: str, levels: int) -> bytes:
    return ("<html><body>" + SHAPES[shape](levels) + "</body></html>").encode()


def levels_in(shape: str, size: int) -> int:
    return size // len(SHAPES[shape](1).encode().replace(PARA.encode(), b""))


def extract_module_at(rev: str, tmp: Path):
    source = subprocess.run(["git", "show", f"{rev}:dataproc/documents/extract.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    path = tmp / "extract_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("extract_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PEER_ROUND = """
import sys, time
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree
html = open(sys.argv[1], encoding="utf-8").read()
start = time.process_time()
extract_plain_text(HTMLTree.parse(html), main_content=True)
print(time.process_time() - start)
"""


def peer_seconds(python: str | None, html: bytes, tmp: Path, timeout: float) -> str:
    if python is None:
        return "-"
    path = tmp / "page.html"
    path.write_bytes(html)
    try:
        out = subprocess.run([python, "-c", PEER_ROUND, str(path)], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
    except subprocess.TimeoutExpired:
        return f">{timeout:.0f}"
    return f"{float(out):.3f}"


def seconds(extract, options, html) -> tuple[float, str]:
    start = time.process_time()
    text, _ = extract(html, options)
    return time.process_time() - start, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare-to", default="HEAD", metavar="REV")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--resiliparse-python", help="interpreter with resiliparse (default: $RESILIPARSE_PYTHON, .venv-peer)")
    ap.add_argument("--peer-timeout", type=float, default=120.0)
    args = ap.parse_args()
    peer = resiliparse_python(args.resiliparse_python)
    if peer is None:
        print("resiliparse: not installed (bash infra/bench/setup_peer.sh)")
    with tempfile.TemporaryDirectory(prefix="bench-deep-") as tmp:
        run(args, peer, Path(tmp))


def run(args: argparse.Namespace, peer: str | None, tmp: Path) -> None:
    from dataproc.documents import extract as now

    then = extract_module_at(args.compare_to, tmp)
    systems = {"now": (now.extract_text, now.ExtractOptions()),
               args.compare_to: (then.extract_text, then.ExtractOptions())}

    print("deep pages: extraction seconds (process CPU)")
    print(f"  {'page':<34}{'now':>10}{args.compare_to:>12}{'resiliparse':>14}")
    for shape in SHAPES:
        for levels in (12_500, 25_000, levels_in(shape, 1 << 20)):
            html = page(shape, levels)
            row = f"  {shape + f' x {levels:,}':<34}"
            texts = []
            for name, (extract, options) in systems.items():
                if name != "now" and levels > 25_000:
                    row += f"{'(skipped)':>12}"
                    continue
                sec, text = seconds(extract, options, html)
                texts.append(text)
                row += f"{sec:10.3f}" if name == "now" else f"{sec:12.3f}"
            row += f"{peer_seconds(peer, html, tmp, args.peer_timeout):>14}"
            kept = "Deep content sentence" in texts[0]
            note = "" if len(set(texts)) == 1 else (  # past the cap, blocks' lines join; no character goes
                "  (same characters, lines joined)" if len({"".join(t.split()) for t in texts}) == 1 else "  (text differs)")
            print(row + ("" if kept else "  (TEXT LOST)") + note, flush=True)

    if not DEFAULT_DATA.exists():
        print(f"real pages: skipped, {DEFAULT_DATA} not found")
        return
    htmls = [p.html.encode("utf-8", "ignore") for p in load_pages(DEFAULT_DATA)]
    best = {name: float("inf") for name in systems}
    outputs = {}
    for round_ in range(args.rounds):
        order = list(systems.items())
        for name, (extract, options) in order if round_ % 2 == 0 else reversed(order):
            start = time.process_time()
            outputs[name] = [extract(h, options) for h in htmls]
            best[name] = min(best[name], time.process_time() - start)
    same = outputs["now"] == outputs[args.compare_to]
    rate = {name: len(htmls) / sec for name, sec in best.items()}
    print(f"real pages: {len(htmls)} pages, best of {args.rounds} interleaved rounds: now {rate['now']:.0f} pages/s, "
          f"{args.compare_to} {rate[args.compare_to]:.0f} pages/s ({rate['now'] / rate[args.compare_to]:.3f}x); "
          f"documents {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    sys.exit(main())
