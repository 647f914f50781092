"""`llmforge scaling fit`: the law fitted to a sweep's table, isoFLOP minima, the
compute-optimal N and D for a budget, and a plot.

    fit_runs("<sweep output>" | runs.parquet | results.json, "<output>", budget=1e18)
    -> <output>/results.json (law, fit quality, per-run predictions, held-out runs with their
       errors, isoFLOP minima, the optimal allocation) and <output>/fit.png

Runs named in `holdout` (by run or model name) are left out of the fit and predicted: the
error on a larger held-out run is the honest measure of what the fit extrapolates.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llmforge.common.errors import UserError
from training.scaling.law import (DEFAULT_STARTS, FLOPS_PER_PARAM_TOKEN, LawFit, ScalingLaw, fit_law,
                                  isoflop_minima, power_law_exponent)

RESULTS = "results.json"
PLOT = "fit.png"
PARAM_COLUMNS = {"total": "params", "non_embedding": "params_non_embedding"}


def load_runs(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a sweep: its output directory, runs.parquet, results.json, or a JSONL/CSV table
    with at least n (or params), tokens and val_loss."""
    p = Path(path)
    if p.is_dir():
        for name in ("runs.parquet", "results.json"):
            if (p / name).exists():
                return load_runs(p / name)
        raise UserError(f"--runs {p}: no runs.parquet or results.json in it (a `llmforge train sweep` output?)")
    if not p.exists():
        raise UserError(f"--runs {p}: no such file or directory")
    try:
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p).to_pylist()
        if p.suffix == ".json":
            data = json.loads(p.read_text())
            return data["runs"] if isinstance(data, dict) else data
        if p.suffix == ".jsonl":
            return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        if p.suffix == ".csv":
            import csv

            with p.open() as f:
                return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (ValueError, KeyError, OSError) as err:
        raise UserError(f"--runs {p}: cannot read it ({err})") from None
    raise UserError(f"--runs {p}: expected a directory, .parquet, .json, .jsonl or .csv")


def _number(v: str):
    try:
        return float(v) if v not in ("", None) else None
    except ValueError:
        return v


def _usable(rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        if r.get("status", "done") != "done":
            continue
        try:
            n, d, loss = float(r[column]), float(r["tokens"]), float(r["val_loss"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"run {r.get('name', i)}: needs numeric {column}, tokens and val_loss") from None
        if n > 0 and d > 0 and loss > 0 and math.isfinite(loss):
            out.append({**r, "_n": n, "_d": d, "_loss": loss})
    return out


def fit_runs(runs: str | Path, output: str | Path, budget: float | None = None, params: str | None = None,
             holdout: Sequence[str] = (), starts: int | None = DEFAULT_STARTS,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit, write results.json and fit.png to `output`, print the summary; returns the results.
    `params`: "total" / "non_embedding" (None: the table's `n`, i.e. the sweep's choice)."""
    rows = load_runs(runs)
    column = PARAM_COLUMNS[params] if params else ("n" if rows and "n" in rows[0] else "params")
    usable = _usable(rows, column)
    held = [r for r in usable if r.get("name") in holdout or r.get("model") in holdout]
    unknown = [h for h in holdout if not any(h in (r.get("name"), r.get("model")) for r in rows)]
    if unknown:
        raise UserError(f"--holdout {', '.join(unknown)}: no run or model of that name in {runs}")
    train = [r for r in usable if r not in held]
    if len(train) < 5:
        raise UserError(f"{runs}: {len(train)} finished runs to fit (after the held-out ones); the law's 5 "
                        f"parameters need at least 5, better 20+ over several sizes and budgets")
    n, d, loss = (np.array([r[k] for r in train]) for k in ("_n", "_d", "_loss"))
    fit = fit_law(n, d, loss, starts=starts)
    law = fit.law
    s = law.alpha + law.beta
    points = [{"name": r.get("name"), "model": r.get("model"), "n": r["_n"], "tokens": r["_d"],
               "flops": FLOPS_PER_PARAM_TOKEN * r["_n"] * r["_d"], "val_loss": r["_loss"],
               "predicted": float(law.loss(r["_n"], r["_d"]))} for r in train]
    held_out = []
    for r in held:
        pred = float(law.loss(r["_n"], r["_d"]))
        held_out.append({"name": r.get("name"), "model": r.get("model"), "n": r["_n"], "tokens": r["_d"],
                         "flops": FLOPS_PER_PARAM_TOKEN * r["_n"] * r["_d"], "val_loss": r["_loss"],
                         "predicted": pred, "error": pred - r["_loss"], "relative_error": pred / r["_loss"] - 1})
    groups = [r for r in train if r.get("group_flops") not in (None, "") and not _nan(r.get("group_flops"))]
    minima = isoflop_minima([float(r["group_flops"]) for r in groups], [r["_n"] for r in groups],
                            [r["_loss"] for r in groups]) if groups else []
    inside = [m for m in minima if m.n_opt is not None and m.inside]
    approach2 = power_law_exponent([m.flops for m in inside], [m.n_opt for m in inside])
    n_is = params or (rows[0].get("n_is") if column == "n" else None) or "total"
    results: dict[str, Any] = {
        "source": str(runs), "params": n_is, "law": law.to_dict(), "fit": fit.to_dict(),
        # N_opt ~ C^a, D_opt ~ C^b from the law (Hoffmann et al. eq. 4)
        "exponents": {"a": law.beta / s, "b": law.alpha / s,
                      "isoflop_a": approach2[0] if approach2 else None},
        "isoflop": [m.to_dict() for m in minima], "holdout": held_out, "points": points,
    }
    budgets = sorted({*(m.flops for m in minima), *([budget] if budget else [])})
    results["optimal"] = [_optimal(law, c) for c in budgets]
    if budget:
        results["budget"] = _optimal(law, budget)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    from training.scaling.runner import write_json_atomic

    write_json_atomic(out / RESULTS, results)
    from training.scaling.plots import plot_fit

    plot_fit(law, train, minima, out / PLOT, held=held, budget=budget)
    log(summary(results, fit))
    log(f"scaling: {out / RESULTS}, plot {out / PLOT}")
    return results


def _nan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _optimal(law: ScalingLaw, c: float) -> dict[str, float]:
    n_opt, d_opt = law.compute_optimal(c)
    return {"flops": float(c), "n_opt": float(n_opt), "d_opt": float(d_opt),
            "tokens_per_param": float(d_opt / n_opt), "loss": float(law.loss(n_opt, d_opt))}


def summary(results: dict[str, Any], fit: LawFit) -> str:
    law = results["law"]
    lines = [f"L(N, D) = {law['E']:.4g} + {law['A']:.4g} / N^{law['alpha']:.4f} + {law['B']:.4g} / D^{law['beta']:.4f}"
             f"   (N = {results['params']} parameters)",
             f"fit: {fit.n_points} runs, best of {fit.n_inits} L-BFGS starts, Huber objective {fit.objective:.3e}, "
             f"rms log residual {fit.to_dict()['rms_log_residual']:.4f}",
             f"compute-optimal: N_opt ~ C^{results['exponents']['a']:.3f}, D_opt ~ C^{results['exponents']['b']:.3f}"
             + (f"; isoFLOP minima give N_opt ~ C^{results['exponents']['isoflop_a']:.3f}"
                if results["exponents"]["isoflop_a"] is not None else "")]
    for m in results["isoflop"]:
        where = ("no minimum (the parabola opens downwards)" if m["n_opt"] is None else
                 f"N* = {m['n_opt']:.4g}, loss {m['loss_opt']:.4f}" + ("" if m["inside"] else " (outside the sizes run)"))
        lines.append(f"  isoFLOP C = {m['flops']:.3g}: {where}")
    for h in results["holdout"]:
        lines.append(f"  held out {h['name']}: N = {h['n']:.4g}, D = {h['tokens']:.4g}: observed {h['val_loss']:.4f}, "
                     f"predicted {h['predicted']:.4f} (error {h['error']:+.4f}, {100 * h['relative_error']:+.2f}%)")
    if "budget" in results:
        b = results["budget"]
        lines.append(f"budget C = {b['flops']:.4g} FLOPs: N_opt = {b['n_opt']:.4g} parameters, D_opt = {b['d_opt']:.4g} "
                     f"tokens ({b['tokens_per_param']:.1f} tokens/parameter), predicted loss {b['loss']:.4f}")
    return "\n".join(lines)
