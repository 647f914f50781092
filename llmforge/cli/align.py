"""`llmforge align sft|reward|dpo --model PATH --data PATH --output DIR`: post-training on the
pretraining machinery (DeepSpeed ZeRO under Ray Train, or --standalone)."""
from __future__ import annotations

import argparse

from llmforge.cli._args import key_value, load_with_overrides, run_flags

HELP = "post-training: SFT, reward model, DPO, PPO, GRPO; synthetic instructions and AI-feedback labels"

VERBS = {
    "sft": "supervised fine-tuning on Alpaca / chat-messages / ShareGPT data (loss on assistant tokens)",
    "reward": "reward model (Bradley-Terry) on preference pairs; reports held-out pairwise accuracy",
    "dpo": "direct preference optimisation (sigmoid / IPO / robust) with cached reference log-probs",
}


def cmd_align(args) -> int:
    from alignment.job import config_class, run_align

    cfg = load_with_overrides(config_class(args.verb), args, run_flags(args))  # validated before any work
    run_align(args.verb, cfg, standalone=args.standalone)
    return 0


def register(areas: argparse._SubParsersAction) -> None:
    align = areas.add_parser("align", help=HELP, description=HELP)
    verbs = align.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, helptext in VERBS.items():
        p = verbs.add_parser(name, help=helptext, description=helptext + ". Without --config the defaults "
                             "fine-tune for one epoch; the output directory is a run directory that `llmforge "
                             "train export` and `llmforge train sample` accept, and a rerun resumes it.")
        p.add_argument("--model", required=True, help="starting weights: an llmforge checkpoint or run directory, "
                       "or a Hugging Face Llama directory" + (" (a causal LM or a reward model)" if name == "reward" else ""))
        p.add_argument("--data", required=True, help="the data file (.json/.jsonl[.gz]); format detected from its "
                       "first row" + (" (Alpaca, chat messages, ShareGPT)" if name == "sft"
                                      else " ({prompt, chosen, rejected}, ShareGPT pairs, HH-RLHF transcripts)"))
        p.add_argument("--output", required=True, help="run directory (checkpoints, metrics, results.json)")
        p.add_argument("--config", help="YAML with any of: optim, train, scaling, run, data, lora"
                       + {"sft": ", packing", "reward": ", margin, center_coeff",
                          "dpo": ", beta, loss_type, label_smoothing, reference, reference_mode"}[name])
        p.add_argument("--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                       help="override a config key (YAML value; repeatable), e.g. --set lora.enabled=true")
        p.add_argument("--standalone", action="store_true", help="one process, no Ray Train (debugging, one GPU box)")
        p.set_defaults(func=cmd_align)
    # Verbs with other flags: online RL (ppo, grpo) and the synthetic-data makers.
    from llmforge.cli import align_rl, align_synth

    align_rl.register_verbs(verbs)
    align_synth.register_verbs(verbs)
