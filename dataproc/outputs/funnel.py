"""The funnel: documents in/out per stage and per drop reason, bytes and time.

Built only from the per-input `_stats.json` files, so a job resumed after a kill reports
exactly what a single uninterrupted run would have.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable


def build_funnel(per_source: Iterable[dict[str, Any]], stage_order: list[str]) -> dict[str, Any]:
    sources = list(per_source)
    reader: Counter = Counter()
    dropped: Counter = Counter()
    seconds: Counter = Counter()
    totals = Counter()
    for s in sources:
        reader.update(s["reader"])
        dropped.update(s["dropped"])
        seconds.update(s["seconds"])
        totals.update(
            rows=s["rows"], kept=s["kept"], text_bytes=s.get("text_bytes", 0),
            file_bytes=s.get("file_bytes", 0),
        )
        seconds["read_warc"] += s.get("read_seconds", 0.0)

    stages = []
    alive = totals["rows"]
    for name in stage_order:
        reasons = {r.split(":", 1)[1]: n for r, n in sorted(dropped.items()) if r.split(":", 1)[0] == name}
        out = alive - sum(reasons.values())
        stages.append(
            {"stage": name, "in": alive, "out": out, "dropped": reasons,
             "seconds": round(seconds.get(name, 0.0), 3)}
        )
        alive = out
    if alive != totals["kept"]:
        raise ValueError(f"funnel does not add up: {alive} after the last stage, {totals['kept']} kept")
    return {
        "inputs": len(sources),
        "warc": dict(sorted(reader.items())),
        "documents_in": totals["rows"],
        "documents_out": totals["kept"],
        "stages": stages,
        "bytes": {
            "warc_files": totals["file_bytes"],
            "html": reader.get("bytes_html", 0),
            "text_out": totals["text_bytes"],
        },
        "seconds": {"read_warc": round(seconds["read_warc"], 3), **{s["stage"]: s["seconds"] for s in stages}},
    }


def format_funnel(funnel: dict[str, Any]) -> str:
    """A table a person reads at the end of a run. `sec`: summed CPU seconds inside a
    per-document stage; for a corpus stage (dedup, quality), the wall seconds of its step."""
    w = funnel["warc"]
    lines = [
        f"inputs: {funnel['inputs']} WARC files, {w.get('records', 0)} records, "
        f"{w.get('kept', 0)} HTML 200 responses "
        f"({w.get('skip_corrupt', 0)} corrupt, {w.get('truncated_file', 0)} truncated files)",
        f"{'stage':<18}{'in':>10}{'out':>10}{'kept %':>8}{'sec':>9}  top drop reasons",
    ]
    for s in funnel["stages"]:
        pct = 100.0 * s["out"] / s["in"] if s["in"] else 100.0
        top = ", ".join(f"{r}={n}" for r, n in sorted(s["dropped"].items(), key=lambda x: -x[1])[:3])
        lines.append(f"{s['stage']:<18}{s['in']:>10}{s['out']:>10}{pct:>7.1f}%{s['seconds']:>9.1f}  {top}")
    lines.append(f"documents out: {funnel['documents_out']} of {funnel['documents_in']}")
    if funnel.get("domains"):
        lines.append("domains: " + ", ".join(f"{d}={n}" for d, n in sorted(funnel["domains"].items(), key=lambda x: -x[1])))
    if funnel.get("tokens"):
        t = funnel["tokens"]
        lines.append(f"tokens: {t['total']:,} in {t['shards']} shards ({t['documents']:,} documents after mixing) -> {t['dir']}")
    return "\n".join(lines)
