"""`llmforge eval <verb>`: evaluation of any model (an llmforge checkpoint/run dir or a Hugging
Face directory). Each verb lives in its own module `llmforge/cli/eval_<verb>.py` with
`HELP` and `register(verbs)`; adding a verb is one module plus its name in `VERBS`."""
from __future__ import annotations

import argparse
import importlib

HELP = "evaluation: perplexity / bits per byte, multiple choice, contamination, judge win rates, reports"
VERBS: tuple[str, ...] = ("mc", "ppl", "contamination", "judge", "report")


def register(areas: argparse._SubParsersAction) -> None:
    area = areas.add_parser("eval", help=HELP, description=HELP)
    verbs = area.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in VERBS:
        importlib.import_module(f"llmforge.cli.eval_{name}").register(verbs)
