"""Pretraining under Ray Train with 2 CPU workers and DeepSpeed ZeRO: learning, restarts after
a killed worker, and resuming on another worker count."""
from __future__ import annotations

import json

import pytest

from llmforge.common.config import validate_config
from training.config import PretrainConfig
from training.loop import KILL_AT_STEP_ENV
from training.trainer import read_metrics, run_pretrain

pytestmark = pytest.mark.ray


def _config(shards, storage, name, **train):
    return validate_config(PretrainConfig, {
        "model": {"preset": "tiny", "max_seq_len": 64},
        "data": {"shards": str(shards), "seq_len": 64, "val_fraction": 0.02},
        "optim": {"lr": 1e-2, "warmup_steps": 3},
        "train": {"max_steps": 16, "micro_batch_size": 4, "log_every": 1, "eval_every": 8, "eval_batches": 2,
                  "checkpoint_every": 4, **train},
        "scaling": {"num_workers": train.pop("num_workers", 2) if "num_workers" in train else 2},
        "run": {"storage_path": str(storage), "name": name, "max_failures": 2},
    })


@pytest.mark.parametrize("stage", [2, 3])
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
