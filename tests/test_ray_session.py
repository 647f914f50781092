"""The head start a job gives Ray before its first dataset: warmed workers. (`warm_stages`,
what the data job warms them with, is tested beside `run_stages` in tests/dataproc.)"""
from __future__ import annotations

import time

from llmforge.common.ray_session import warm_workers


def _touch(directory: str) -> None:
    import os
    import uuid

    open(os.path.join(directory, uuid.uuid4().hex), "w").close()


def test_warm_workers_runs_the_function_count_times(ray_local, tmp_path):
    warm_workers(_touch, 3, str(tmp_path))  # returns at once: nothing to wait on but the files
    deadline = time.time() + 60
    while len(list(tmp_path.iterdir())) < 3 and time.time() < deadline:
        time.sleep(0.1)
    assert len(list(tmp_path.iterdir())) == 3
