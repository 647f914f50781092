"""Where checkpoints go: Ray Train's storage (reported as `ray.train.Checkpoint`) or, run
standalone, a local directory. Either way a checkpoint directory is

    llmforge.json     step, samples consumed, global batch, world size, model config, task,
                      model kind (causal_lm / reward), LoRA options, tokenizer path
    deepspeed/        engine.save_checkpoint(..., tag="checkpoint"): every rank writes its part
    tokenizer.json    the shards' tokenizer, when known

and resuming loads the latest one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llmforge.shard_format import TOKENIZER_FILE

TAG = "checkpoint"
META = "llmforge.json"
DS_DIR = "deepspeed"
# Written into the run directory by a worker that stops the run for good (non-finite loss):
# Ray Train's restarts read it and stop at once instead of failing the same step again, and
# the driver reports its text.
STOP_FILE = "stopped.txt"


def save_to(directory: str, engine, meta: dict[str, Any], rank: int) -> None:
    engine.save_checkpoint(os.path.join(directory, DS_DIR), tag=TAG, client_state={"step": meta["step"]})
    if rank == 0:
        tokenizer = meta.get("tokenizer")
        if tokenizer and os.path.exists(tokenizer):  # so `train export` finds it
            shutil.copyfile(tokenizer, os.path.join(directory, TOKENIZER_FILE))
        Path(directory, META).write_text(json.dumps(meta, indent=1))


def read_meta(directory: str) -> dict[str, Any]:
    return json.loads(Path(directory, META).read_text())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The highest-step finished checkpoint directory of a run (Ray Train's or standalone)."""
    found = [(read_meta(str(p))["step"], p) for p in Path(run_dir).glob("checkpoint_*") if (p / META).is_file()]
    return max(found)[1] if found else None


class RayCheckpoints:
    """All ranks write into a temp dir and report it; Ray Train merges the ranks' files into
    one checkpoint in `RunConfig.storage_path` and hands the latest back after a restart."""

    def latest(self):
        import ray.train

        return ray.train.get_checkpoint()

    def save(self, engine, meta: dict[str, Any], metrics: dict[str, Any], rank: int) -> None:
        import ray.train

        with tempfile.TemporaryDirectory(prefix="llmforge-ckpt-") as tmp:
            save_to(tmp, engine, meta, rank)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        # Ray Train's controller takes one waiting report per worker each poll (training.trainer:
        # POLL_INTERVAL_S, 0.5 s; Ray's default is 2 s);
        # until it has taken this one, a restart would not know the checkpoint. A second
        # report waits for that, so a worker that dies later resumes from here.
        ray.train.report(metrics)


class _LocalCheckpoint:
    def __init__(self, path: str):
        self.path = path

    def as_directory(self):
        from contextlib import nullcontext

        return nullcontext(self.path)


class LocalCheckpoints:
    """Standalone: `<root>/checkpoint_<step>`, written under a temp name and renamed when every
    rank is done, keeping the newest `num_to_keep`."""

    def __init__(self, root: str, num_to_keep: int | None):
        self.root, self.num_to_keep = Path(root), num_to_keep
        self.root.mkdir(parents=True, exist_ok=True)

    def _finished(self) -> list[Path]:
        return sorted(self.root.glob("checkpoint_[0-9]*"), key=lambda p: int(p.name.split("_")[1]))

    def latest(self):
        done = [p for p in self._finished() if (p / META).exists()]
        return _LocalCheckpoint(str(done[-1])) if done else None

    def save(self, engine, meta: dict[str, Any], metrics: dict[str, Any], rank: int) -> None:
        import torch.distributed as dist

        final = self.root / f"checkpoint_{meta['step']:08d}"
        tmp = self.root / f".tmp-{final.name}"
        if rank == 0 and tmp.exists():
            shutil.rmtree(tmp)
        dist.barrier()
        save_to(str(tmp), engine, meta, rank)
        dist.barrier()
        if rank == 0:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            if self.num_to_keep:
                for old in self._finished()[: -self.num_to_keep]:
                    shutil.rmtree(old)
        dist.barrier()
