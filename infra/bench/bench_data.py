"""Benchmark: llmforge's data pipeline (first half) vs datatrove on the same WARC files.

Builds CC-style WARC files from the real HTML pages in ../shared/data/extraction (each page
repeated under distinct URLs to reach the wanted size), split into `--cores` files so both
systems get the same parallelism, then runs, one after the other and on the same cores:

  llmforge  `llmforge data run` (URL filter, extraction, language, Gopher rep/quality, C4,
            FineWeb, PII) on an embedded Ray with --cores CPUs;
  datatrove WarcReader -> Trafilatura -> Gopher rep/quality -> C4 -> FineWeb, --cores workers
            (infra/bench/peer_datatrove.py in .venv-peer).

Wall time includes each system's start-up. Peak memory is the largest sum of PSS (shared
pages split among sharers, so Ray's object store is not double counted) over the process
tree, sampled every 0.2 s. Extraction quality on the same pages comes from
infra/bench/extraction_score.py for both extractors.

    .venv/bin/python infra/bench/bench_data.py [--cores 2] [--sizes 1024 4096]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests.support (real pages as WARCs) is not installed
SHARED = REPO.parent / "shared" / "data" / "extraction" / "trafilatura_eval"
PEER_PY = REPO / ".venv-peer" / "bin" / "python"


def build_inputs(out_dir: Path, n_docs: int, n_files: int) -> None:
    from tests.support.real_pages import write_warc_from_html_pages

    pages = sorted((SHARED / "html").glob("*.html.gz"))
    if out_dir.exists():
        return
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    per_file = -(-n_docs // n_files)
    for f in range(n_files):
        docs = []
        for i in range(f * per_file, min(n_docs, (f + 1) * per_file)):
            page = pages[i % len(pages)]
            docs.append((f"https://bench-{i // len(pages)}.example.org/{page.name[:-8]}", gzip.decompress(page.read_bytes())))
        write_warc_from_html_pages(tmp / f"bench-{f:02d}.warc.gz", docs)
    tmp.rename(out_dir)


class PeakMemory:
    """Samples the PSS sum of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    mem = PeakMemory(proc.pid)
    out, _ = proc.communicate()
    peak = mem.stop()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{out[-4000:]}")
    return wall, peak, out


def run_llmforge(inputs: Path, out: Path, cores: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    wall, peak, log = timed(
        [str(REPO / ".venv/bin/llmforge"), "data", "run", "--config", str(REPO / "infra/bench/data_first_half.yaml"),
         "--input", str(inputs), "--output", str(out),
         "--set", f"execution.num_cpus={cores}", "--set", "execution.dashboard=false"],
        env=env,
    )
    stats = json.loads((out / "stats.json").read_text())
    return {"wall_s": wall, "peak_bytes": peak, "docs": stats["documents_in"], "kept": stats["documents_out"]}


def run_peer(inputs: Path, out: Path, cores: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall, peak, log = timed([str(PEER_PY), str(REPO / "infra/bench/peer_datatrove.py"),
                             "--input", str(inputs), "--output", str(out), "--workers", str(cores)])
    result = json.loads(log.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_bytes": peak, "kept": result["kept"]}


def extraction_scores() -> dict:
    scores = {}
    for name, py in (("llmforge", REPO / ".venv/bin/python"), ("trafilatura", PEER_PY)):
        out = subprocess.run([str(py), str(REPO / "infra/bench/extraction_score.py"), "--extractor", name, "--json"],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout
        scores[name] = json.loads(out.strip().splitlines()[-1])
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096], help="documents per run (llmforge)")
    ap.add_argument("--peer-size", type=int, default=4096, help="documents for the datatrove run")
    ap.add_argument("--workdir", default=str(REPO / "runs" / "bench"))
    args = ap.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"needs {SHARED}")
    if not PEER_PY.exists():
        raise SystemExit("run infra/bench/setup_peer.sh first (or infra/bench/run.sh)")
    work = Path(args.workdir)
    ours = {}
    for n in sorted(set(args.sizes) | {args.peer_size}):
        inputs = work / f"warc-{n}-{args.cores}"
        build_inputs(inputs, n, args.cores)
        ours[n] = run_llmforge(inputs, work / f"out-llmforge-{n}", args.cores)
        print(f"llmforge  {n:>6} docs: {ours[n]['wall_s']:7.1f} s  peak {ours[n]['peak_bytes'] / 2**20:7.0f} MiB", flush=True)
    inputs = work / f"warc-{args.peer_size}-{args.cores}"
    peer = run_peer(inputs, work / "out-datatrove", args.cores)
    print(f"datatrove {args.peer_size:>6} docs: {peer['wall_s']:7.1f} s  peak {peer['peak_bytes'] / 2**20:7.0f} MiB", flush=True)
    quality = extraction_scores()

    n = args.peer_size
    ours_rate = n / ours[n]["wall_s"] / args.cores
    peer_rate = n / peer["wall_s"] / args.cores
    print()
    print(f"{'':<28}{'llmforge':>12}{'datatrove':>12}{'ratio':>9}")
    print(f"{'docs/s per core (' + str(n) + ' docs)':<28}{ours_rate:>12.1f}{peer_rate:>12.1f}{ours_rate / peer_rate:>8.1f}x")
    print(f"{'peak memory MiB':<28}{ours[n]['peak_bytes'] / 2**20:>12.0f}{peer['peak_bytes'] / 2**20:>12.0f}"
          f"{ours[n]['peak_bytes'] / peer['peak_bytes']:>8.2f}x")
    print(f"{'documents kept':<28}{ours[n]['kept']:>12}{peer['kept']:>12}")
    lq, tq = quality["llmforge"], quality["trafilatura"]
    print(f"{'extraction F1':<28}{lq['f1']:>12.3f}{tq['f1']:>12.3f}{lq['f1'] - tq['f1']:>+9.3f}")
    print(f"{'extraction accuracy':<28}{lq['accuracy']:>12.3f}{tq['accuracy']:>12.3f}{lq['accuracy'] - tq['accuracy']:>+9.3f}")
    sizes = sorted(ours)
    if len(sizes) > 1:
        a, b = sizes[0], sizes[-1]
        print(f"llmforge peak memory {a} -> {b} docs ({b / a:.0f}x input): "
              f"{ours[a]['peak_bytes'] / 2**20:.0f} -> {ours[b]['peak_bytes'] / 2**20:.0f} MiB "
              f"({ours[b]['peak_bytes'] / ours[a]['peak_bytes']:.2f}x); throughput "
              f"{a / ours[a]['wall_s'] / args.cores:.1f} -> {b / ours[b]['wall_s'] / args.cores:.1f} docs/s/core")
    (work / "results.json").write_text(json.dumps({"llmforge": ours, "datatrove": peer, "extraction": quality}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
