"""The whole data job at two revisions on the same input: are all its outputs the same?

Runs `llmforge data run` (default config: llmforge/configs/data_demo.yaml, every stage from
extraction to token shards) with this checkout's code and with the code of git revision REV
(exported by `bench_data.export_revision`, imported through PYTHONPATH), then compares each
output's digest (`outputs_digest.job_digests`): kept and dropped documents, duplicates, the
corpus steps, curated documents, token shards, tokenizer and the funnel's counts. Exits 1 when
any differs. The input defaults to generated sample WARCs with planted duplicates, spam and PII
(`--docs` pages each, two files) plus, when ../shared/data is there, a WARC of its real pages.

    .venv/bin/python infra/bench/compare_outputs.py --rev REV [--input DIR] [--config CFG]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_data import REPO, SHARED, build_inputs, code_env, export_revision
from outputs_digest import job_digests


def build_sample(out: Path, docs: int) -> Path:
    if out.exists():
        return out
    from dataproc.synthetic.sample_warc import write_sample_warc

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for seed in (1, 2):
        write_sample_warc(tmp / f"sample-{seed}.warc.gz", n_docs=docs, seed=seed)
    if SHARED.exists():  # real pages too: 256 of them, once each
        build_inputs(tmp / "real", 256, 1)
        for f in (tmp / "real").glob("*.warc.gz"):
            f.rename(tmp / f"real-{f.name}")
        (tmp / "real").rmdir()
    tmp.rename(out)
    return out


def run_job(code: Path, config: str, inputs: Path, out: Path, cores: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run(
        [str(REPO / ".venv/bin/llmforge"), "data", "run", "--config", config, "--input", str(inputs),
         "--output", str(out), "--set", f"execution.num_cpus={cores}", "--set", "execution.dashboard=false"],
        env=code_env(code), cwd=code, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"llmforge data run ({code}) failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", required=True, help="git revision to compare this checkout with")
    ap.add_argument("--input", help="a directory of .warc.gz files (default: generated, see above)")
    ap.add_argument("--config", default=str(REPO / "llmforge/configs/data_demo.yaml"))
    ap.add_argument("--docs", type=int, default=300, help="article pages per generated WARC")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", default=str(REPO / "runs" / "compare"))
    args = ap.parse_args()
    work = Path(args.workdir).resolve()  # the jobs run in each revision's own directory
    inputs = Path(args.input).resolve() if args.input else build_sample(work / f"warc-{args.docs}", args.docs)
    label = f"@{args.rev[:10]}"
    digests, walls = {}, {}
    for name, code in (("this checkout", REPO), (label, export_revision(args.rev, work))):
        out = work / f"out-{'head' if code == REPO else args.rev[:10]}"
        walls[name] = run_job(code, str(Path(args.config).resolve()), inputs, out, args.cores)
        digests[name] = job_digests(out)
        print(f"{name}: {walls[name]:.1f} s, {len(digests[name])} outputs digested", flush=True)
    a, b = digests["this checkout"], digests[label]
    print(f"\n{'output':<28}{'this checkout':>18}{label:>18}")
    for part in sorted(set(a) | set(b)):
        mark = "" if a.get(part) == b.get(part) else "   DIFFERENT"
        print(f"{part:<28}{a.get(part, '-'):>18}{b.get(part, '-'):>18}{mark}")
    same = a == b
    print(f"\nall outputs identical: {'yes' if same else 'NO'}")
    (work / "results.json").write_text(json.dumps({"digests": digests, "wall_s": walls}, indent=1))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
