"""Counters that reach the Ray dashboard (Prometheus) through `ray.util.metrics`.

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
