"""Pretraining under Ray Train with 2 CPU workers and DeepSpeed ZeRO-3: learning, a restart after
a killed worker, and resuming on another worker count, in one run."""
from __future__ import annotations

import json
import os

import pytest

from llmforge.common.config import validate_config
from llmforge.common.errors import UserError
from tests.support.faults import KillOnce, RecordEnv
from training.config import PretrainConfig
from training.trainer import POLL_INTERVAL_ENV, POLL_INTERVAL_S, read_metrics, run_pretrain

pytestmark = pytest.mark.ray


def _config(shards, storage, name, workers: int = 2, schedule: str = "cosine", **train):
    return validate_config(PretrainConfig, {
        "model": {"preset": "tiny", "max_seq_len": 64},
        "data": {"shards": str(shards), "seq_len": 64, "val_fraction": 0.02},
        "optim": {"lr": 1e-2, "warmup_steps": 3, "schedule": schedule},
        "train": {"max_steps": 16, "micro_batch_size": 4, "global_batch_size": 8, "log_every": 1, "eval_every": 8,
                  "eval_batches": 2, "checkpoint_every": 4, **train},
        "scaling": {"num_workers": workers},
        "run": {"storage_path": str(storage), "name": name, "max_failures": 2},
    })


def _losses(path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(path / "metrics.jsonl")}


@pytest.fixture(scope="module")
def reference_run(text_shards, tmp_path_factory):
    """12 uninterrupted steps of the same global batches, standalone in this process (1 worker x
    2 accumulation steps = 2 workers x 1, up to reduction order; no worker group to start).
    Constant lr after warmup, so a run stopped early and continued sees the same schedule."""
    root = tmp_path_factory.mktemp("reference")
    shards, _ = text_shards
    run_pretrain(_config(shards, root, "ref", workers=1, schedule="constant", max_steps=12, zero_stage=2),
                 standalone=True, log=lambda *_: None)
    return _losses(root / "ref")


def test_more_workers_than_the_embedded_ray_has_cpus_stop_before_any_work(ray_local, text_shards, tmp_path):
    # Ray Train would retry starting a worker group of 3 on 2 CPUs without limit.
    shards, _ = text_shards
    with pytest.raises(UserError, match=r"3 worker\(s\) need 3 CPU \(has 2\).*scaling.num_workers"):
        run_pretrain(_config(shards, tmp_path, "too-many", workers=3, global_batch_size=12), log=lambda *_: None)
    assert not (tmp_path / "too-many" / "metrics.jsonl").exists()  # no step ran


def _checkpoints(run) -> list:
    return sorted((p for p in run.glob("checkpoint_*") if p.is_dir()),
                  key=lambda p: json.loads((p / "llmforge.json").read_text())["step"])


def test_killed_zero3_worker_restarts_then_the_run_resumes_on_another_worker_count(reference_run, text_shards,
                                                                                   tmp_path, monkeypatch):
    """2 workers train 8 steps under ZeRO-3; rank 1 is SIGKILLed before step 7, once, and Ray
    Train restarts both from checkpoint 4. They write a partitioned checkpoint at step 8, which
    1 worker resumes through the universal format to step 12. ZeRO-3 partitions the weights too,
    so its restore and its conversion are the harder ones (ZeRO-2 with 2 workers restarts in
    tests/alignment/test_align_ray.py and trains as a Ray job in tests/test_ray_job_submit.py).
    The reference ran ZeRO-2: in fp32 the stages compute the same updates up to reduction order."""
    shards, _ = text_shards
    run = tmp_path / "elastic"
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    run_pretrain(_config(shards, tmp_path, "elastic", schedule="constant", max_steps=8, zero_stage=3),
                 log=lambda *_: None, step_hooks=[KillOnce(step=6, rank=1), RecordEnv(POLL_INTERVAL_ENV)])
    assert (run / "fault_injected").read_text() == "6"
    # Ray Train's controller polled the workers every 0.5 s (it passes the driver's value on to
    # the workers); the driver's environment is as it was.
    assert (run / f"env_{POLL_INTERVAL_ENV}").read_text() == POLL_INTERVAL_S == "0.5"
    assert POLL_INTERVAL_ENV not in os.environ
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # Steps 5 and 6 ran, the worker died, Ray Train restarted both from checkpoint 4 and they ran again.
    assert [r["step"] for r in lines] == list(range(1, 7)) + list(range(5, 9))
    first, again = {r["step"]: r["loss"] for r in lines[:6]}, {r["step"]: r["loss"] for r in lines[6:8]}
    for step in (5, 6):  # restored from checkpoint 4, the same computation again: the same loss
        assert again[step] == pytest.approx(first[step], abs=1e-6), (step, again[step], first[step])
    partitioned = _checkpoints(run)[-1]
    assert json.loads((partitioned / "llmforge.json").read_text())["step"] == 8
    files = {p.name for p in (partitioned / "deepspeed" / "checkpoint").iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    last = run_pretrain(_config(shards, tmp_path, "elastic", workers=1, schedule="constant", max_steps=12,
                                zero_stage=3), log=lambda *_: None)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 7)) + list(range(5, 13))  # resumed after step 8
    resumed = _losses(run)
    assert resumed.keys() == reference_run.keys()
    for step, loss in reference_run.items():  # 1 worker x 2 accumulation steps = 2 workers x 1
        assert resumed[step] == pytest.approx(loss, abs=1e-3), (step, resumed[step], loss)
    # It learns: ln(1024) = 6.93 at init, then down; the held-out loss too.
    rows = read_metrics(run / "metrics.jsonl")
    assert rows[0]["loss"] > 6.0
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.7, [round(r["loss"], 3) for r in rows]
    assert rows[-1]["val_loss"] < rows[7]["val_loss"] < rows[0]["loss"]
    assert last["step"] == 12 and 0 < last["mfu"] < 1 and last["tokens_per_s"] > 0
    assert (run / "loss.png").stat().st_size > 10_000
    steps = [json.loads((p / "llmforge.json").read_text())["step"] for p in _checkpoints(run)]
    assert steps == [8, 12]  # run.num_to_keep
