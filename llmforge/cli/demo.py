"""`llmforge demo`: parses the flags; `llmforge.demo` does the work."""
from __future__ import annotations

import argparse
import inspect
import sys

from llmforge.cli._args import given

HELP = ("the whole product in one command: sample WARCs -> data pipeline -> token shards -> pretraining -> "
        "SFT -> reward model -> DPO, GRPO -> evaluation report")


def cmd_demo(args) -> int:
    from llmforge import demo

    if args.list_steps:
        for step in demo.demo_steps():
            print(f"{step.name:10s} {step.title}")
        return 0
    try:
        demo.run_demo(**given(workdir=args.workdir, files=args.files, docs=args.docs, data_config=args.config,
                              train_config=args.train_config, until=args.until, input=args.input or None),
                      skip_train=args.skip_train, use_shared=not args.no_shared_data,
                      align_standalone=not args.align_on_ray)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return 130
    return 0


def register(areas: argparse._SubParsersAction) -> None:
    from llmforge import demo  # stdlib imports only: its defaults show in --help

    defaults = {name: p.default for name, p in inspect.signature(demo.run_demo).parameters.items()}
    p = areas.add_parser("demo", help=HELP, description=HELP + ". Steps: " + ", ".join(demo.STEP_NAMES) +
                         ". A rerun skips finished steps (a done marker with a fingerprint of the step's config "
                         "and inputs in each step's directory); each step logs to WORKDIR/logs/STEP.log.")
    p.add_argument("--workdir", help=f"where sample data and outputs go (default: {defaults['workdir']})")
    p.add_argument("--files", type=int, help=f"number of sample WARC files (default: {defaults['files']})")
    p.add_argument("--docs", type=int, help=f"article pages per file (default: {defaults['docs']})")
    p.add_argument("--input", action="append", metavar="PATH_OR_GLOB",
                   help="real WARC files to add to the sample ones (repeatable; default: the WARCs of "
                   "../shared/data/warc when present)")
    p.add_argument("--no-shared-data", action="store_true",
                   help="use generated data only, even when ../shared/data is present")
    p.add_argument("--config", help=f"data job YAML (default: {demo.DATA_CONFIG} shipped in llmforge/configs/)")
    p.add_argument("--train-config", help=f"pretraining YAML (default: {demo.TRAIN_CONFIG} shipped in llmforge/configs/)")
    p.add_argument("--until", choices=demo.STEP_NAMES, metavar="STEP",
                   help="run the steps up to and including STEP (" + ", ".join(demo.STEP_NAMES) + ")")
    p.add_argument("--skip-train", action="store_true", help="only the data pipeline (= --until data)")
    p.add_argument("--align-on-ray", action="store_true",
                   help="SFT, reward model and DPO on Ray Train workers (default: one process each, faster on a laptop)")
    p.add_argument("--list-steps", action="store_true", help="list the steps and exit")
    p.set_defaults(func=cmd_demo)
