"""`llmforge train ablate`: does the data matter? Equal models, equal token budgets, one shard
directory each, several seeds; held-out bits per byte with error bars.

Each shard directory is judged on its own held-out split (its last `data.val_fraction`, or
`base.data.val_shards` for all), in bits per byte (`training.scaling.runner`), so directories
tokenized with different tokenizers compare: nats per token would not. For a strictly common
yardstick, tokenize one held-out text with each directory's tokenizer and pass it as that
directory's val_shards, or score the runs' checkpoints with `llmforge eval` on one text.
The model's shape and the token budget are the same everywhere; the embedding follows each
directory's vocabulary.

    <output>/runs/<name>/      each run
    <output>/runs.parquet      one row per run (val_loss, val_bpb, seed, label, ...)
    <output>/ablation.parquet  one row per shard directory: mean, std and standard error over seeds
    <output>/results.json      both tables and the config
    <output>/bpb.png           the bar chart (mean +- std over seeds)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmforge.common.errors import UserError
from training.scaling.config import AblateConfig, ablate_runs
from training.scaling.runner import run_all, write_json_atomic, write_parquet_atomic

RESULTS = "results.json"
RUNS_TABLE = "runs.parquet"
TABLE = "ablation.parquet"
CHART = "bpb.png"


def summarize(rows: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    """One row per label: bits/byte and val loss over the seeds that finished."""
    table = []
    for label in labels:
        mine = [r for r in rows if r["label"] == label]
        ok = [r for r in mine if r["status"] == "done" and r["val_bpb"] is not None]
        bpb = np.array([r["val_bpb"] for r in ok], dtype=float)
        loss = np.array([r["val_loss"] for r in ok], dtype=float)
        n = len(ok)
        std = float(bpb.std(ddof=1)) if n > 1 else float("nan")
        table.append({
            "label": label, "shards": mine[0]["shards"] if mine else None, "seeds": n, "failed": len(mine) - n,
            "bpb_mean": float(bpb.mean()) if n else float("nan"), "bpb_std": std,
            "bpb_stderr": std / math.sqrt(n) if n > 1 else float("nan"),
            "val_loss_mean": float(loss.mean()) if n else float("nan"),
            "val_loss_std": float(loss.std(ddof=1)) if n > 1 else float("nan"),
            "bytes_per_token": ok[0]["val_bytes_per_token"] if ok else None,
            "params": mine[0]["params"] if mine else None, "tokens": mine[0]["tokens"] if mine else None,
        })
    return table


def format_table(table: list[dict[str, Any]]) -> str:
    width = max(12, *(len(t["label"]) for t in table))
    head = f"{'shards':<{width}} {'seeds':>5} {'bits/byte':>16} {'val_loss':>16} {'bytes/token':>11}"
    lines = [head, "-" * len(head)]
    for t in table:
        bpt = f"{t['bytes_per_token']:.3f}" if t["bytes_per_token"] else "-"
        lines.append(f"{t['label']:<{width}} {t['seeds']:>5} {t['bpb_mean']:>8.4f} ± {t['bpb_std']:<5.4f} "
                     f"{t['val_loss_mean']:>8.4f} ± {t['val_loss_std']:<5.4f} {bpt:>11}")
    return "\n".join(lines)


def plot_ablation(table: list[dict[str, Any]], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(table) + 2), 4))
    x = np.arange(len(table))
    means = [t["bpb_mean"] for t in table]
    errs = [0.0 if math.isnan(t["bpb_std"]) else t["bpb_std"] for t in table]
    bars = ax.bar(x, means, yerr=errs, capsize=6, color="tab:blue", alpha=0.8)
    for bar, t, err in zip(bars, table, errs):
        ax.annotate(f"{t['bpb_mean']:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height() + err),
                    xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, [t["label"] for t in table], rotation=15 if len(table) > 3 else 0)
    ax.set_ylabel("held-out bits per byte (mean ± std over seeds)")
    lo = min(m - e for m, e in zip(means, errs))
    ax.set_ylim(max(0.0, lo - 0.15 * (max(means) - lo + 1e-9) - 0.05), None)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run_ablate(cfg: AblateConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    specs, _ = ablate_runs(cfg)  # every run checked before any starts
    missing = sorted({s.shards for s in specs if not s.config.data.tokenizer})
    if missing:
        raise UserError("bits per byte need each shard directory's tokenizer: no tokenizer.json next to "
                        + ", ".join(missing) + " (set base.data.tokenizer if all share one)")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    labels = cfg.shard_labels()

    def write(rows):
        table = summarize(rows, labels)
        write_parquet_atomic(out / RUNS_TABLE, rows)
        write_parquet_atomic(out / TABLE, table)
        write_json_atomic(out / RESULTS, {"kind": "ablate", "config": cfg.model_dump(mode="json"),
                                          "table": table, "runs": rows})
        return table

    rows = run_all(specs, cfg, "ablate", "total", log, on_progress=write)
    table = write(rows)
    spec = specs[0]
    title = (f"{cfg.model.dim}x{cfg.model.n_layers} model ({spec.params_non_embedding / 1e6:.2f}M non-embedding), "
             f"{spec.tokens:,} tokens, {cfg.seeds} seeds")
    plot_ablation(table, out / CHART, title)
    log(format_table(table))
    log(f"ablate: table {out / TABLE}, {out / RESULTS}; chart {out / CHART}")
    return {"table": table, "runs": rows, "failed": [r for r in rows if r["status"] != "done"]}
