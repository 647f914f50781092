"""`llmforge eval report`: Markdown + PNG charts over one or several evaluation outputs."""
from __future__ import annotations

import argparse

HELP = "Markdown report with tables and PNG charts for one or several evaluation outputs side by side"


def cmd_report(args) -> int:
    from evaluation.report import write_report

    written = write_report(args.runs, args.output, labels=args.labels, charts=not args.no_charts)
    print(f"report of {len(written['runs'])} run(s), {len(written['tasks'])} task(s) -> {written['report']}")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("report", help=HELP, description=HELP + ": every numeric metric under each "
                         "results.json's \"results\" (task -> metric), with <metric>_stderr as error bars. "
                         "Writes OUTPUT/report.md, OUTPUT/<task>.png and OUTPUT/metrics.csv.")
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR", help="evaluation outputs (directories with "
                   "results.json, or the files), in the order to show them, e.g. base sft dpo")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="a name per run (default: the directory names)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--no-charts", action="store_true", help="tables only")
    p.set_defaults(func=cmd_report)
