"""The peer run: datatrove's first half on the same WARC files (run with .venv-peer/bin/python).

WarcReader -> Trafilatura -> GopherRepetition -> GopherQuality -> C4 -> FineWeb -> JsonlWriter,
one datatrove task per input file, `--workers` processes. Prints one JSON line of counts.
"""
import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True, help="directory of .warc.gz files")
    ap.add_argument("--output", required=True)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    files = sorted(Path(args.input).glob("*.warc.gz"))
    start = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[
            WarcReader(args.input, glob_pattern="*.warc.gz"),
            Trafilatura(favour_precision=True, timeout=10.0),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            C4QualityFilter(),
            FineWebQualityFilter(),
            JsonlWriter(f"{args.output}/docs"),
        ],
        tasks=len(files),
        workers=args.workers,
        logging_dir=f"{args.output}/logs",
        skip_completed=False,
    ).run()
    wall = time.perf_counter() - start
    kept = sum(1 for p in Path(args.output, "docs").glob("*.jsonl.gz") for _ in __import__("gzip").open(p, "rt"))
    print(json.dumps({"peer": "datatrove", "wall_s": wall, "kept": kept}))


if __name__ == "__main__":
    main()
