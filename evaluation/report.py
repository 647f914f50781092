"""A Markdown report with tables and PNG charts for one evaluation output or several side by
side (e.g. base -> SFT -> DPO): `write_report(["runs/eval-base", "runs/eval-sft"], "report/")`.

Input: each run is a directory holding `results.json` (or the file itself), as every
`llmforge eval` verb writes it:

    {
      "results": {                         # one entry per task
        "<task>": {
          "<metric>": 0.512,               # any number: acc, acc_norm, bits_per_byte, win_rate ...
          "<metric>_stderr": 0.012,        # optional: its standard error (error bar, "±")
          ...
        },
        ...
      },
      "model": "runs/sft",                 # optional: what was evaluated (shown in the runs table)
      "n": 1000,                           # optional top-level numbers and strings are shown too
      ...                                  # anything else (configs, counts, lists) is ignored
    }

lm-evaluation-harness's own keys ("acc,none" with "acc_stderr,none") are read the same way:
the part after the comma (the filter) is kept in the metric's name when it is not "none".
Booleans, strings, lists and nested objects inside a task are skipped; a metric that is NaN or
missing in a run shows as "—" and has no bar.

Output: `report.md` (a runs table, then per task a table of metrics x runs, "value ± stderr")
and one PNG per task (`<task>.png`: a panel per metric, a bar per run with its error bar),
plus `metrics.csv` (run, task, metric, value, stderr) for anything else.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from llmforge.common.errors import UserError

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
STDERR_SUFFIX = "_stderr"
MAX_PANELS_PER_ROW = 4


@dataclass
class Run:
    label: str
    path: str
    info: dict[str, Any]  # top-level scalars of results.json (model, n, ...)
    # task -> metric -> (value, stderr or None)
    metrics: dict[str, dict[str, tuple[float, float | None]]] = field(default_factory=dict)


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def task_metrics(task: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """{metric: (value, stderr)} from one task's entry (see the module docstring)."""
    values: dict[str, float] = {}
    errors: dict[str, float] = {}
    for key, raw in task.items():
        value = _number(raw)
        if value is None:
            continue
        name, _, filt = str(key).partition(",")
        is_err = name.endswith(STDERR_SUFFIX)
        if is_err:
            name = name[: -len(STDERR_SUFFIX)]
        if filt and filt != "none":
            name = f"{name},{filt}"
        (errors if is_err else values)[name] = value
    return {m: (v, errors.get(m)) for m, v in values.items()}


def load_run(path: str, label: str | None = None) -> Run:
    p = Path(path)
    file = p / RESULTS_FILE if p.is_dir() else p
    if not file.exists():
        raise UserError(f"--runs {path}: no {RESULTS_FILE}" + (" in this directory" if p.is_dir() else ""))
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"--runs {file}: not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise UserError(f"--runs {file}: expected an object with a \"results\" object (task -> metrics)")
    run = Run(label or (p.name if p.is_dir() else p.parent.name) or str(p), str(path),
              {k: v for k, v in data.items() if k != "results" and (isinstance(v, str) or _number(v) is not None)})
    for task, entry in data["results"].items():
        if isinstance(entry, dict):
            metrics = task_metrics(entry)
            if metrics:
                run.metrics[str(task)] = metrics
    if not run.metrics:
        raise UserError(f"--runs {file}: no numeric metric under \"results\"")
    return run


def load_runs(paths: Sequence[str], labels: Sequence[str] | None = None) -> list[Run]:
    if not paths:
        raise UserError("--runs: give at least one evaluation output")
    if labels and len(labels) != len(paths):
        raise UserError(f"--labels: {len(labels)} labels for {len(paths)} runs")
    runs = [load_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    seen: dict[str, int] = {}
    for run in runs:  # two runs named alike (…/a/eval, …/b/eval): number them
        if sum(r.label == run.label for r in runs) > 1:
            seen[run.label] = seen.get(run.label, 0) + 1
            run.label = f"{run.label} ({seen[run.label]})"
    return runs


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}" if abs(value) >= 1 else f"{value:.4f}"
    return f"{value:.3e}"


def _cell(entry: tuple[float, float | None] | None) -> str:
    if entry is None:
        return "—"
    value, err = entry
    return _fmt(value) + (f" ± {_fmt(err)}" if err is not None and not math.isnan(err) else "")


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", task).strip("_") or "task"


def tasks_of(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys(t for r in runs for t in r.metrics))


def metrics_of(runs: Sequence[Run], task: str) -> list[str]:
    return list(dict.fromkeys(m for r in runs for m in r.metrics.get(task, {})))


def chart(runs: Sequence[Run], task: str, path: Path) -> None:
    """One panel per metric of `task`, a bar per run, error bars from the stderr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metrics_of(runs, task)
    cols = min(MAX_PANELS_PER_ROW, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    width = max(3.2, 0.6 * len(runs) + 1.6)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.2 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, metric in enumerate(metrics):
        ax = axes[k // cols][k % cols]
        xs, heights, errs, cs = [], [], [], []
        for i, run in enumerate(runs):
            value, err = run.metrics.get(task, {}).get(metric, (math.nan, None))
            xs.append(i)
            heights.append(value)
            errs.append(math.nan if err is None else err)  # no bar where no stderr
            cs.append(colors[i % len(colors)])
        ax.bar(xs, [0.0 if math.isnan(h) else h for h in heights], yerr=errs, color=cs, capsize=4,
               edgecolor="black", linewidth=0.5)
        for x, h in zip(xs, heights):
            if math.isnan(h):
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels([r.label for r in runs], rotation=30 if len(runs) > 3 else 0, ha="right"
                           if len(runs) > 3 else "center", fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(metrics), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(task)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def render_markdown(runs: Sequence[Run], charts: dict[str, str]) -> str:
    lines = ["# Evaluation report", ""]
    info_keys = list(dict.fromkeys(k for r in runs for k in r.info))
    lines += ["| run | path | " + " | ".join(_escape(k) for k in info_keys) + " |",
              "|---|---|" + "---|" * len(info_keys)]
    for r in runs:
        cells = [_escape(str(_fmt(r.info[k]) if _number(r.info.get(k)) is not None else r.info.get(k, "—")))
                 for k in info_keys]
        lines.append(f"| {_escape(r.label)} | `{_escape(r.path)}` | " + " | ".join(cells) + " |")
    lines.append("")
    for task in tasks_of(runs):
        lines += [f"## {task}", "", "| metric | " + " | ".join(_escape(r.label) for r in runs) + " |",
                  "|---|" + "---:|" * len(runs)]
        for metric in metrics_of(runs, task):
            lines.append(f"| {_escape(metric)} | "
                         + " | ".join(_cell(r.metrics.get(task, {}).get(metric)) for r in runs) + " |")
        lines.append("")
        if task in charts:
            lines += [f"![{task}]({charts[task]})", ""]
    lines += ["Values ± one standard error where the run recorded one (`<metric>_stderr`).", ""]
    return "\n".join(lines)


def write_report(run_paths: Sequence[str], output_dir: str, labels: Sequence[str] | None = None,
                 charts: bool = True) -> dict[str, Any]:
    """Read the runs, write report.md, one PNG per task and metrics.csv; returns what was written."""
    runs = load_runs(run_paths, labels)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    if charts:
        used: set[str] = set()
        for task in tasks_of(runs):
            name = _slug(task)
            while name + ".png" in used:
                name += "_"
            used.add(name + ".png")
            tmp = out / f".{name}.png.tmp"
            chart(runs, task, tmp)
            tmp.replace(out / f"{name}.png")
            names[task] = f"{name}.png"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run", "task", "metric", "value", "stderr"])
    for r in runs:
        for task, metrics in r.metrics.items():
            for metric, (value, err) in metrics.items():
                writer.writerow([r.label, task, metric, value, "" if err is None else err])
    (out / "metrics.csv").write_text(buf.getvalue())
    tmp = out / f".{REPORT_FILE}.tmp"
    tmp.write_text(render_markdown(runs, names))
    tmp.replace(out / REPORT_FILE)
    return {"report": str(out / REPORT_FILE), "charts": [str(out / n) for n in names.values()],
            "runs": [r.label for r in runs], "tasks": tasks_of(runs)}
