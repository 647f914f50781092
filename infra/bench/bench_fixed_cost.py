"""Benchmark: the data job's fixed cost, start to first record and last record to exit, and
where it goes, against the plain loop over the same functions.

Runs `llmforge data run` (the benchmark's first half, infra/bench/data_first_half.yaml) on a
tiny input (--pages real pages in --cores WARC files, built as bench_data.py builds its inputs)
so that nearly all of a run is fixed cost, --rounds times each, interleaved:

  llmforge          embedded: the job starts and stops its own Ray (the default);
  llmforge-on-ray   the same command with RAY_ADDRESS at a Ray head started once beforehand,
                    as under `ray job submit` on a running cluster (the head's own start is
                    not in the run's time);
  plain             infra/bench/plain_loop.py: the same reader, stages and Parquet sink in
                    plain Python processes, one per core, no Ray.

With --compare-to REV the llmforge systems also run at git revision REV (as in bench_data.py).

For each system: the median wall time, and for the llmforge runs the phases from stats.json
(Ray start, the Ray Data pass) and the time outside the run (CLI imports, funnel plot, Ray
stop, interpreter exit). For the embedded llmforge, the CPU seconds of every process of the
run by role (the driver, Ray's own processes, Ray Data's actors, the task workers), sampled
from the process tree every 0.05 s, and the busy cores over the run from /proc/stat: whether
the fixed cost is waiting (idle cores) or work.

    .venv/bin/python infra/bench/bench_fixed_cost.py [--pages 16] [--cores 2] [--rounds 3] [--compare-to REV]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
from bench_data import REPO, SHARED, TreeSampler, build_inputs, code_env, export_revision, run_phases  # noqa: E402

sys.path.insert(0, str(REPO))
from tests.support.ray_head import ray_head  # noqa: E402 - a real `ray start --head`, torn down after

CONFIG = REPO / "infra" / "bench" / "data_first_half.yaml"

# Process roles by command line or Ray process title; the first match names the role.
ROLES = (
    ("Ray Data stats actor", "ray::_StatsActor"),
    ("Ray Data autoscaling coordinator", "ray::_AutoscalingCoordinatorActor"),
    ("dashboard agent", "ray::DashboardAgent"),
    ("runtime env agent", "ray::RuntimeEnvAgent"),
    ("runtime env agent", "runtime_env/agent/main.py"),
    ("dashboard agent", "dashboard/agent.py"),
    ("dashboard (API server)", "dashboard/dashboard.py"),
    ("log monitor", "log_monitor.py"),
    ("autoscaler monitor", "autoscaler/_private/monitor.py"),
    ("gcs server + raylet", "gcs_server"),
    ("gcs server + raylet", "raylet"),
    ("task workers", "ray::"),
)


def role_of(cmdline: str, root: bool) -> str:
    if root:
        return "driver (llmforge CLI)"
    return next((role for role, mark in ROLES if mark in cmdline), "other")


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CpuByProcess(TreeSampler):
    """CPU seconds of a process and its descendants, per pid, by sampling: a process's last
    sample before it exits counts (up to `interval` of its CPU is missed)."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.seen: dict[int, tuple[str, float]] = {}
        super().__init__(pid, interval)

    def sample(self, procs: list[psutil.Process]) -> None:
        for p in procs:
            try:
                t = p.cpu_times()
                role = role_of(" ".join(p.cmdline()), p.pid == self.pid)
                if role == "other" and p.pid in self.seen:  # an exiting process's command line is empty
                    role = self.seen[p.pid][0]
                self.seen[p.pid] = (role, t.user + t.system)
            except psutil.Error:
                pass

    def stop(self) -> dict[str, float]:
        super().stop()
        by_role: dict[str, float] = {}
        for role, seconds in self.seen.values():
            by_role[role] = by_role.get(role, 0.0) + seconds
        return by_role


def run_llmforge(inputs: Path, out: Path, cores: int, code: Path, address: dict | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = code_env(code)
    if address:
        env.update(address)
    cmd = [str(REPO / ".venv/bin/llmforge"), "data", "run", "--config", str(CONFIG), "--input", str(inputs),
           "--output", str(out), "--set", f"execution.num_cpus={cores}", "--set", "execution.dashboard=false"]
    busy0, start = busy_seconds(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=code)
    cpu = CpuByProcess(proc.pid)
    log, _ = proc.communicate()
    wall, busy = time.perf_counter() - start, busy_seconds() - busy0
    by_role = cpu.stop()
    if proc.returncode:
        raise SystemExit(f"llmforge data run failed ({proc.returncode}):\n{log[-4000:]}")
    stats = json.loads((out / "stats.json").read_text())
    return {"wall_s": wall, "busy_cpu_s": busy, "cpu_by_role": by_role, "phases": run_phases(stats, wall)}


def run_plain(inputs: Path, out: Path, cores: int) -> dict:
    busy0 = busy_seconds()
    r = bench_data.run_plain(inputs, out, cores)
    return {"wall_s": r["wall_s"], "busy_cpu_s": busy_seconds() - busy0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=16, help="real pages in the input (default 16)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="runs of every system, interleaved; medians are shown")
    ap.add_argument("--compare-to", metavar="REV", help="also run the llmforge systems at git revision REV")
    ap.add_argument("--workdir", default=str(REPO / "runs" / "bench-fixed"))
    args = ap.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"needs {SHARED}")
    work = Path(args.workdir).resolve()  # the plain loop links its inputs by this path
    inputs = work / f"warc-{args.pages}-{args.cores}"
    build_inputs(inputs, args.pages, args.cores)
    codes = {"": REPO}
    if args.compare_to:
        codes["@" + args.compare_to[:10]] = export_revision(args.compare_to, work)
    runs: dict[str, list[dict]] = {}
    with ray_head(num_cpus=args.cores) as head:
        on_ray = {**head.env, "RAY_ADDRESS": head.gcs}
        for round_ in range(args.rounds):
            for tag, code in codes.items():
                for name, address in ((f"llmforge{tag}", None), (f"llmforge-on-ray{tag}", on_ray)):
                    r = run_llmforge(inputs, work / "out", args.cores, code, address)
                    runs.setdefault(name, []).append(r)
                    print(f"{name:<30} round {round_ + 1}: {r['wall_s']:6.2f} s  "
                          + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()), flush=True)
            r = run_plain(inputs, work / "out-plain", args.cores)
            runs.setdefault("plain", []).append(r)
            print(f"{'plain':<30} round {round_ + 1}: {r['wall_s']:6.2f} s", flush=True)

    print(f"\nmedians of {args.rounds} runs, {args.pages} pages in {args.cores} files, {args.cores} cores")
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        busy = statistics.median(r["busy_cpu_s"] for r in rs)
        line = f"  {name:<30}{wall:7.2f} s wall  {busy:6.1f} CPU s ({busy / wall / args.cores:4.0%} of the cores busy)"
        if "phases" in rs[0]:
            line += "  " + ", ".join(f"{k} {statistics.median(r['phases'][k] for r in rs):.2f}"
                                      for k in rs[0]["phases"])
        print(line)
    for name, rs in runs.items():
        if name.startswith("llmforge-on-ray") or "cpu_by_role" not in rs[0]:
            continue
        roles = sorted({role for r in rs for role in r["cpu_by_role"]},
                       key=lambda role: -statistics.median(r["cpu_by_role"].get(role, 0.0) for r in rs))
        print(f"\n{name}: CPU seconds by process role (median of {args.rounds})")
        for role in roles:
            print(f"  {role:<36}{statistics.median(r['cpu_by_role'].get(role, 0.0) for r in rs):6.2f}")
        print(f"  {'all sampled':<36}{statistics.median(sum(r['cpu_by_role'].values()) for r in rs):6.2f}")
    for tag in codes:
        if tag:
            for name in ("llmforge", "llmforge-on-ray"):
                now = statistics.median(r["wall_s"] for r in runs[name])
                then = statistics.median(r["wall_s"] for r in runs[name + tag])
                print(f"{name}: {then:.2f} s at {tag[1:]} -> {now:.2f} s now ({now / then:.2f}x)")
    (work / "results.json").write_text(json.dumps(runs, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
