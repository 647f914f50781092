"""`llmforge train sweep` and `llmforge train ablate`: many small pretraining runs as Ray tasks
(`training/scaling/`), registered into the `train` area by `register_verbs`."""
from __future__ import annotations

import argparse

from llmforge.cli._args import add_config_args, default_from, load_with_overrides

ABLATE = "training.scaling.config:AblateConfig"


def cmd_sweep(args) -> int:
    from training.scaling.config import SweepConfig
    from training.scaling.sweep import run_sweep

    flags = [("shards", args.shards, f"--shards {args.shards}"), ("output", args.output, f"--output {args.output}")]
    cfg = load_with_overrides(SweepConfig, args, [f for f in flags if f[1] is not None])
    result = run_sweep(cfg)  # every run's config is checked before any starts
    return 1 if result["failed"] else 0


def cmd_ablate(args) -> int:
    from training.scaling.ablate import run_ablate
    from training.scaling.config import AblateConfig

    flags = [("shards", args.shards, "--shards " + " ".join(args.shards or [])),
             ("output", args.output, f"--output {args.output}"), ("seeds", args.seeds, f"--seeds {args.seeds}"),
             ("tokens", args.tokens, f"--tokens {args.tokens}"), ("labels", args.labels, "--labels")]
    cfg = load_with_overrides(AblateConfig, args, [f for f in flags if f[1] is not None])
    result = run_ablate(cfg)
    return 1 if result["failed"] else 0


def register_verbs(verbs: argparse._SubParsersAction) -> None:
    helptext = ("a grid of small pretraining runs (model sizes x token budgets, isoFLOP groups) as Ray tasks; "
                "records final validation loss, N, D and FLOPs in runs.parquet / results.json (resumable)")
    p = verbs.add_parser("sweep", help="scaling-law sweep: " + helptext.split(";")[0], description=helptext)
    p.add_argument("--shards", help="token shard directory (or `shards:` in the config)")
    p.add_argument("--output", help="output directory (or `output:` in the config)")
    add_config_args(p, "YAML: models, tokens, flops, points, seeds, params, base (model/data/optim/train), "
                    "cpus_per_run (default: a 5-model ladder at the isoFLOP budgets DEFAULT_FLOPS of "
                    "training/scaling/config.py)",
                    "flops=[1e12,3e12]", required=False)
    p.set_defaults(func=cmd_sweep)

    helptext = ("data ablation: the same model at the same token budget on each shard directory, several seeds; "
                "held-out bits per byte with error bars (ablation.parquet, results.json, bpb.png)")
    p = verbs.add_parser("ablate", help="data ablation: equal models and tokens per shard directory, bits/byte",
                         description=helptext)
    p.add_argument("--shards", nargs="+", metavar="DIR", help="two or more token shard directories")
    p.add_argument("--output", help="output directory")
    p.add_argument("--seeds", type=int, help="runs per directory (" + default_from(f"{ABLATE}.seeds") + ")")
    p.add_argument("--tokens", type=float, help="training tokens per run (" + default_from(f"{ABLATE}.tokens") + ")")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="a name per shard directory (default: their paths)")
    add_config_args(p, "YAML: model (dim, n_layers, n_heads), tokens, seeds, base (model/data/optim/train), "
                    "cpus_per_run", "base.optim.lr=2e-3", required=False)
    p.set_defaults(func=cmd_ablate)
