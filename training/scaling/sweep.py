"""`llmforge train sweep`: a grid of small pretraining runs for a scaling-law fit.

    <output>/runs/<name>/        each run (metrics.jsonl, loss.png, its final checkpoint)
    <output>/runs.parquet        one row per run: N (params, params_non_embedding, n = the
    <output>/results.json        law's N), D (tokens), FLOPs (6 N D, and flops_model from the
                                 model's FLOPs per token), final val_loss, val_bpb, status

Rerunning the same command trains only what is not finished; `llmforge scaling fit --runs
<output>` fits the law to the table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from training.scaling.config import SweepConfig, sweep_runs
from training.scaling.runner import run_all, write_json_atomic, write_parquet_atomic

RESULTS = "results.json"
RUNS_TABLE = "runs.parquet"


def run_sweep(cfg: SweepConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    specs, skipped = sweep_runs(cfg)  # every run checked before any starts
    for why in skipped:
        log(f"sweep: skipped {why}")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    unique_epochs = {}
    for spec in specs:
        from training.data import split_train_val

        d = spec.config.data
        key = (d.shards, d.seq_len, d.val_fraction, d.val_shards)
        if key not in unique_epochs:
            train, _ = split_train_val(d.shards, d.seq_len, d.val_fraction, d.val_shards)
            unique_epochs[key] = len(train) * d.seq_len
        if spec.tokens > unique_epochs[key]:
            log(f"sweep: note: {spec.name} trains {spec.tokens:,} tokens on {unique_epochs[key]:,} training tokens "
                f"({spec.tokens / unique_epochs[key]:.1f} epochs); repeated data bends the law")

    def write(rows):
        write_parquet_atomic(out / RUNS_TABLE, rows)
        write_json_atomic(out / RESULTS, {"kind": "sweep", "params": cfg.params, "config": cfg.model_dump(mode="json"),
                                          "skipped": skipped, "runs": rows})

    rows = run_all(specs, cfg, "sweep", cfg.params, log, on_progress=write)
    write(rows)
    failed = [r for r in rows if r["status"] != "done"]
    log(format_table(rows))
    log(f"sweep: {len(rows) - len(failed)} of {len(rows)} runs done; table {out / RUNS_TABLE}, {out / RESULTS}")
    return {"runs": rows, "skipped": skipped, "failed": failed}


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'run':<40} {'N':>10} {'D':>12} {'6ND':>10} {'val_loss':>9} {'bits/B':>7}"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["flops"], r["n"])):
        loss = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "failed"
        bpb = f"{r['val_bpb']:.3f}" if r.get("val_bpb") is not None else "-"
        lines.append(f"{r['name'][:40]:<40} {r['n']:>10,} {r['tokens']:>12,} {r['flops']:>10.3g} {loss:>9} {bpb:>7}")
    return "\n".join(lines)
