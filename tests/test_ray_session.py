"""The head start a job gives Ray before its first dataset: warmed workers, stages built once."""
from __future__ import annotations

import time

from dataproc.config import DataJobConfig
from dataproc.documents.runner import _stages_for, warm_stages
from llmforge.common.ray_session import warm_workers


def _touch(directory: str) -> None:
    import os
    import uuid

    open(os.path.join(directory, uuid.uuid4().hex), "w").close()


def test_warm_workers_runs_the_function_count_times_without_being_waited_for(ray_local, tmp_path):
    warm_workers(_touch, 3, str(tmp_path))
    deadline = time.time() + 60
    while len(list(tmp_path.iterdir())) < 3 and time.time() < deadline:
        time.sleep(0.1)
    assert len(list(tmp_path.iterdir())) == 3


def test_warm_stages_builds_the_stages_that_run_stages_then_uses():
    config_json = DataJobConfig.model_validate({"input": {"paths": ["x"]}, "output": {"path": "y"}}).stages.model_dump_json()
    _stages_for.cache_clear()
    warm_stages(config_json)
    built = _stages_for.cache_info()
    assert (built.misses, built.currsize) == (1, 1)
    _stages_for(config_json)  # what run_stages calls first, in the worker the job's task reaches
    assert (_stages_for.cache_info().hits, _stages_for.cache_info().misses) == (1, 1)


def test_warm_stages_leaves_a_bad_config_to_the_job_tasks():
    _stages_for.cache_clear()
    warm_stages("{not json")  # no exception here: the job's own task raises it in place
    assert _stages_for.cache_info().currsize == 0
