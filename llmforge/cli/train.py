"""`llmforge train ...`: pretraining on token shards, export to Hugging Face, sampling."""
from __future__ import annotations

import argparse
from pathlib import Path

from llmforge.cli._args import add_config_args, default_from, existing, from_flags, given, load_with_overrides
from llmforge.common.errors import UserError

HELP = "pretraining on token shards (DeepSpeed ZeRO under Ray Train); scaling sweeps and data ablations"
# `train sample`'s own choice, not a repeat: SamplingParams.temperature defaults to 1.0 (the
# model's raw distribution); a person reading samples from a small model wants a little less.
SAMPLE_TEMPERATURE = 0.8


def _train_config(args):
    from training.config import PretrainConfig

    return load_with_overrides(PretrainConfig, args)


def cmd_pretrain(args) -> int:
    from training.trainer import run_pretrain

    cfg = _train_config(args)  # validated before any work starts
    run_pretrain(cfg, standalone=args.standalone)
    return 0


def cmd_validate(args) -> int:
    import yaml

    from training.config import preflight
    from training.model import count_parameters, flops_per_token

    cfg = preflight(_train_config(args))
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    print(f"# {count_parameters(cfg.model):,} parameters, "
          f"{flops_per_token(cfg.model, cfg.data.seq_len):,.0f} training FLOPs per token")
    return 0


def _checkpoint_dir(path: str) -> Path:
    """A checkpoint directory, or a run directory standing for its latest checkpoint."""
    from training.checkpoint import META, latest_checkpoint

    ckpt = Path(path)
    if not (ckpt / META).exists():
        latest = latest_checkpoint(ckpt)
        if latest is None:
            raise UserError(f"{ckpt}: neither a checkpoint ({META} missing) nor a run directory with checkpoints")
        ckpt = latest
    return ckpt


def cmd_export(args) -> int:
    from training.export import export_hf

    ckpt = _checkpoint_dir(args.checkpoint)
    existing(args.tokenizer, "--tokenizer")
    if Path(args.out).exists() and not args.overwrite:
        raise UserError(f"--out {args.out} exists; pass --overwrite to replace it")
    out = export_hf(ckpt, args.out, tokenizer_path=args.tokenizer, overwrite=args.overwrite)
    print(f"wrote Hugging Face LlamaForCausalLM to {out}")
    return 0


def cmd_sample(args) -> int:
    from training.generate import SamplingParams, complete_from_checkpoint

    params = from_flags(SamplingParams, args, {"max_new_tokens": "--max-new-tokens", "temperature": "--temperature",
                                               "top_k": "--top-k", "top_p": "--top-p", "seed": "--seed"})
    ckpt = _checkpoint_dir(args.checkpoint)
    existing(args.tokenizer, "--tokenizer")
    texts = complete_from_checkpoint(ckpt, args.prompt, params, args.tokenizer, **given(device=args.device))
    for prompt, text in zip(args.prompt, texts):
        print(f"--- {prompt!r}\n{prompt}{text}")
    return 0


def register(areas: argparse._SubParsersAction) -> None:
    train = areas.add_parser("train", help=HELP, description=HELP)
    verbs = train.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, handler, helptext in (
        ("pretrain", cmd_pretrain, "train (resumes from the run's latest checkpoint)"),
        ("validate", cmd_validate, "check a config against its shards; print it with defaults"),
    ):
        p = verbs.add_parser(name, help=helptext, description=helptext)
        add_config_args(p, "YAML with model, data, optim, train, scaling, run", "train.max_steps=100")
        if name == "pretrain":
            p.add_argument("--standalone", action="store_true",
                           help="one process, no Ray (debugging, a single GPU box)")
        p.set_defaults(func=handler)

    p = verbs.add_parser("export", help="checkpoint -> Hugging Face LlamaForCausalLM (config.json + safetensors)")
    p.add_argument("checkpoint", help="a checkpoint directory (llmforge.json + deepspeed/) or a run directory "
                   "(its latest checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tokenizer", help="tokenizer.json to include (default: the one in the checkpoint, if any)")
    p.set_defaults(func=cmd_export)

    helptext = "continue prompts with a checkpoint (KV-cache decoding)"
    p = verbs.add_parser("sample", help=helptext, description=helptext)
    p.add_argument("checkpoint", help="a checkpoint directory or a run directory (its latest checkpoint)")
    p.add_argument("--prompt", action="append", required=True, help="text to continue; repeat for a batch")
    p.add_argument("--max-new-tokens", type=int, help=default_from("training.generate:SamplingParams.max_new_tokens"))
    p.add_argument("--temperature", type=float, default=SAMPLE_TEMPERATURE, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, help="keep the k most likely tokens (default: all)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (" + default_from("training.generate:SamplingParams.top_p") + ")")
    p.add_argument("--seed", type=int, help=default_from("training.generate:SamplingParams.seed"))
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (" + default_from("training.export:load_model.device") + ")")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the one in the checkpoint)")
    p.set_defaults(func=cmd_sample)

    from llmforge.cli.train_scaling import register_verbs as register_scaling_verbs

    register_scaling_verbs(verbs)  # sweep, ablate
