"""`llmforge eval ppl`: perplexity and bits per byte on text, JSONL or token shards."""
from __future__ import annotations

import argparse

from llmforge.cli._args import add_model_arg, default_from, existing, given
from llmforge.cli.eval_mc import add_replica_args, replica_options

HELP = "perplexity and bits per byte (rolling windows: every token scored once) on text, JSONL or token shards"
FN = "evaluation.perplexity:evaluate_ppl"


def cmd_ppl(args) -> int:
    from evaluation.perplexity import format_table, run_ppl

    existing(args.model, "--model")
    existing(args.data, "--data")
    results = run_ppl(args.model, args.data, args.output,
                      **given(limit=args.limit, stride=args.stride, text_field=args.text_field, txt_mode=args.txt_mode),
                      **replica_options(args))
    print(format_table(results))
    t = results["timing"]
    print(f"in {t['seconds']:.1f}s ({t['tokens_per_second']} tokens/s) -> {args.output}")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("ppl", help=HELP, description=HELP + ". Each document follows <|endoftext|>, so its first "
                         "token is scored too. Writes OUTPUT/documents.parquet (one row per document) and "
                         "OUTPUT/results.json (bits_per_byte, byte/word/token perplexity).")
    add_model_arg(p)
    p.add_argument("--data", required=True, help=".txt/.raw (one document; see --txt-mode), .jsonl (a text field "
                   "per line), optionally .gz, or a token-shard directory (manifest.json)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--limit", type=int, help="score only the first N documents (default: all)")
    p.add_argument("--stride", type=int, help="new tokens per window of a long document (default: the model's "
                   "window; smaller gives each window more context, at more cost)")
    p.add_argument("--text-field", help="the JSONL field with the text (" + default_from(f"{FN}.text_field") + ")")
    p.add_argument("--txt-mode", choices=("file", "paragraphs", "lines"),
                   help="a .txt file is one document, one per blank-line separated block, or one per line ("
                   + default_from(f"{FN}.txt_mode") + ")")
    add_replica_args(p, FN)
    p.set_defaults(func=cmd_ppl)
