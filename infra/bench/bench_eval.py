"""Benchmark: multiple-choice items/s of `llmforge eval mc` vs lm-evaluation-harness's Hugging Face
backend, on the same exported model, the same task file and the same threads, CPU, fp32.

One llmforge model (default dim 256, 4 layers, 4 heads, window 512, BPE 8192, pretrained for
`--train-steps` on the shared text) is exported with `training.export.export_hf`; both tools
read that HF directory. The task is an llm-foundry ICL file (`query/choices/gold`, default
../shared/data/evalsets/llm_foundry/arc_easy.jsonl), read by `llmforge eval mc` directly and by
the harness through a local YAML (`dataset_path: json`). The harness runs with
`add_bos_token=True`, so its contexts start with `<|endoftext|>` as ours do and both score the
same token ids; accuracies and per-item choices are compared.

Each configuration runs in a fresh subprocess (`torch.set_num_threads(--threads)`):
  llmforge               evaluate_mc in process (replicas 0)
  llmforge --replicas N  evaluate_mc on N Ray Data actors (1 CPU, 1 thread each; Ray start-up counted)
  harness hf bs=B        lm_eval.simple_evaluate(model="hf", batch_size=B) for each --hf-batch-sizes
"scoring" times only the model work (our MCScorer calls; the harness's `_loglikelihood_tokens`),
"end to end" the whole subprocess (Python start, imports, model load, task read, scoring), in
wall seconds and in CPU seconds of all its threads (steadier on a shared machine). With
`--rounds` > 1 the configurations alternate and each measure keeps its best.

    .venv/bin/python infra/bench/bench_eval.py [--task FILE.jsonl] [--limit 500] [--threads 2]
                     [--hf-batch-sizes 1,8,32] [--replicas 2] [--train-steps 100] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DEFAULT_TASK = REPO.parent / "shared" / "data" / "evalsets" / "llm_foundry" / "arc_easy.jsonl"
TASK_NAME = "bench_mc"


# ------------------------------------------------------------------------------ setup (parent)


def _model(args, work: Path) -> Path:
    """Train (briefly) and export the benchmark model; returns the HF directory."""
    import numpy as np
    import torch

    from tests.support.text_shards import build_shards
    from tests.support.tiny_checkpoint import write_checkpoint
    from training.data import split_train_val
    from training.export import export_hf
    from training.model import Llama, ModelConfig

    torch.set_num_threads(args.threads)
    shards, real = build_shards(work / "shards", vocab_size=args.vocab)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=args.vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      max_seq_len=args.seq_len)
    model = Llama(cfg)
    started = time.perf_counter()
    if args.train_steps:
        train, _ = split_train_val(str(shards), 128, 0.0)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
        rng = np.random.default_rng(0)
        for _ in range(args.train_steps):
            x, y = train.batch(rng.integers(0, len(train), 16))
            _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"model: {args.train_steps} steps on {'real' if real else 'generated'} text in "
              f"{time.perf_counter() - started:.0f} s, final loss {loss.item():.2f}", flush=True)
    model.eval()
    ckpt = write_checkpoint(work / "ckpt", model, shards / "tokenizer.json", step=args.train_steps)
    return export_hf(ckpt, work / "hf")


def _generated_task(path: Path, n: int) -> Path:
    """A fallback ICL file (4 choices, ARC-like lengths) when ../shared/data is absent."""
    import random

    from dataproc.synthetic.english import generated_documents

    rng = random.Random(0)
    words = " ".join(generated_documents(400, 0)).split()
    rows = []
    for i in range(n):
        q = " ".join(words[rng.randrange(len(words) - 30):][:rng.randint(8, 30)])
        choices = [" ".join(words[rng.randrange(len(words) - 8):][:rng.randint(1, 8)]) for _ in range(4)]
        rows.append({"query": f"Question: {q}?\nAnswer:", "choices": choices, "gold": rng.randrange(4)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _task_yaml(directory: Path, data: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{TASK_NAME}.yaml").write_text(
        f"task: {TASK_NAME}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{query}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{gold}}"\n'
        "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n")
    return directory


# ------------------------------------------------------------------------------ children


def _child_llmforge(args, work: Path) -> dict:
    import torch

    import evaluation.multiple_choice as mc

    torch.set_num_threads(args.threads)
    scoring = [0.0]
    if args.replicas == 0:  # in process: time the scorer's calls (model work only)
        call = mc.MCScorer.__call__

        def timed(self, table):
            t0 = time.perf_counter()
            try:
                return call(self, table)
            finally:
                scoring[0] += time.perf_counter() - t0

        mc.MCScorer.__call__ = timed
    results, rows = mc.evaluate_mc(str(work / "hf"), args.task, limit=args.limit, replicas=args.replicas,
                                   batch_tokens=args.batch_tokens)
    metrics = next(iter(results["results"].values()))
    return {"items": len(rows), "scoring_s": scoring[0] if args.replicas == 0 else None,
            "acc": metrics["acc"], "acc_norm": metrics["acc_norm"],
            "pred": [r["pred"] for r in rows], "pred_norm": [r["pred_norm"] for r in rows],
            "logprobs": [r["logprobs"] for r in rows]}


def _child_hf(args, work: Path) -> dict:
    import logging

    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    scoring = [0.0]
    call = HFLM._loglikelihood_tokens

    def timed(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return call(self, *a, **k)
        finally:
            scoring[0] += time.perf_counter() - t0

    HFLM._loglikelihood_tokens = timed
    batch = args.hf_batch if args.hf_batch == "auto" else int(args.hf_batch)
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={work / 'hf'},dtype=float32,add_bos_token=True", tasks=[TASK_NAME],
        task_manager=TaskManager(include_path=str(work / "tasks"), include_defaults=False), device="cpu",
        batch_size=batch, limit=args.limit, log_samples=True, verbosity="WARNING")
    samples = sorted(out["samples"][TASK_NAME], key=lambda s: s["doc_id"])
    lls = [[r[0] for r in s["filtered_resps"]] for s in samples]
    chars = [[len(c) for c in s["doc"]["choices"]] for s in samples]
    metrics = out["results"][TASK_NAME]
    return {"items": len(samples), "scoring_s": scoring[0], "acc": metrics["acc,none"],
            "acc_norm": metrics["acc_norm,none"], "pred": [_argmax(x) for x in lls],
            "pred_norm": [_argmax([v / n for v, n in zip(x, c)]) for x, c in zip(lls, chars)], "logprobs": lls}


def _argmax(values) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def _child(args) -> None:
    work = Path(args.work)
    result = _child_llmforge(args, work) if args.child == "llmforge" else _child_hf(args, work)
    (work / f"result-{args.tag}.json").write_text(json.dumps(result))


# ------------------------------------------------------------------------------ driver


def _run(args, work: Path, child: str, tag: str, extra: list[str]) -> dict:
    argv = [sys.executable, __file__, "--child", child, "--tag", tag, "--work", str(work), "--task", args.task,
            "--threads", str(args.threads), "--batch-tokens", str(args.batch_tokens)] + extra
    if args.limit:
        argv += ["--limit", str(args.limit)]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false",
           "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(REPO)}
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    e2e = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if out.returncode:
        raise SystemExit(f"{tag} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    result = json.loads((work / f"result-{tag}.json").read_text())
    result["e2e_s"] = e2e
    # CPU seconds of the subprocess (all its threads): steadier than wall time on a shared
    # machine. Ray's workers are not its children, so a Ray run shows none.
    result["e2e_cpu_s"] = None if tag.startswith("llmforge-r") else cpu
    return result


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default=None, help="llm-foundry ICL JSONL (query/choices/gold); default arc_easy")
    ap.add_argument("--limit", type=int, default=500, help="first N items (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf-batch-sizes", default="1,8,32", help="the harness's batch sizes to run (int or auto)")
    ap.add_argument("--replicas", type=int, default=2, help="also run llmforge on N Ray actors (0 = skip)")
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1, help="run every configuration this many times; best counts")
    ap.add_argument("--work", help="keep the model and results here (default: a temporary directory)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    ap.add_argument("--hf-batch", default="1", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.limit = args.limit or None
    if args.child:
        args.replicas = args.replicas if args.child == "llmforge" else 0
        return _child(args)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.task is None:
            args.task = str(DEFAULT_TASK if DEFAULT_TASK.exists() else _generated_task(work / "generated.jsonl", 500))
        if not (work / "hf" / "config.json").exists():
            _model(args, work)
        _task_yaml(work / "tasks", Path(args.task).resolve())
        configs = [("llmforge", "llmforge", ["--replicas", "0"], "llmforge eval mc (in process)")]
        if args.replicas:
            configs.append(("llmforge", f"llmforge-r{args.replicas}", ["--replicas", str(args.replicas)],
                            f"llmforge eval mc --replicas {args.replicas} (Ray)"))
        for b in [b.strip() for b in args.hf_batch_sizes.split(",") if b.strip()]:
            configs.append(("hf", f"hf-bs{b}", ["--hf-batch", b], f"harness hf, batch_size={b}"))
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for child, tag, extra, _label in configs:
                res = _run(args, work, child, tag, extra)
                scoring = f"scoring {res['scoring_s']:.2f} s, " if res["scoring_s"] else ""
                print(f"  {tag}: {res['items']} items, {scoring}end to end {res['e2e_s']:.2f} s", flush=True)
                if tag not in best:
                    best[tag] = res
                else:  # the best of each measure over the rounds
                    for key in ("scoring_s", "e2e_s", "e2e_cpu_s"):
                        if res[key] is not None:
                            best[tag][key] = min(res[key], best[tag][key])
        _report(args, configs, best)


def _report(args, configs, best: dict[str, dict]) -> None:
    import torch

    from training.model import ModelConfig, count_parameters

    cfg = ModelConfig(vocab_size=args.vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      max_seq_len=args.seq_len)
    ours = best["llmforge"]
    n = ours["items"]
    print(f"\nmodel: dim {args.dim}, {args.layers} layers, window {args.seq_len}, vocab {args.vocab}, "
          f"{count_parameters(cfg) / 1e6:.1f}M params, fp32; task {Path(args.task).name}, {n} items; "
          f"{args.threads} threads (torch {torch.__version__})")
    print(f"{'configuration':<40}{'scoring s':>10}{'items/s':>9}{'e2e s':>8}{'items/s':>9}{'e2e cpu s':>10}"
          f"{'acc':>8}{'acc_norm':>9}{'same pick':>10}{'max |dlp|':>10}")
    for _, tag, _, label in configs:
        r = best[tag]
        if r["items"] != n:
            raise SystemExit(f"{tag} scored {r['items']} items, llmforge {n}")
        same = sum(a == b and c == d for a, b, c, d in zip(r["pred"], ours["pred"], r["pred_norm"], ours["pred_norm"]))
        dlp = max(abs(x - y) for a, b in zip(r["logprobs"], ours["logprobs"]) for x, y in zip(a, b))
        sc = f"{r['scoring_s']:>10.2f}{n / r['scoring_s']:>9.1f}" if r["scoring_s"] else f"{'-':>10}{'-':>9}"
        cpu = f"{r['e2e_cpu_s']:>10.1f}" if r["e2e_cpu_s"] is not None else f"{'-':>10}"
        print(f"{label:<40}{sc}{r['e2e_s']:>8.2f}{n / r['e2e_s']:>9.1f}{cpu}{r['acc']:>8.4f}{r['acc_norm']:>9.4f}"
              f"{f'{same}/{n}':>10}{dlp:>10.1e}")
    hf = [tag for _, tag, _, _ in configs if tag.startswith("hf-")]
    if not hf:
        return
    best_scoring = min(hf, key=lambda t: best[t]["scoring_s"])
    best_e2e = min(hf, key=lambda t: best[t]["e2e_s"])
    print(f"\nllmforge (in process) / harness, scoring items/s: {best[best_scoring]['scoring_s'] / ours['scoring_s']:.2f}x "
          f"vs its best ({best_scoring}), "
          + ", ".join(f"{best[t]['scoring_s'] / ours['scoring_s']:.2f}x vs {t}" for t in hf if t != best_scoring))
    print(f"llmforge (in process) / harness, end-to-end items/s: {best[best_e2e]['e2e_s'] / ours['e2e_s']:.2f}x "
          f"vs its best ({best_e2e}), "
          + ", ".join(f"{best[t]['e2e_s'] / ours['e2e_s']:.2f}x vs {t}" for t in hf if t != best_e2e))
    best_cpu = min(hf, key=lambda t: best[t]["e2e_cpu_s"])
    print(f"llmforge (in process) / harness, end-to-end CPU seconds per item: "
          f"{best[best_cpu]['e2e_cpu_s'] / ours['e2e_cpu_s']:.2f}x vs its best ({best_cpu})")
    if args.replicas:
        r = best[f"llmforge-r{args.replicas}"]
        print(f"llmforge --replicas {args.replicas} / harness best, end to end: {best[best_e2e]['e2e_s'] / r['e2e_s']:.2f}x")
    same_acc = all(best[t]["acc"] == ours["acc"] and best[t]["acc_norm"] == ours["acc_norm"] for t in hf)
    print(f"accuracy identical to the harness: {'yes' if same_acc else 'NO'} (target: >= 2x items/s, same accuracy)")


if __name__ == "__main__":
    main()
