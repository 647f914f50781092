"""Pretraining under Ray Train with 2 CPU workers and DeepSpeed ZeRO: learning, restarts after
a killed worker, and resuming on another worker count."""
from __future__ import annotations

import json

import pytest

from llmforge.common.config import validate_config
from llmforge.common.errors import UserError
from tests.support.faults import KillOnce
from training.config import PretrainConfig
from training.trainer import read_metrics, run_pretrain

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
def reference_run(ray_local, text_shards, tmp_path_factory):
    """12 uninterrupted steps on 2 workers (constant lr after warmup, so a run stopped early and
    continued sees the same schedule)."""
    root = tmp_path_factory.mktemp("reference")
    shards, _ = text_shards
    run_pretrain(_config(shards, root, "ref", schedule="constant", max_steps=12, zero_stage=2), log=lambda *_: None)
    return _losses(root / "ref")


def test_more_workers_than_the_embedded_ray_has_cpus_stop_before_any_work(ray_local, text_shards, tmp_path):
    # Ray Train would retry starting a worker group of 3 on 2 CPUs without limit.
    shards, _ = text_shards
    with pytest.raises(UserError, match=r"3 worker\(s\) need 3 CPU \(has 2\).*scaling.num_workers"):
        run_pretrain(_config(shards, tmp_path, "too-many", workers=3, global_batch_size=12), log=lambda *_: None)
    assert not (tmp_path / "too-many" / "metrics.jsonl").exists()  # no step ran


def test_killed_worker_restarts_from_the_last_checkpoint(reference_run, text_shards, tmp_path):
    shards, _ = text_shards
    run_pretrain(_config(shards, tmp_path, "killed", schedule="constant", max_steps=12, zero_stage=2),
                 log=lambda *_: None, step_hooks=[KillOnce(step=6, rank=1)])  # before step 7, once
    assert (tmp_path / "killed" / "fault_injected").read_text() == "6"
    lines = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines]
    # Steps 5 and 6 ran, the worker died, Ray Train restarted both from checkpoint 4 and they ran again.
    assert steps == list(range(1, 7)) + list(range(5, 13)), steps
    resumed = _losses(tmp_path / "killed")
    assert resumed.keys() == reference_run.keys()
    for step, loss in reference_run.items():  # same batches, same weights: the curve continues exactly
        assert resumed[step] == pytest.approx(loss, abs=1e-4), (step, resumed[step], loss)


@pytest.mark.parametrize("stage", [3])  # the harder conversion (weights partitioned too); 2 left out for time
def test_resume_on_another_worker_count(reference_run, text_shards, tmp_path, stage):
    """2 workers write a partitioned checkpoint; 1 worker resumes it through the universal format.
    ZeRO-3 partitions the weights too, so its conversion is the harder one. The reference ran
    ZeRO-2: in fp32 the stages compute the same updates up to reduction order."""
    shards, _ = text_shards
    run_pretrain(_config(shards, tmp_path, "elastic", schedule="constant", max_steps=8, zero_stage=stage),
                 log=lambda *_: None)
    run_pretrain(_config(shards, tmp_path, "elastic", workers=1, schedule="constant", max_steps=12, zero_stage=stage),
                 log=lambda *_: None)
    lines = [json.loads(x) for x in (tmp_path / "elastic" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))  # resumed after step 8, nothing redone
    resumed = _losses(tmp_path / "elastic")
    assert resumed.keys() == reference_run.keys()
    for step, loss in reference_run.items():  # 1 worker x 2 accumulation steps = 2 workers x 1
        assert resumed[step] == pytest.approx(loss, abs=1e-3), (step, resumed[step], loss)


@pytest.mark.parametrize("stage", [3])  # stage 2 (the default) trains in the restart and resume tests
def test_zero_stage_loss_goes_down(ray_local, text_shards, tmp_path, stage):
    shards, real = text_shards
    last = run_pretrain(_config(shards, tmp_path, f"zero{stage}", zero_stage=stage), log=lambda *_: None)
    rows = read_metrics(tmp_path / f"zero{stage}" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 17))
    assert rows[0]["loss"] > 6.0  # ln(1024) = 6.93 at init
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.7, [round(r["loss"], 3) for r in rows]
    assert rows[-1]["val_loss"] < rows[7]["val_loss"] < rows[0]["loss"]
    assert last["step"] == 16 and 0 < last["mfu"] < 1 and last["tokens_per_s"] > 0
    assert (tmp_path / f"zero{stage}" / "loss.png").stat().st_size > 10_000
    ckpts = sorted((p for p in (tmp_path / f"zero{stage}").glob("checkpoint_*") if p.is_dir()),
                   key=lambda p: json.loads((p / "llmforge.json").read_text())["step"])
    assert len(ckpts) == 2  # run.num_to_keep
    files = {p.name for p in (ckpts[-1] / "deepspeed" / "checkpoint").iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    assert json.loads((ckpts[-1] / "llmforge.json").read_text())["step"] == 16
