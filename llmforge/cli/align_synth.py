"""`llmforge align self-instruct|label`: synthetic SFT data and AI-feedback preference labels."""
from __future__ import annotations

import argparse

from llmforge.cli._args import add_config_args, add_model_arg, default_from, existing, load_with_overrides

SELF_INSTRUCT_HELP = ("self-instruct synthetic SFT data (Stanford Alpaca recipe): new instruction/input/output "
                      "triples from seed tasks, filtered by Alpaca's heuristics and ROUGE-L < 0.7 to the pool")
LABEL_HELP = ("AI-feedback preference pairs: sample responses per prompt with the policy, a judge (reward model "
              "or LM) picks chosen vs rejected")
SI = "alignment.self_instruct:SelfInstructConfig"
LB = "evaluation.ai_feedback:LabelConfig"
SAMPLING = "training.generate:SamplingParams"


def _flags(args, table: dict[str, tuple[str, type, str]]) -> list[tuple[str, object, str]]:
    out = []
    for flag, (key, _, _) in table.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            out.append((key, value, f"{flag} {value}"))
    return out


def _common(p: argparse.ArgumentParser, table: dict[str, tuple[str, type, str]]) -> None:
    for flag, (_, type_, helptext) in table.items():
        p.add_argument(flag, type=type_, help=helptext)
    p.add_argument("--in-process", dest="ray", action="store_const", const=False,
                   help="generate in this process instead of Ray actors (small runs, debugging)")
    p.add_argument("--overwrite", action="store_true", help="replace an output made from other inputs or options")


SELF_INSTRUCT_FLAGS = {
    "--seed-tasks": ("seed_tasks", str, "seed tasks JSONL (Alpaca's seed_tasks.jsonl: id, name, instruction, "
                     "instances[{input, output}], is_classification; or Alpaca rows)"),
    "--num-instructions": ("num_instructions", int, "machine tasks to make (" + default_from(f"{SI}.num_instructions")
                           + ")"),
    "--temperature": ("generation.sampling.temperature", float, "sampling temperature (default: 1.0)"),
    "--max-new-tokens": ("generation.sampling.max_new_tokens", int, "tokens per reply (default: 1024)"),
    "--seed": ("seed", int, "draws the example tasks and seeds sampling (" + default_from(f"{SI}.seed") + ")"),
    "--device": ("generation.device", str, "cpu, cuda, ... (default: cpu)"),
}

LABEL_FLAGS = {
    "--judge": ("judge", str, "reward:PATH (a reward model scores every response), lm:PATH (a causal LM "
                "compares pairs in both positions) or http:URL"),
    "--samples": ("samples", int, "responses sampled per prompt; more than 2: best vs worst ("
                  + default_from(f"{LB}.samples") + ")"),
    "--temperature": ("generation.sampling.temperature", float, "sampling temperature (default: 1.0)"),
    "--max-new-tokens": ("generation.sampling.max_new_tokens", int, "tokens per response (default: 256)"),
    "--seed": ("generation.sampling.seed", int, "with each sample's index, seeds its sampling ("
               + default_from(f"{SAMPLING}.seed") + ")"),
    "--device": ("generation.device", str, "cpu, cuda, ... for the policy and a local judge (default: cpu)"),
}


def cmd_self_instruct(args) -> int:
    from alignment.self_instruct import SelfInstructConfig, run_self_instruct, summary

    flags = _flags(args, SELF_INSTRUCT_FLAGS)
    if args.ray is not None:
        flags.append(("ray", False, "--in-process"))
    config = load_with_overrides(SelfInstructConfig, args, flags)
    existing(args.model, "--model")
    existing(config.seed_tasks, "--seed-tasks")
    record = run_self_instruct(args.model, args.output, config, overwrite=args.overwrite)
    print(summary(record, args.output))
    return 0


def cmd_label(args) -> int:
    from evaluation.ai_feedback import LabelConfig, run_label, summary

    flags = _flags(args, LABEL_FLAGS)
    if args.ray is not None:
        flags.append(("ray", False, "--in-process"))
    config = load_with_overrides(LabelConfig, args, flags)
    existing(args.model, "--model")
    existing(args.data, "--data")
    if config.judge and config.judge.partition(":")[0] in ("reward", "lm"):
        existing(config.judge.partition(":")[2], "--judge")
    record = run_label(args.model, args.data, args.output, config=config, overwrite=args.overwrite)
    print(summary(record, args.output))
    return 0


def register_verbs(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("self-instruct", help=SELF_INSTRUCT_HELP, description=SELF_INSTRUCT_HELP + ". Writes "
                         "OUTPUT/instructions.json (Alpaca JSON that `llmforge align sft --data` reads) and "
                         "OUTPUT/results.json (every dropped candidate counted by reason); a killed run resumes, "
                         "a finished one with the same model, seeds and options is reused.")
    add_model_arg(p)
    p.add_argument("--output", required=True, help="output directory")
    _common(p, SELF_INSTRUCT_FLAGS)
    add_config_args(p, "YAML of SelfInstructConfig (seed_tasks, num_instructions, num_prompt_instructions, "
                    "num_prompt_machine, request_batch_size, similarity_threshold, max_requests, preamble, seed, "
                    "generation, ray); optional", "request_batch_size=10", required=False)
    p.set_defaults(func=cmd_self_instruct)

    p = verbs.add_parser("label", help=LABEL_HELP, description=LABEL_HELP + ". Each JSONL line of --data needs "
                         "'prompt' (a string or {role, content} messages) and may have 'id'. Writes "
                         "OUTPUT/pairs.jsonl ({id, prompt, chosen, rejected, scores}: `llmforge align reward|dpo "
                         "--data` reads it) and OUTPUT/results.json (prompts dropped, by reason: ties, "
                         "position-inconsistent verdicts, identical or empty responses, prompts too long).")
    add_model_arg(p)
    p.add_argument("--data", required=True, help="prompts, one JSON object per line")
    p.add_argument("--output", required=True, help="output directory")
    _common(p, LABEL_FLAGS)
    add_config_args(p, "YAML of LabelConfig (judge, samples, generation, judge_batch_size, ray); optional",
                    "generation.sampling.top_p=0.9", required=False)
    p.set_defaults(func=cmd_label)
