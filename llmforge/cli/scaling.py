"""`llmforge scaling fit`: the Chinchilla law fitted to a sweep's runs (`training/scaling/`)."""
from __future__ import annotations

import argparse

from llmforge.cli._args import existing

HELP = "scaling laws: fit L(N, D) = E + A/N^alpha + B/D^beta to a sweep, compute-optimal N and D"


def cmd_fit(args) -> int:
    from training.scaling.fit import fit_runs

    existing(args.runs, "--runs")
    kwargs = {"starts": None} if args.all_starts else {}
    fit_runs(args.runs, args.output, budget=args.budget, params=args.params, holdout=args.holdout or (), **kwargs)
    return 0


def register(areas: argparse._SubParsersAction) -> None:
    area = areas.add_parser("scaling", help=HELP, description=HELP)
    verbs = area.add_subparsers(dest="verb", required=True, metavar="VERB")
    helptext = ("fit L(N, D) in Besiroglu et al.'s form (log-sum-exp, Huber delta 1e-3 on log L, L-BFGS from a grid "
                "of starts), isoFLOP minima, the compute-optimal N and D for --budget; writes results.json and fit.png")
    p = verbs.add_parser("fit", help="fit the scaling law to a sweep's runs", description=helptext)
    p.add_argument("--runs", required=True, help="a `llmforge train sweep` output directory, or its runs.parquet / "
                   "results.json (or a .jsonl/.csv with n or params, tokens, val_loss)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--budget", type=float, help="training FLOPs C to allocate: prints N_opt and D_opt (C = 6ND)")
    p.add_argument("--params", choices=("total", "non_embedding"),
                   help="which parameter count is N (default: the sweep's `params`)")
    p.add_argument("--holdout", action="append", metavar="NAME",
                   help="a run or model name to leave out of the fit and predict (repeatable)")
    p.add_argument("--all-starts", action="store_true",
                   help="L-BFGS from all 4,500 grid points, as the paper: minutes instead of seconds (default: "
                   "from the best-scoring few, DEFAULT_STARTS in training/scaling/law.py)")
    p.set_defaults(func=cmd_fit)
