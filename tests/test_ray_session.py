"""The head start a job gives Ray before its first dataset: warmed workers. (`warm_stages`,
what the data job warms them with, is tested beside `run_stages` in tests/dataproc.)"""
from __future__ import annotations

import os
import time

from llmforge.common.ray_session import await_warm_workers, warm_workers


def _hold(directory: str, seconds: float) -> int:
    """Announce itself with a file, then stay busy until `release` appears (or `seconds`)."""
    import uuid

    open(os.path.join(directory, uuid.uuid4().hex), "w").close()
    deadline = time.time() + seconds
    while not os.path.exists(os.path.join(directory, "..", "release")) and time.time() < deadline:
        time.sleep(0.05)
    return os.getpid()


def _wait_for_files(directory, n: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while len(list(directory.iterdir())) < n and time.time() < deadline:
        time.sleep(0.05)
    assert len(list(directory.iterdir())) == n


def test_warm_workers_run_count_times_in_separate_processes_holding_no_cpu(ray_local, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    refs = warm_workers(_hold, 2, str(started), 60.0)  # returns at once, with the tasks' refs
    _wait_for_files(started, 2)
    # Both run, and the CPUs stay free: a dataset started now would not see a full cluster.
    assert ray_local.available_resources().get("CPU") == ray_local.cluster_resources()["CPU"]
    (tmp_path / "release").touch()
    await_warm_workers(refs)
    assert len(set(ray_local.get(refs, timeout=1))) == 2


def test_await_warm_workers_gives_up_after_its_timeout(ray_local, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    refs = warm_workers(_hold, 1, str(started), 30.0)
    _wait_for_files(started, 1)
    t0 = time.perf_counter()
    await_warm_workers(refs, timeout=0.5)
    assert time.perf_counter() - t0 < 5
    ready, _ = ray_local.wait(refs, timeout=0)
    assert not ready  # still running: the job goes on without it
    (tmp_path / "release").touch()
