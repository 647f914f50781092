"""The data job's per-document half as a plain one-process Python loop (no Ray): the same
reader (`read_warc_file`), the same stages (`run_stages`) and the same Parquet sink
(`DocumentSink.write`) over the files one after the other. `bench_data.py` runs it next to
`llmforge data run` on the same input, so the ratio between the two is the job's overhead.

    .venv/bin/python infra/bench/plain_loop.py --config CFG.yaml --input DIR --output DIR

Prints one JSON line: documents in / kept and the seconds of each phase.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

START = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--input", required=True, help="a directory of .warc.gz files")
    ap.add_argument("--output", required=True)
    args = ap.parse_args()

    from dataproc.config import DataJobConfig
    from dataproc.documents.runner import run_stages
    from dataproc.outputs.ledger import OutputLedger
    from dataproc.outputs.sink import DocumentSink
    from dataproc.pipeline import output_fingerprint
    from dataproc.reading.datasource import read_warc_file
    from dataproc.reading.inputs import source_key
    from llmforge.common.config import load_config

    files = sorted(glob.glob(os.path.join(args.input, "*.warc.gz")))
    cfg = load_config(DataJobConfig, args.config, {"input.paths": files, "output.path": args.output})
    ledger = OutputLedger(cfg.output.path)
    ledger.claim(output_fingerprint(cfg))
    ledger.prepare([source_key(f) for f in files])
    sink = DocumentSink(ledger, cfg.stages.enabled(), cfg.output.write_dropped)
    config_json = cfg.stages.model_dump_json()
    imported = time.perf_counter()
    docs = kept = 0
    for f in files:
        for block in read_warc_file(f, cfg.input.warc, ledger, cfg.execution.docs_per_block):
            out = run_stages(block, config_json)
            docs += out.num_rows
            kept += out.column("drop_reason").null_count
            sink.write([out], None)
    done = time.perf_counter()
    print(json.dumps({"docs": docs, "kept": kept, "files": len(files), "import_s": round(imported - START, 3),
                      "loop_s": round(done - imported, 3)}))


if __name__ == "__main__":
    sys.exit(main())
