"""`llmforge eval judge`: pairwise win rate of model a over model b by a judge, both orders,
raw and length-controlled (AlpacaEval 2.0's GLM)."""
from __future__ import annotations

import argparse

from llmforge.cli._args import default_from, existing

HELP = "pairwise judge win rate of model a over model b (both orders; raw and length-controlled)"
JUDGE = "evaluation.judge:make_judge"
GEN = "training.batch_generate:GenerateOptions"
SAMPLING = "training.generate:SamplingParams"


def cmd_judge(args) -> int:
    from evaluation.judge import run_judge, summary
    from llmforge.cli._args import given
    from llmforge.common.errors import UserError

    if args.answers_a or args.answers_b:
        if args.model_a or args.model_b or args.prompts:
            raise UserError("give either --answers-a/--answers-b or --model-a/--model-b/--prompts, not both")
        existing([p for p in (args.answers_a, args.answers_b) if p], "--answers-a/--answers-b")
    else:
        existing([p for p in (args.model_a, args.model_b, args.prompts) if p], "--model-a/--model-b/--prompts")
    options = None
    if args.model_a:
        from training.batch_generate import GenerateOptions
        from training.generate import SamplingParams

        sampling = SamplingParams(**given(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                          seed=args.seed))
        options = GenerateOptions(sampling=sampling, **given(batch_size=args.batch_size,
                                                             concurrency=args.concurrency, system=args.system,
                                                             device=args.device))
    judge_options = given(model=args.judge_model, api_key_env=args.judge_api_key_env, retries=args.judge_retries,
                          timeout=args.judge_timeout, concurrency=args.judge_concurrency, device=args.device,
                          batch_size=args.judge_batch_size)
    record = run_judge(args.output, args.judge, answers_a=args.answers_a, answers_b=args.answers_b,
                       model_a=args.model_a, model_b=args.model_b, prompts=args.prompts,
                       generate_options=options, overwrite=args.overwrite, bootstrap=args.bootstrap or 0,
                       judge_options=judge_options)
    print(summary(record, args.output))
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("judge", help=HELP, description=HELP + ". Each prompt is judged twice (model a's answer "
                         "shown first, then second): agreeing verdicts win or lose, disagreeing ones tie. Writes "
                         "OUTPUT/results.json (win_rate, lc_win_rate with _stderr, counts, the judge) and "
                         "OUTPUT/items.parquet (both verdicts per prompt).")
    src = p.add_argument_group("answers (either files or models)")
    src.add_argument("--answers-a", help="model a's answers: JSONL or Parquet with prompt + completion (or "
                     "output/answer/response), or an `llmforge generate` output directory")
    src.add_argument("--answers-b", help="model b's (the baseline's) answers to the same prompts")
    src.add_argument("--model-a", help="generate model a's answers (llmforge checkpoint/run dir or HF directory)")
    src.add_argument("--model-b", help="generate the baseline's answers")
    src.add_argument("--prompts", help="JSONL prompts for --model-a/--model-b (as `llmforge generate --data`)")
    p.add_argument("--judge", required=True, metavar="SPEC", help="reward:PATH (a reward model), lm:PATH (a "
                   "causal LM scoring \"A\" vs \"B\"), or http:URL / an http(s):// URL (OpenAI-compatible "
                   "chat completions)")
    p.add_argument("--judge-model", help="the model name sent to an HTTP judge (default: \"default\")")
    p.add_argument("--judge-api-key-env", help="environment variable holding the HTTP judge's API key ("
                   + default_from(f"{JUDGE}.api_key_env") + "; unset: no Authorization header)")
    p.add_argument("--judge-retries", type=int, help="HTTP retries with exponential backoff ("
                   + default_from(f"{JUDGE}.retries") + ")")
    p.add_argument("--judge-timeout", type=float, help="seconds per HTTP request ("
                   + default_from(f"{JUDGE}.timeout") + ")")
    p.add_argument("--judge-concurrency", type=int, help="HTTP requests in flight ("
                   + default_from(f"{JUDGE}.concurrency") + ")")
    p.add_argument("--judge-batch-size", type=int, help="sequences per forward of a local judge ("
                   + default_from(f"{JUDGE}.batch_size") + ")")
    p.add_argument("--bootstrap", type=int, help="standard error of the LC win rate from K bootstrap refits "
                   "instead of the delta method")
    p.add_argument("--output", required=True, help="output directory")
    gen = p.add_argument_group("generation (with --model-a/--model-b)")
    gen.add_argument("--max-new-tokens", type=int, help=default_from(f"{SAMPLING}.max_new_tokens"))
    gen.add_argument("--temperature", type=float, help="0 = greedy (" + default_from(f"{SAMPLING}.temperature") + ")")
    gen.add_argument("--seed", type=int, help=default_from(f"{SAMPLING}.seed"))
    gen.add_argument("--system", help="system turn before each plain-string prompt")
    gen.add_argument("--batch-size", type=int, help="prompts per model call (" + default_from(f"{GEN}.batch_size") + ")")
    gen.add_argument("--concurrency", type=int, help="model actors (" + default_from(f"{GEN}.concurrency") + ")")
    gen.add_argument("--device", help="cpu, cuda, ... for generation and a local judge (default: cpu)")
    gen.add_argument("--overwrite", action="store_true", help="regenerate answers made from other inputs")
    p.set_defaults(func=cmd_judge)
