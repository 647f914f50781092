"""`llmforge eval mc`: multiple choice by log-likelihood on a task file (HF schema or llm-foundry ICL)."""
from __future__ import annotations

import argparse

from llmforge.cli._args import add_model_arg, default_from, existing, given

HELP = "multiple choice by log-likelihood: acc, acc_norm (by characters), acc_bytes, with standard errors"
FN = "evaluation.multiple_choice:evaluate_mc"


def add_replica_args(p: argparse.ArgumentParser, fn: str) -> None:
    """Where the model runs: --replicas/--local, --device, --num-cpus, --num-gpus, --batch-tokens."""
    p.add_argument("--replicas", type=int, help="Ray Data actors, one model each; 0 = in this process, no Ray ("
                   + default_from(f"{fn}.replicas") + ")")
    p.add_argument("--local", dest="replicas", action="store_const", const=0, help="same as --replicas 0")
    p.add_argument("--batch-tokens", type=int, help="rows x longest row per forward pass ("
                   + default_from(f"{fn}.batch_tokens") + ")")
    p.add_argument("--device", help="cpu, cuda, ... (" + default_from(f"{fn}.device") + ")")
    p.add_argument("--num-cpus", type=float, help="CPUs per replica (" + default_from(f"{fn}.num_cpus") + ")")
    p.add_argument("--num-gpus", type=float, help="GPUs per replica (default: 1 on cuda, else 0)")


def replica_options(args) -> dict:
    return given(replicas=args.replicas, batch_tokens=args.batch_tokens, device=args.device,
                 num_cpus=args.num_cpus, num_gpus=args.num_gpus)


def cmd_mc(args) -> int:
    from evaluation.multiple_choice import format_table, run_mc

    existing(args.model, "--model")
    existing(args.task, "--task")
    results = run_mc(args.model, args.task, args.output,
                     **given(shots=args.shots, seed=args.seed, limit=args.limit), **replica_options(args))
    print(format_table(results))
    t = results["timing"]
    print(f"{t['items']:,} items ({t['requests']:,} requests) in {t['seconds']:.1f}s "
          f"({t['items_per_second']} items/s) -> {args.output}")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("mc", help=HELP, description=HELP + ". The file's format is detected from its first row: "
                         "HF schema (ARC, HellaSwag, PIQA, WinoGrande, OpenBookQA, MMLU) or llm-foundry ICL "
                         "(query/choices/gold, context_options/continuation/gold, LAMBADA context/continuation). "
                         "Writes OUTPUT/predictions.parquet (one row per item) and OUTPUT/results.json.")
    add_model_arg(p)
    p.add_argument("--task", required=True, help="the task file (JSONL)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--shots", type=int, help="few-shot examples per item (" + default_from(f"{FN}.shots") + ")")
    p.add_argument("--seed", type=int, help="seed of the few-shot draw (" + default_from(f"{FN}.seed") + ")")
    p.add_argument("--limit", type=int, help="score only the first N items (default: all)")
    add_replica_args(p, FN)
    p.set_defaults(func=cmd_mc)
