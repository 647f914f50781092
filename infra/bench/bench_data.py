"""Benchmark: llmforge's data pipeline (first half) vs a plain loop over the same functions
and vs datatrove, on the same WARC files, at two input sizes.

Builds CC-style WARC files from the real HTML pages in ../shared/data/extraction (each page
repeated under distinct URLs to reach the wanted size), split into `--cores` files so every
system gets the same parallelism, then runs, one after the other and on the same cores:

  llmforge  `llmforge data run` (URL filter, extraction, language, Gopher rep/quality, C4,
            FineWeb, PII) on an embedded Ray with --cores CPUs;
  llmforge-on-ray  the same command joined to a Ray head of --cores CPUs that is already up
            (RAY_ADDRESS), as a job under `ray job submit` finds its cluster: a fresh head per
            run, started and settled before the clock starts;
  plain     infra/bench/plain_loop.py: the same reader, stages and Parquet sink in plain
            Python processes, one per core (no Ray): what the job's functions cost alone;
  datatrove WarcReader -> Trafilatura -> Gopher rep/quality -> C4 -> FineWeb, --cores workers
            (infra/bench/peer_datatrove.py in .venv-peer);
  curator   NeMo Curator: DocumentIterateExtractStage (WARC iterator, pycld2 language id, jusText)
            -> English -> its English heuristic cascade (Gopher rep/quality, C4) -> JSONL, on
            its XennaExecutor over a Ray cluster of --cores CPUs (infra/bench/peer_curator.py in
            .venv-curator, from infra/bench/setup_curator.sh; skipped when that venv is absent).

With `--compare-to REV` the same llmforge and plain-loop runs also use the code of git revision
REV (exported with `git archive` into the workdir, imported through PYTHONPATH) on the same
input, one after the other: a before/after table from one command. Every run's kept documents
are digested (all columns, rows by id, the input file by name) and the digests compared: the
outputs of both systems and both revisions must be identical.

With `--rounds N` every system runs N times, interleaved, every other round in reverse order;
the table keeps each one's fastest run, and a second table gives each pair's ratios within
every round (the two runs minutes apart at most, so the host's drift, up to 40% over tens of
minutes, touches both alike): their median and range over the rounds. A last table compares
the seconds spent inside the reader and the stages (from the ledger both write): whether the
job slows its functions down, apart from what it adds around them.

Wall time is whole processes, start-up included. From the two sizes each system's wall time
splits into a fixed cost (start-up and finish: the intercept of wall = fixed + n x per-doc) and
a per-document cost (the slope): llmforge / plain per-document is the job's overhead at scale.
Peak memory is the largest sum of PSS (shared pages split among sharers, so Ray's object store
is not double counted) over the process tree, sampled once a second. Extraction quality on the
same pages comes from infra/bench/extraction_score.py for each system's extractor.

    .venv/bin/python infra/bench/bench_data.py [--cores 2] [--sizes 4096 12288] [--no-peer]
        [--systems llmforge plain datatrove curator] [--compare-to REV]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import psutil

from outputs_digest import documents_digest  # infra/bench, beside this script

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "extraction" / "trafilatura_eval"
PEER_PY = REPO / ".venv-peer" / "bin" / "python"
CURATOR_PY = REPO / ".venv-curator" / "bin" / "python"
SYSTEMS = ("llmforge", "llmforge-on-ray", "plain", "datatrove", "curator")
PEERS = ("datatrove", "curator")


def build_inputs(out_dir: Path, n_docs: int, n_files: int) -> None:
    if out_dir.exists():
        return
    from dataproc.synthetic.real_pages import write_warc_from_html_pages

    pages = sorted((SHARED / "html").glob("*.html.gz"))
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


class TreeSampler:
    """Calls `sample` with a process and all its descendants every `interval` seconds, on a
    thread, from construction until `stop()`."""

    def __init__(self, pid: int, interval: float):
        self.pid, self.interval = pid, interval
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
            self.sample(procs)
            self._stop.wait(self.interval)

    def sample(self, procs: list[psutil.Process]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class PeakMemory(TreeSampler):
    """The largest PSS sum of a process and all its descendants.

    Once a second: reading PSS makes the kernel walk every mapping of every process, which
    for llmforge's ~12 (Ray's processes map the object store) cost this bench 9-16 CPU s of
    a 46-64 s run at 5 samples a second, taken from the cores the system under test runs on."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.peak = 0
        super().__init__(pid, interval)

    def sample(self, procs: list[psutil.Process]) -> None:
        total = 0
        for p in procs:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)

    def stop(self) -> int:
        super().stop()
        return self.peak


def timed(cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    mem = PeakMemory(proc.pid)
    out, _ = proc.communicate()
    peak = mem.stop()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{out[-4000:]}")
    return wall, peak, out


def code_env(code: Path) -> dict:
    """Environment that imports llmforge's packages from `code` (a revision's source tree).
    Run the process in `code` too: Ray workers put the driver's working directory first on
    their import path, so from this checkout they would run its packages, not the revision's."""
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    if code != REPO:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    return env


def export_revision(rev: str, work: Path) -> Path:
    """The source tree of git revision `rev`, exported once into `work/rev-<sha>`."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = work / f"rev-{sha[:10]}"
    if not tree.exists():
        tmp = tree.with_name(tree.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(tree)
    return tree


def run_llmforge(inputs: Path, out: Path, cores: int, code: Path = REPO, address: dict | None = None) -> dict:
    """`llmforge data run` on an embedded Ray, or with `address` (RAY_ADDRESS and the head's
    client environment) on a running one."""
    shutil.rmtree(out, ignore_errors=True)
    env = code_env(code)
    if address:
        env.update(address)
    wall, peak, log = timed(
        [str(REPO / ".venv/bin/llmforge"), "data", "run", "--config", str(REPO / "infra/bench/data_first_half.yaml"),
         "--input", str(inputs), "--output", str(out),
         "--set", f"execution.num_cpus={cores}", "--set", "execution.dashboard=false"],
        env=env, cwd=code,
    )
    stats = json.loads((out / "stats.json").read_text())
    return {"wall_s": wall, "peak_bytes": peak, "docs": stats["documents_in"], "kept": stats["documents_out"],
            "digest": documents_digest(out), "functions_s": function_seconds(out), "phases": run_phases(stats, wall)}


def run_llmforge_on_ray(inputs: Path, out: Path, cores: int, code: Path = REPO) -> dict:
    """`llmforge data run` joined to a Ray head that is up before the clock starts, as a job
    submitted to a running cluster finds it. A fresh head per run, with its dashboard (as a
    cluster's head has): the run still pays what every job's driver pays, and Ray Data's two
    actors, which on a long-lived cluster only its first job starts. Peak memory is the
    driver's process tree only: the head's processes are not its children."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.support.ray_head import ray_head  # a real `ray start --head`, torn down after

    with ray_head(num_cpus=cores) as head:
        settle(head.process.pid)
        return run_llmforge(inputs, out, cores, code, {**head.env, "RAY_ADDRESS": head.gcs})


def settle(pid: int, idle_cpu_s: float = 0.1, timeout: float = 30.0) -> None:
    """Wait until a process tree uses under `idle_cpu_s` CPU seconds in a second (a new Ray
    head's dashboard modules and agents keep starting after it accepts jobs), at most `timeout`."""
    def cpu() -> float:
        total = 0.0
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    deadline = time.time() + timeout
    before = cpu()
    while time.time() < deadline:
        time.sleep(1.0)
        now = cpu()
        if now - before < idle_cpu_s:
            return
        before = now


def function_seconds(out: Path) -> float:
    """Seconds the reader and the stages themselves took in a run, summed over its processes:
    each finished input's totals as the output ledger merged them (`_stats.json`: the stages'
    batch seconds and the reader's). llmforge and the plain loop write the same ledger, so the
    two sums compare the same functions on the same input: their ratio says whether the job
    slows the functions down, the wall-time ratio whether it adds work around them."""
    from dataproc.outputs.ledger import UNIT_MARKER

    units = [json.loads(m.read_text()) for m in out.glob(f"**/documents/*/{UNIT_MARKER}")]
    return sum(sum(u["seconds"].values()) + u["read_seconds"] for u in units)


def run_phases(stats: dict, wall: float) -> dict[str, float]:
    """Where a `llmforge data run` of `wall` seconds went, from its stats.json. Revisions before
    `phase_seconds` was recorded give only the run and the time outside it."""
    inside, phases = stats["wall_seconds_this_run"], stats.get("phase_seconds")
    split = {"in the run": inside}
    if phases:
        ray_start, documents = phases.get("ray_start", 0.0), phases.get("documents", 0.0)
        split = {"Ray start": ray_start, "Ray Data pass": documents, "rest of the run": inside - ray_start - documents}
    return {**split, "outside the run (imports, plot, Ray stop, exit)": wall - inside}


def run_plain(inputs: Path, out: Path, cores: int, code: Path = REPO) -> dict:
    """plain_loop.py in `cores` processes at once, the input files dealt out among them."""
    shutil.rmtree(out, ignore_errors=True)
    files = sorted(inputs.glob("*.warc.gz"))
    start = time.perf_counter()
    procs = []
    for i in range(cores):
        part = out / f"in-{i}"
        part.mkdir(parents=True)
        for f in files[i::cores]:
            (part / f.name).symlink_to(f)
        procs.append(subprocess.Popen(
            [str(REPO / ".venv/bin/python"), str(REPO / "infra/bench/plain_loop.py"), "--config",
             str(REPO / "infra/bench/data_first_half.yaml"), "--input", str(part), "--output", str(out / f"out-{i}")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=code_env(code)))
    mems = [PeakMemory(p.pid) for p in procs]
    results = []
    for p in procs:
        log, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"plain_loop failed ({p.returncode}):\n{log[-4000:]}")
        results.append(json.loads(log.strip().splitlines()[-1]))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_bytes": sum(m.stop() for m in mems),
            "docs": sum(r["docs"] for r in results), "kept": sum(r["kept"] for r in results),
            "digest": documents_digest(out), "functions_s": function_seconds(out)}


def run_peer(python: Path, script: str, inputs: Path, out: Path, cores: int) -> dict:
    """A peer's script (datatrove, Curator) in its own venv; it prints one JSON line of counts last."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    wall, peak, log = timed([str(python), str(REPO / "infra/bench" / script),
                             "--input", str(inputs), "--output", str(out), "--workers", str(cores)], env=env)
    result = json.loads(log.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_bytes": peak, "kept": result["kept"]}


EXTRACTORS = {"llmforge": ("llmforge", REPO / ".venv/bin/python"), "datatrove": ("trafilatura", PEER_PY),
              "curator": ("curator", CURATOR_PY)}


def extraction_scores(systems: tuple[str, ...]) -> dict:
    """Extraction F1/accuracy on the eval pages for each system's extractor (plain shares llmforge's)."""
    scores = {}
    for system in systems:
        if system not in EXTRACTORS:
            continue
        name, py = EXTRACTORS[system]
        out = subprocess.run([str(py), str(REPO / "infra/bench/extraction_score.py"), "--extractor", name, "--json"],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout
        scores[system] = json.loads(out.strip().splitlines()[-1])
    return scores


def fixed_and_per_doc(runs: dict[int, dict]) -> tuple[float, float]:
    """(fixed seconds, seconds per document) from the smallest and largest run."""
    a, b = min(runs), max(runs)
    per_doc = (runs[b]["wall_s"] - runs[a]["wall_s"]) / (b - a)
    return runs[a]["wall_s"] - a * per_doc, per_doc


def median_range(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def paired_line(label: str, cells: list[str]) -> str:
    """One line of the paired tables: a space before every cell, even one wider than its column."""
    return f"{label:<40}" + "".join(f" {c:>21}" for c in cells)


def print_paired(pairs: list[tuple[str, str]], walls: list[dict[str, dict[int, float]]], small: int, large: int) -> None:
    """The ratios within each round (a's and b's runs minutes apart at most), median and range
    over the rounds. The host's speed drifts by up to 40% over tens of minutes, which moves
    every system's fastest run (the table above) by as much; runs of one round share it."""
    print("\n" + paired_line("paired by round (median, min-max)", [f"{small} docs", f"{large} docs", "per doc"]))
    for a, b in pairs:
        cols = []
        for key in (small, large, "per doc"):
            ratios = []
            for w in walls:
                if key == "per doc":
                    per_doc = {x: (w[x][large] - w[x][small]) / (large - small) for x in (a, b)}
                    ratios.append(per_doc[b] / per_doc[a])
                else:
                    ratios.append(w[b][key] / w[a][key])
            cols.append(median_range(ratios))
        print(paired_line(f"  {a} / {b}", cols))


def print_function_seconds(pairs: list[tuple[str, str]], inside: list[dict[str, dict[int, float]]],
                           sizes: tuple[int, int]) -> None:
    """How many times faster the reader and the stages themselves ran in a's runs than in b's
    (b's seconds over a's, paired by round; median, min-max), the speed ratios' convention:
    below 1 when the job slows the functions down."""
    pairs = [(a, b) for a, b in pairs if all(n in r[a] and n in r[b] for r in inside for n in sizes)]
    if not pairs:
        return
    print("\n" + paired_line("reader + stages speed (median, min-max)", [f"{n} docs" for n in sizes]))
    for a, b in pairs:
        cols = [median_range([r[b][n] / r[a][n] for r in inside]) for n in sizes]
        print(paired_line(f"  {a} / {b}", cols))


def choose_systems(args: argparse.Namespace) -> tuple[str, ...]:
    """The systems to run: --systems (default all), less the peers --no-peer drops; curator is
    skipped with one line when .venv-curator is absent, datatrove's venv is required."""
    systems = [name for name in SYSTEMS if name in (args.systems or SYSTEMS)]
    if args.no_peer:
        systems = [name for name in systems if name not in PEERS]
    if "curator" in systems and not CURATOR_PY.exists():
        print("curator: skipped, no .venv-curator/bin/python (bash infra/bench/setup_curator.sh sets it up)")
        systems.remove("curator")
    if "datatrove" in systems and not PEER_PY.exists():
        raise SystemExit("run infra/bench/setup_peer.sh first (or infra/bench/run.sh), or leave datatrove out: "
                         "--no-peer / --systems")
    if not systems:
        raise SystemExit("no system to run")
    return tuple(systems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs=2, default=[4096, 12288], help="documents in the two runs")
    ap.add_argument("--no-peer", action="store_true", help="llmforge and the plain loop only (no datatrove, no curator)")
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, help=f"run only these (default: all of {', '.join(SYSTEMS)})")
    ap.add_argument("--compare-to", metavar="REV", help="also run llmforge and the plain loop at git revision REV")
    ap.add_argument("--no-extraction", action="store_true", help="skip the extraction F1/accuracy rows")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every system this many times, interleaved, and keep each one's fastest run "
                         "(the host's speed drifts between runs minutes apart)")
    ap.add_argument("--workdir", default=str(REPO / "runs" / "bench"))
    args = ap.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"needs {SHARED}")
    work = Path(args.workdir).resolve()  # the plain loop links its inputs by this path
    runners = {"llmforge": run_llmforge, "llmforge-on-ray": run_llmforge_on_ray, "plain": run_plain,
               "datatrove": partial(run_peer, PEER_PY, "peer_datatrove.py"),
               "curator": partial(run_peer, CURATOR_PY, "peer_curator.py")}
    runners = {name: runners[name] for name in choose_systems(args)}
    before = None
    if args.compare_to:
        code = export_revision(args.compare_to, work)
        before = "@" + args.compare_to[:10]
        for name in ("llmforge", "plain"):
            if name in runners:
                runners[name + before] = partial(runners[name], code=code)
    systems = list(runners)
    runs: dict[str, dict[int, dict]] = {name: {} for name in systems}
    walls: list[dict[str, dict[int, float]]] = []  # per round: each system's wall seconds by size
    inside: list[dict[str, dict[int, float]]] = []  # per round: llmforge's and the plain loop's function seconds
    digests: dict[int, set[str]] = {}  # per size, the kept documents' digests of every run
    for round_ in range(args.rounds):
        walls.append({name: {} for name in systems})
        inside.append({name: {} for name in systems})
        # Every other round in reverse order: the host's speed drifts, and whichever system
        # always ran second would always meet the drift of the minutes after the other's run.
        order = systems if round_ % 2 == 0 else systems[::-1]
        for n in sorted(set(args.sizes)):
            inputs = work / f"warc-{n}-{args.cores}"
            build_inputs(inputs, n, args.cores)
            for name in order:
                r = runners[name](inputs, work / f"out-{name}-{n}", args.cores)
                walls[-1][name][n] = r["wall_s"]
                if "functions_s" in r:
                    inside[-1][name][n] = r["functions_s"]
                if "digest" in r:
                    digests.setdefault(n, set()).add(r["digest"])
                if n not in runs[name] or r["wall_s"] < runs[name][n]["wall_s"]:
                    runs[name][n] = r
                print(f"{name:<20}{n:>7} docs: {r['wall_s']:7.1f} s  {n / r['wall_s'] / args.cores:7.1f} docs/s/core  "
                      f"kept {r['kept']:>6}  peak {r['peak_bytes'] / 2**20:6.0f} MiB  output {r.get('digest', '-')}"
                      + (f"  reader+stages {r['functions_s']:.1f} s" if "functions_s" in r else "")
                      + (f"  (round {round_ + 1})" if args.rounds > 1 else ""), flush=True)

    small, large = min(args.sizes), max(args.sizes)
    width = max(12, *(len(name) + 2 for name in systems))
    fits = {name: fixed_and_per_doc(runs[name]) for name in systems}
    print()
    print(f"{'':<34}" + "".join(f"{name:>{width}}" for name in systems))
    for n in (small, large):
        print(f"{f'docs/s per core, {n} docs':<34}"
              + "".join(f"{n / runs[name][n]['wall_s'] / args.cores:>{width}.1f}" for name in systems))
    print(f"{'fixed cost (s)':<34}" + "".join(f"{fits[name][0]:>{width}.1f}" for name in systems))
    print(f"{'per-document cost (ms x cores)':<34}"
          + "".join(f"{fits[name][1] * 1e3 * args.cores:>{width}.2f}" for name in systems))
    print(f"{'peak memory MiB (' + str(large) + ' docs)':<34}"
          + "".join(f"{runs[name][large]['peak_bytes'] / 2**20:>{width}.0f}" for name in systems))
    print(f"{'documents kept (' + str(large) + ' docs)':<34}" + "".join(f"{runs[name][large]['kept']:>{width}}" for name in systems))

    for name in systems:
        for n in (small, large):
            phases = runs[name][n].get("phases")
            if phases:
                print(f"{name} at {n} docs, wall {runs[name][n]['wall_s']:.1f} s: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))

    # a / b: how many times faster a is than b, by wall time at each size and by per-document cost.
    pairs = [(ours, other) for ours in ("llmforge", "llmforge-on-ray") for other in ("plain", "datatrove", "curator")]
    if before:
        pairs += [("llmforge" + before, "plain" + before), ("llmforge", "llmforge" + before), ("plain", "plain" + before)]
    pairs = [(a, b) for a, b in pairs if a in runs and b in runs]
    print()
    print(f"{'speed ratio':<40}" + "".join(f"{f'{n} docs':>12}" for n in (small, large)) + f"{'per doc':>12}   fixed s")
    for a, b in pairs:
        speed = [runs[b][n]["wall_s"] / runs[a][n]["wall_s"] for n in (small, large)]
        print(f"{f'  {a} / {b}':<40}" + "".join(f"{x:>11.2f}x" for x in speed)
              + f"{fits[b][1] / fits[a][1]:>11.2f}x   {fits[a][0]:.1f} / {fits[b][0]:.1f}")
    if args.rounds > 1:
        print_paired(pairs, walls, small, large)
    print_function_seconds(pairs, inside, (small, large))
    runs["rounds"] = walls
    runs["function_seconds"] = inside
    digested = [name for name in systems if "digest" in runs[name][large]]
    same = all(len(d) == 1 for d in digests.values())
    print(f"\nkept documents identical across every run of {', '.join(digested)}: {'yes' if same else 'NO'}")
    if not args.no_extraction and any(name in PEERS for name in systems):
        quality = extraction_scores(tuple(systems))
        for metric in ("f1", "accuracy"):
            print(f"{'extraction ' + ('F1' if metric == 'f1' else metric):<34}"
                  + "".join(f"{quality[name][metric]:>{width}.3f}" if name in quality else f"{'':>{width}}" for name in systems))
        runs["extraction"] = quality
    (work / "results.json").write_text(json.dumps(runs, indent=1, default=str))
    if not same:
        raise SystemExit("the outputs differ (see the digests above)")


if __name__ == "__main__":
    sys.exit(main())
