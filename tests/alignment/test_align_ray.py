"""DPO under Ray Train with 2 CPU workers (DeepSpeed ZeRO-2): a SIGKILLed worker, and the run
resumes with the loss curve of an uninterrupted run; and `llmforge align` via the CLI."""
from __future__ import annotations

import json

import pytest

from tests.alignment.conftest import align_config
from tests.support.faults import KillOnce
from training.trainer import read_metrics

pytestmark = pytest.mark.ray

SETS = {"train.max_steps": 8, "train.micro_batch_size": 2, "train.global_batch_size": 8, "train.log_every": 1,
        "train.checkpoint_every": 3, "scaling.num_workers": 2, "run.max_failures": 2, "optim.lr": 1e-3,
        "optim.schedule": "constant", "data.val_fraction": 0.1}


def _losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl")}


@pytest.fixture(scope="module")
def few_pairs(tmp_path_factory):
    """96 pairs: the 8 steps of 8 and a held-out tenth (the reference pass covers every pair)."""
    from alignment.synthetic import preference_task, write_jsonl

    return write_jsonl(preference_task(96, seed=0), tmp_path_factory.mktemp("dpo_ray") / "pairs.jsonl")


def test_killed_dpo_worker_resumes_on_the_same_curve(ray_local, base_model, few_pairs, tmp_path):
    from alignment.job import run_align

    preference_file = few_pairs

    quiet = dict(log=lambda *_: None)
    # The uninterrupted curve: the same global batches standalone in this process (1 worker x 2
    # accumulation steps = 2 workers x 1, up to reduction order), with no worker group to start.
    ref = tmp_path / "ref"
    run_align("dpo", align_config("dpo", base_model, preference_file, ref, **{**SETS, "scaling.num_workers": 1}),
              standalone=True, **quiet)
    killed = tmp_path / "killed"
    run_align("dpo", align_config("dpo", base_model, preference_file, killed, **SETS), **quiet,
              step_hooks=[KillOnce(step=5, rank=1)])  # before step 6, once
    assert (killed / "fault_injected").read_text() == "5"
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8], steps  # restarted from checkpoint 3
    first, again = {r["step"]: r["loss"] for r in rows[:5]}, {r["step"]: r["loss"] for r in rows[5:7]}
    for step in (4, 5):  # restored from checkpoint 3, the same computation again
        assert again[step] == pytest.approx(first[step], abs=1e-6), (step, again[step], first[step])
    expected, resumed = _losses(ref), _losses(killed)
    assert resumed.keys() == expected.keys()
    for step, loss in expected.items():
        assert resumed[step] == pytest.approx(loss, abs=1e-4), (step, resumed[step], loss)
    results = json.loads((killed / "results.json").read_text())
    assert results["final"]["step"] == 8 and "val_accuracy" in results["final"]
