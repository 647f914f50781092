"""`llmforge <area> <verb>`: the one entry point, also used by `ray job submit ... -- llmforge ...`.

Parser: argparse, with `--config FILE` plus `--set KEY=VALUE` overrides applied by
`llmforge.common.config.load_config`, not jsonargparse/tyro/typer. The libraries that read the
pydantic models (jsonargparse, tyro) must import them to build the parser, and the models import
pyarrow/numpy/torch, which `llmforge --help` must not; their override syntax is not the `--set`
our README and job commands use. typer/click would only own the verb tree, a few lines here.

Layout: one module per area (`data.py`, `train.py`, `demo.py`, `generate.py`), each with `HELP` and
`register(areas)`; a new area (align, eval) is one module plus its name in `AREAS`.
Handlers import their packages lazily: `llmforge --help` starts neither torch nor Ray. Flags
a user leaves out are None, so the options model's or the called function's default applies.

Errors: a `llmforge.common.errors.UserError` (bad config, input or flag) prints `error: ...`
and exits 2; anything else is a bug and propagates with its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from llmforge.common.errors import UserError
from llmforge.common.gc_policy import freeze_at_exit

AREAS = ("data", "train", "align", "generate", "eval", "scaling", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmforge", description="Common Crawl -> trained, aligned, evaluated LLM on Ray."
    )
    areas = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    for name in AREAS:
        importlib.import_module(f"{__name__}.{name}").register(areas)
    return parser


def main(argv: list[str] | None = None) -> int:
    freeze_at_exit()  # a job's exit then skips walking every object its imports made
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
