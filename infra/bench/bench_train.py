"""Benchmark: llmforge's training loop (1 worker, DeepSpeed ZeRO-2, standalone) vs a plain
PyTorch AdamW loop, same model, batch, sequence length, threads and data.

Both train the same `Llama` on the same packed windows for `--steps` optimizer steps after
`--warmup` untimed ones, each in a fresh subprocess (DeepSpeed's process group would
otherwise leak into the peer). Tokens/s counts only the timed steps; MFU uses the same
6N + attention FLOPs per token and the measured fp32 matmul peak of this CPU (or the
datasheet peak on a GPU).

    .venv/bin/python infra/bench/bench_train.py [--preset tiny|124m] [--seq-len 256] [--micro 8]
                                                [--steps 30] [--threads 2] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _shards(work: Path, vocab: int) -> str:
    from dataproc.tokenization.text_files import shards_from_text_files
    from tests.support.text_shards import text_paths

    paths, _ = text_paths(work)
    out = work / "shards"
    shards_from_text_files(paths, str(out), vocab_size=vocab)
    return str(out)


def _plain_pytorch(args, shards: str) -> dict:
    """The peer: what a person writes without DeepSpeed."""
    import torch

    from training.data import GlobalOrder, split_train_val
    from training.loop import param_groups
    from training.model import Llama, ModelConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(preset=args.preset, vocab_size=args.vocab, max_seq_len=args.seq_len)
    model = Llama(cfg)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-4, betas=(0.9, 0.95))
    train, _ = split_train_val(shards, args.seq_len, 0.0)
    order = GlobalOrder(len(train), 0)
    done, t0 = 0, None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            t0 = time.perf_counter()
        x, y = train.batch(order.windows(step * args.micro, (step + 1) * args.micro))
        _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done += step >= args.warmup
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tokens_per_s": done * args.micro * args.seq_len / seconds, "loss": loss.item()}


def _llmforge(args, shards: str, work: Path) -> dict:
    from llmforge.common.config import validate_config
    from training.config import PretrainConfig
    from training.trainer import read_metrics, run_pretrain

    cfg = validate_config(PretrainConfig, {
        "model": {"preset": args.preset, "max_seq_len": args.seq_len},
        "data": {"shards": shards, "seq_len": args.seq_len, "val_fraction": 0.0},
        "optim": {"lr": 3e-4, "warmup_steps": 0, "schedule": "constant"},
        "train": {"max_steps": args.warmup + args.steps, "micro_batch_size": args.micro, "zero_stage": 2,
                  "precision": "fp32", "threads": args.threads, "log_every": args.warmup,
                  "eval_every": 0, "checkpoint_every": 0},
        "run": {"storage_path": str(work / "runs"), "name": "bench"},
    })
    # The final checkpoint is written after the last step, outside the timed window.
    run_pretrain(cfg, standalone=True, log=lambda *_: None)
    rows = read_metrics(work / "runs" / "bench" / "metrics.jsonl")
    timed = [r for r in rows if r["step"] > args.warmup]
    seconds = timed[-1]["time"] - rows[0]["time"]
    return {"seconds": seconds, "tokens_per_s": args.steps * args.micro * args.seq_len / seconds,
            "loss": timed[-1]["loss"], "mfu_reported": timed[-1]["mfu"]}


def _child(args) -> None:
    work = Path(args.work)
    shards = str(work / "shards")
    result = _plain_pytorch(args, shards) if args.child == "plain" else _llmforge(args, shards, work / args.child)
    print("RESULT " + json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternate the two this many times; best counts")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)

    from training.flops import peak_flops
    from training.model import ModelConfig, count_parameters, flops_per_token

    import torch

    torch.set_num_threads(args.threads)
    cfg = ModelConfig(preset=args.preset, vocab_size=args.vocab, max_seq_len=args.seq_len)
    fpt = flops_per_token(cfg, args.seq_len)
    peak, source = peak_flops(torch.device("cpu"), "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _shards(work, args.vocab)
        best: dict[str, dict] = {}
        for r in range(args.rounds):
            for who in ("plain", "llmforge"):
                argv = [sys.executable, __file__, "--child", who if who == "plain" else f"llmforge{r}",
                        "--work", str(work)] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                                                if k not in ("child", "work", "rounds")]
                # The llmforge child finds DeepSpeed's op cache itself (training.ds_ops).
                out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
                line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
                if out.returncode or not line:
                    raise SystemExit(f"{who} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
                res = json.loads(line[-1][7:])
                key = "plain" if who == "plain" else "llmforge"
                if key not in best or res["tokens_per_s"] > best[key]["tokens_per_s"]:
                    best[key] = res
    print(f"\nmodel {args.preset}: {count_parameters(cfg) / 1e6:.2f}M params, seq {args.seq_len}, micro batch "
          f"{args.micro}, {args.threads} threads, fp32; peak {peak / 1e9:.0f} GFLOP/s ({source})")
    print(f"{'loop':<28}{'tokens/s':>12}{'MFU':>8}{'loss':>9}")
    for key, label in (("plain", "plain PyTorch AdamW"), ("llmforge", "llmforge (DeepSpeed ZeRO-2)")):
        r = best[key]
        print(f"{label:<28}{r['tokens_per_s']:>12,.0f}{fpt * r['tokens_per_s'] / peak:>8.3f}{r['loss']:>9.3f}")
    ratio = best["llmforge"]["tokens_per_s"] / best["plain"]["tokens_per_s"]
    print(f"llmforge / plain PyTorch: {ratio:.2f}x tokens/s (target >= 0.95x)")


if __name__ == "__main__":
    main()
