"""`llmforge generate`: batched generation for a JSONL prompt file on Ray Data."""
from __future__ import annotations

import argparse

from llmforge.cli._args import add_config_args, add_model_arg, default_from, existing, load_with_overrides

HELP = "complete every prompt of a JSONL file with a model (Ray Data actors, KV-cache decoding)"
OPTIONS = "training.batch_generate:GenerateOptions"
SAMPLING = "training.generate:SamplingParams"

# flag -> (dotted options key, argparse type, help)
FLAGS = {
    "--temperature": ("sampling.temperature", float, "0 = greedy (" + default_from(f"{SAMPLING}.temperature") + ")"),
    "--max-new-tokens": ("sampling.max_new_tokens", int, default_from(f"{SAMPLING}.max_new_tokens")),
    "--top-p": ("sampling.top_p", float, "nucleus sampling (" + default_from(f"{SAMPLING}.top_p") + ")"),
    "--top-k": ("sampling.top_k", int, "keep the k most likely tokens (default: all)"),
    "--seed": ("sampling.seed", int, "with each row's prompt_index, seeds its sampling ("
               + default_from(f"{SAMPLING}.seed") + ")"),
    "--batch-size": ("batch_size", int, "prompts per model call (" + default_from(f"{OPTIONS}.batch_size") + ")"),
    "--concurrency": ("concurrency", int, "model actors (" + default_from(f"{OPTIONS}.concurrency") + ")"),
    "--system": ("system", str, "system turn before each plain-string prompt (default: none)"),
    "--device": ("device", str, "cpu, cuda, ... (" + default_from(f"{OPTIONS}.device") + ")"),
}


def cmd_generate(args) -> int:
    from training.batch_generate import GenerateOptions, run_generate, summary

    flags = [(key, getattr(args, flag[2:].replace("-", "_")), flag) for flag, (key, _, _) in FLAGS.items()]
    flags = [(key, value, f"{flag} {value}") for key, value, flag in flags if value is not None]
    if args.chat_template is not None:
        flags.append(("chat_template", args.chat_template, "--no-chat-template"))
    options = load_with_overrides(GenerateOptions, args, flags)
    existing(args.model, "--model")
    existing(args.data, "--data")
    results = run_generate(args.model, args.data, args.output, options, overwrite=args.overwrite)
    print(summary(results, args.output))
    return 0


def register(areas: argparse._SubParsersAction) -> None:
    p = areas.add_parser("generate", help=HELP, description=HELP + ". Each JSONL line needs 'prompt': a string "
                         "(one user turn in the chat template) or a list of {role, content} messages; other "
                         "fields are carried to the output. Writes OUTPUT/generations/*.parquet and "
                         "OUTPUT/results.json; a rerun with the same model, prompts and options reuses them.")
    add_model_arg(p)
    p.add_argument("--data", required=True, help="prompts, one JSON object per line")
    p.add_argument("--output", required=True, help="output directory")
    for flag, (_, type_, helptext) in FLAGS.items():
        p.add_argument(flag, type=type_, help=helptext)
    p.add_argument("--no-chat-template", dest="chat_template", action="store_const", const=False,
                   help="continue each prompt as plain text after <|endoftext|> (string prompts only)")
    p.add_argument("--overwrite", action="store_true", help="replace an output made from other inputs or options")
    add_config_args(p, "YAML of GenerateOptions (sampling, batch_size, concurrency, num_cpus, num_gpus, system, "
                    "chat_template, device); optional", "sampling.top_k=50", required=False)
    p.set_defaults(func=cmd_generate)
