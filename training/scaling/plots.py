"""The fit's picture: loss vs FLOPs per model size with the fitted curves and the
compute-optimal frontier; isoFLOP curves with their parabolas and minima; N_opt vs C."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from training.scaling.law import FLOPS_PER_PARAM_TOKEN, IsoFlopMinimum, ScalingLaw


def plot_fit(law: ScalingLaw, runs: Sequence[dict[str, Any]], minima: Sequence[IsoFlopMinimum], out: Path,
             held: Sequence[dict[str, Any]] = (), budget: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_runs = [*runs, *held]
    n_all = np.array([r["_n"] for r in all_runs])
    c_all = FLOPS_PER_PARAM_TOKEN * n_all * np.array([r["_d"] for r in all_runs])
    c_lo, c_hi = c_all.min() / 3, max(c_all.max() * 3, budget or 0)
    sizes = sorted(set(n_all))
    cmap = plt.get_cmap("viridis")
    color = {n: cmap(i / max(1, len(sizes) - 1)) for i, n in enumerate(sizes)}
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))

    ax = axes[0]
    for n in sizes:
        c = np.geomspace(c_lo, c_hi, 100)
        ax.plot(c, law.loss(n, c / (FLOPS_PER_PARAM_TOKEN * n)), color=color[n], alpha=0.5, lw=1)
        mine = [r for r in runs if r["_n"] == n]
        ax.scatter([FLOPS_PER_PARAM_TOKEN * r["_n"] * r["_d"] for r in mine], [r["_loss"] for r in mine],
                   color=color[n], s=22, label=f"N = {n:.3g}", zorder=3)
    for r in held:
        ax.scatter([FLOPS_PER_PARAM_TOKEN * r["_n"] * r["_d"]], [r["_loss"]], marker="*", s=160, color="red",
                   zorder=4, label=f"held out (N = {r['_n']:.3g})")
        ax.scatter([FLOPS_PER_PARAM_TOKEN * r["_n"] * r["_d"]], [law.loss(r["_n"], r["_d"])], marker="x", s=60,
                   color="red", zorder=4)
    c = np.geomspace(c_lo, c_hi, 100)
    n_opt, d_opt = law.compute_optimal(c)
    ax.plot(c, law.loss(n_opt, d_opt), "k--", lw=1.5, label="compute-optimal frontier")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs C = 6ND")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title(f"L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")

    ax = axes[1]
    if minima:
        gcolor = plt.get_cmap("plasma")
        for i, m in enumerate(minima):
            col = gcolor(i / max(1, len(minima) - 1) * 0.85)
            mine = [r for r in runs if _group(r) == m.flops]
            x = np.array([r["_n"] for r in mine])
            ax.scatter(x, [r["_loss"] for r in mine], color=col, s=22, zorder=3, label=f"C = {m.flops:.3g}")
            grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, 100)
            ax.plot(grid, np.polyval(m.coeffs, np.log(grid)), color=col, lw=1)
            ax.plot(grid, law.loss(grid, m.flops / (FLOPS_PER_PARAM_TOKEN * grid)), color=col, lw=1, ls=":")
            if m.n_opt is not None:
                ax.scatter([m.n_opt], [m.loss_opt], marker="v", s=70, color=col, edgecolor="k", zorder=4)
        ax.set_title("isoFLOP curves: parabola in log N (solid), law (dotted), minima (▼)", fontsize=10)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no isoFLOP groups with 3+ sizes", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("isoFLOP curves", fontsize=10)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final validation loss")
    ax.grid(alpha=0.3, which="both")

    ax = axes[2]
    ax.plot(c, n_opt, "k-", label=f"law: N_opt ~ C^{law.beta / (law.alpha + law.beta):.3f}")
    ax.plot(c, d_opt, "k--", label=f"law: D_opt ~ C^{law.alpha / (law.alpha + law.beta):.3f}")
    pts = [m for m in minima if m.n_opt is not None]
    if pts:
        ax.scatter([m.flops for m in pts], [m.n_opt for m in pts], marker="v", s=60, color="tab:orange",
                   label="isoFLOP minima N*", zorder=3)
        ax.scatter([m.flops for m in pts], [m.flops / (FLOPS_PER_PARAM_TOKEN * m.n_opt) for m in pts],
                   marker="^", s=60, color="tab:green", label="isoFLOP D* = C / 6N*", zorder=3)
    if budget:
        nb, db = law.compute_optimal(budget)
        ax.axvline(budget, color="red", alpha=0.4)
        ax.annotate(f"C = {budget:.2g}\nN = {float(nb):.3g}\nD = {float(db):.3g}", (budget, float(nb)), fontsize=8,
                    xytext=(-70, 10), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel("compute-optimal N (parameters), D (tokens)")
    ax.set_title("compute-optimal allocation", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")

    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _group(r: dict[str, Any]) -> float | None:
    g = r.get("group_flops")
    try:
        return float(g) if g is not None else None
    except (TypeError, ValueError):
        return None
