"""Counters and gauges that reach the Ray dashboard (Prometheus) through `ray.util.metrics`.

Metric objects are registered once per worker process and reused: Ray keeps one time
series per (name, tags), and re-registering a name on every batch would only add cost.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def counter(name: str, description: str, tag_keys: tuple[str, ...] = ()):
    from ray.util.metrics import Counter

    return Counter(name, description=description, tag_keys=tag_keys)


def add(name: str, value: float, tags: dict[str, str] | None = None, description: str = "") -> None:
    """Increment counter `name` (created on first use) by `value` with `tags`; never raises."""
    if value <= 0:
        return
    tags = tags or {}
    try:
        counter(name, description or name, tuple(sorted(tags))).inc(value, tags=tags)
    except Exception:  # metrics are best effort: a missing metrics agent must not fail the job
        pass


@lru_cache(maxsize=None)
def gauge(name: str, description: str, tag_keys: tuple[str, ...] = ()):
    from ray.util.metrics import Gauge

    return Gauge(name, description=description, tag_keys=tag_keys)


def set_scores(prefix: str, values: dict[str, object], tags: dict[str, str] | None = None) -> None:
    """Gauges `llmforge_<prefix>_<key>` for the numeric `values` (a job's final scores) with
    `tags`, when this process is connected to Ray (a job's driver); never raises."""
    import math

    try:
        import ray

        if not ray.is_initialized():
            return
        tags = tags or {}
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                gauge(f"llmforge_{prefix}_{key}", f"{prefix} {key}", tuple(sorted(tags))).set(float(value), tags=tags)
    except Exception:  # metrics are best effort: a missing metrics agent must not fail the job
        pass
