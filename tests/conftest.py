"""Shared fixtures: one local Ray for the whole session, and the path to ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Data progress bars are for people; in test logs they are noise.
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from tests.support.text_shards import SHARED_DATA  # noqa: E402  (one definition of the path)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data is not next to this checkout)")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (2 CPUs, no dashboard), shared by every test that needs one."""
    import ray

    if ray.is_initialized():  # a job run in this process started its own (init_ray); use ours
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    from dataproc.config import ExecutionConfig

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # Shuffles (groupby, dedup joins) as `llmforge data run` runs them: Ray's default strategy
    # starts fresh worker processes for every shuffle, seconds each on 2 CPUs.
    ctx.shuffle_strategy = ExecutionConfig.model_fields["shuffle_strategy"].default
    yield ray
    ray.shutdown()
