"""`funnel.png` next to `stats.json`: documents left after each stage, drops stacked by reason."""
from __future__ import annotations

from typing import Any


def plot_funnel(funnel: dict[str, Any], path: str, top_reasons: int = 3) -> None:
    """Draw the funnel; writes a PNG at local `path`. A bare `Figure` renders with Agg without
    pyplot (its import and global figure registry), no display needed."""
    from matplotlib.figure import Figure

    stages = funnel["stages"]
    names = [s["stage"] for s in stages]
    kept = [s["out"] for s in stages]
    fig = Figure(figsize=(11, 0.5 * len(stages) + 1.6))
    ax = fig.subplots()
    y = list(range(len(stages)))[::-1]
    ax.barh(y, kept, color="#3b7dd8", label="documents left")
    for yi, s in zip(y, stages):
        left = s["out"]
        reasons = sorted(s["dropped"].items(), key=lambda kv: -kv[1])
        shown, rest = reasons[:top_reasons], sum(n for _, n in reasons[top_reasons:])
        for _, n in shown + ([("other", rest)] if rest else []):
            ax.barh(yi, n, left=left, color="#e8a33d", edgecolor="white", linewidth=0.5)
            left += n
        why = ", ".join(f"{r} {n:,}" for r, n in shown) + (f", other {rest:,}" if rest else "")
        ax.text(s["in"], yi, f"  {s['out']:,} / {s['in']:,}" + (f"   dropped: {why}" if why else ""),
                va="center", fontsize=7.5)
    ax.set_yticks(y, names)
    ax.set_xlabel("documents")
    w = funnel["warc"]
    ax.set_title(
        f"{funnel['inputs']} WARC files, {w.get('records', 0):,} records, "
        f"{funnel['documents_in']:,} HTML pages -> {funnel['documents_out']:,} documents",
        fontsize=10,
    )
    ax.set_xlim(0, max(funnel["documents_in"], 1) * 1.9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
