"""`llmforge align ppo|grpo`: online RL on Ray actor groups (alignment.rl_driver)."""
from __future__ import annotations

import argparse

from llmforge.cli._args import add_config_args, existing, load_with_overrides, run_flags

VERBS = {
    "grpo": "GRPO: G samples per prompt, group-normalised advantages, clipped objective (DAPO clip-higher, "
            "Dr. GRPO options), verifiable or learned rewards",
    "ppo": "PPO against a reward model: per-token KL penalty, GAE, clipped policy and value losses, critic "
           "initialised from the reward model",
}


def cmd_rl(args) -> int:
    from alignment.rl_driver import config_class, run_rl

    flags = run_flags(args)
    if args.reward is not None:
        flags.append(("reward.function", args.reward, f"--reward {args.reward}"))
    if args.reward_model is not None:
        existing(args.reward_model, "--reward-model")
        flags.append(("reward.model", args.reward_model, f"--reward-model {args.reward_model}"))
    cfg = load_with_overrides(config_class(args.verb), args, flags)  # validated before any work
    run_rl(args.verb, cfg)
    return 0


def register_verbs(verbs: argparse._SubParsersAction) -> None:
    for name, helptext in VERBS.items():
        p = verbs.add_parser(name, help=helptext, description=helptext + ". A driver process orchestrates Ray "
                             "actors (policy trainers with DeepSpeed, rollout, reference, reward"
                             + (", critic" if name == "ppo" else "") + ") in one placement group. The output "
                             "directory is a run directory that `llmforge train export|sample` and --model accept; "
                             "a rerun resumes it.")
        p.add_argument("--model", required=True, help="starting policy: an llmforge checkpoint or run directory, or "
                       "a Hugging Face Llama directory (usually an SFT model)")
        p.add_argument("--data", required=True, help="prompts JSONL: 'prompt' (string or messages) or 'context' / "
                       "'question' / 'instruction'; other fields (e.g. 'answer') reach the reward function")
        p.add_argument("--output", required=True, help="run directory (checkpoints, metrics.jsonl, rl.png, results.json)")
        reward = p.add_mutually_exclusive_group(required=False)
        reward.add_argument("--reward", metavar="math|MODULE:FUNCTION", help="a rule-based reward: 'math' compares "
                            "the completion's final '#### N' with the row's 'answer'; MODULE:FUNCTION is called as "
                            "f(completion, row) -> float")
        reward.add_argument("--reward-model", metavar="PATH", help="a reward model (llmforge align reward run or HF "
                            "LlamaForSequenceClassification) on the policy's tokenizer")
        add_config_args(p, "YAML with any of: optim, train, scaling, run, data, rollout, reward, placement, kl_coef"
                        + (", group_size, advantage_scale, eps_low, eps_high, loss_aggregation"
                           if name == "grpo" else ", gamma, lam, cliprange, cliprange_value, vf_coef, critic"),
                        "train.max_steps=100", required=False)
        p.set_defaults(func=cmd_rl)
