"""`llmforge eval contamination`: is a benchmark in a model's training data? The black-box
permutation test of Oren et al. 2023 on the model, and n-gram overlap with the training
documents (token shards or Parquet), either or both."""
from __future__ import annotations

import argparse

from llmforge.cli._args import default_from, existing

HELP = "test-set contamination: Oren et al. permutation test (--model) and 13-gram overlap (--shards/--documents)"
OPTIONS = "evaluation.contamination:ContaminationOptions"

# flag -> (ContaminationOptions field, argparse type, help)
FLAGS = {
    "--num-shards": ("shards", int, "permutation test: shards of the examples (" + default_from(f"{OPTIONS}.shards") + ")"),
    "--permutations": ("permutations", int, "permutation test: random orders per shard ("
                       + default_from(f"{OPTIONS}.permutations") + ")"),
    "--seed": ("seed", int, "permutation test: seed of the orders (" + default_from(f"{OPTIONS}.seed") + ")"),
    "--alpha": ("alpha", float, "permutation test: flag when p < alpha (" + default_from(f"{OPTIONS}.alpha") + ")"),
    "--ngram": ("ngram", int, "overlap: words per n-gram (" + default_from(f"{OPTIONS}.ngram") + ")"),
    "--min-words": ("min_words", int, "overlap: an eval text shorter than --ngram words but this long counts whole ("
                    + default_from(f"{OPTIONS}.min_words") + ")"),
    "--text-column": ("text_column", str, "overlap: the text column of --documents ("
                      + default_from(f"{OPTIONS}.text_column") + ")"),
    "--device": ("device", str, "auto, cpu, cuda, ... (" + default_from(f"{OPTIONS}.device") + ")"),
}


def cmd_contamination(args) -> int:
    from evaluation.contamination import ContaminationOptions, run_contamination
    from llmforge.common.errors import UserError

    given = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in FLAGS.items()}
    given["normalization"] = args.normalization
    options = ContaminationOptions(**{k: v for k, v in given.items() if v is not None})
    for flag, value in (("--num-shards", options.shards), ("--permutations", options.permutations),
                        ("--ngram", options.ngram), ("--min-words", options.min_words)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be positive")
    if options.min_words > options.ngram:
        raise UserError(f"--min-words {options.min_words} > --ngram {options.ngram}")
    existing(args.task, "--task")
    existing(args.model, "--model")
    existing(args.shards, "--shards")
    existing(args.documents, "--documents")
    run_contamination(args.task, args.output, model=args.model, shards_dir=args.shards, documents_dir=args.documents,
                      tokenizer=args.tokenizer, options=options)
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("contamination", help=HELP, description=HELP + ". Writes OUTPUT/results.json and, with "
                         "--shards or --documents, OUTPUT/overlap.parquet (one row per eval item).")
    p.add_argument("--task", required=True, help="the eval set: a task JSONL (HF schema or llm-foundry ICL), JSONL "
                   "with 'text', or a text file (one item per line)")
    p.add_argument("--model", help="an llmforge checkpoint, run directory or Hugging Face directory: runs the "
                   "permutation test")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--shards", help="token shard directory of the training data: n-gram overlap with its documents")
    src.add_argument("--documents", help="directory of Parquet documents (a data run's curated/): n-gram overlap")
    p.add_argument("--tokenizer", help="tokenizer.json the shards were written with (default: in or beside --shards)")
    p.add_argument("--output", required=True, help="output directory")
    for flag, (_, type_, helptext) in FLAGS.items():
        p.add_argument(flag, type=type_, help=helptext)
    p.add_argument("--normalization", choices=("words", "harness"),
                   help="overlap: words (lower-case letter/digit runs) or harness (lm-evaluation-harness's janitor) ("
                   + default_from(f"{OPTIONS}.normalization") + ")")
    p.set_defaults(func=cmd_contamination)
