"""`llmforge demo`: parses the flags; `llmforge.demo` does the work."""
from __future__ import annotations

import argparse
import inspect

from llmforge.cli._args import given

HELP = "sample WARCs -> data pipeline -> token shards -> pretraining -> HF export"


def cmd_demo(args) -> int:
    from llmforge.demo import run_demo

    run_demo(**given(workdir=args.workdir, files=args.files, docs=args.docs, data_config=args.config,
                     train_config=args.train_config), skip_train=args.skip_train)
    return 0


def register(areas: argparse._SubParsersAction) -> None:
    from llmforge import demo  # stdlib imports only: its defaults show in --help

    defaults = {name: p.default for name, p in inspect.signature(demo.run_demo).parameters.items()}
    p = areas.add_parser("demo", help=HELP, description=HELP)
    p.add_argument("--workdir", help=f"where sample data and outputs go (default: {defaults['workdir']})")
    p.add_argument("--files", type=int, help=f"number of sample WARC files (default: {defaults['files']})")
    p.add_argument("--docs", type=int, help=f"article pages per file (default: {defaults['docs']})")
    p.add_argument("--config", help=f"data job YAML (default: {demo.DATA_CONFIG} shipped in llmforge/configs/)")
    p.add_argument("--train-config", help=f"pretraining YAML (default: {demo.TRAIN_CONFIG} shipped in llmforge/configs/)")
    p.add_argument("--skip-train", action="store_true", help="only the data pipeline")
    p.set_defaults(func=cmd_demo)
