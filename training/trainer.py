"""`llmforge train pretrain`: the loop under Ray Train (or standalone), then the loss curve.

    <run.storage_path>/<run.name>/          Ray Train's run dir: checkpoint_* (DeepSpeed dirs)
    <run.storage_path>/<run.name>/metrics.jsonl, loss.png   rank 0's metrics and the curve
        (local storage; for s3:// / gs:// they go to runs/train/<name>/ on the driver's node)

Resuming needs nothing: the same command with the same storage path and name continues from
the latest checkpoint (Ray Train restores it into the workers; standalone reads the dir).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from llmforge.common.environ import env_restored
from llmforge.common.errors import UserError
from training.config import PretrainConfig, TrainJobConfig, preflight
from training.ds_ops import torch_extensions_dir
from training.task import PRETRAIN

from training.checkpoint import STOP_FILE


def run_dir(cfg: PretrainConfig) -> Path:
    if "://" in cfg.run.storage_path:
        return Path("runs/train") / cfg.run.name
    return Path(cfg.run.storage_path).resolve() / cfg.run.name


def _worker_env() -> dict[str, str]:
    # DeepSpeed JIT-builds small C++ ops on first use; one cache for every worker and rerun.
    return {"TORCH_EXTENSIONS_DIR": torch_extensions_dir(), "DS_BUILD_OPS": "0"}


def run_pretrain(cfg: PretrainConfig, standalone: bool = False, log=print,
                 step_hooks: Sequence[Callable[[int, int, Path | None], None]] = ()) -> dict[str, Any]:
    """Train (resuming if the run exists); returns the last metrics row. `step_hooks` run in
    every worker before each optimizer step as hook(step, rank, run_dir); they must pickle."""
    cfg = preflight(cfg)  # before any worker starts
    return run_training(cfg, PRETRAIN, run_dir(cfg), standalone, log, step_hooks)


def run_training(cfg: TrainJobConfig, task: str, out: Path, standalone: bool = False, log=print,
                 step_hooks: Sequence[Callable[[int, int, Path | None], None]] = ()) -> dict[str, Any]:
    """Any training job: the `task` ("module:TaskClass") with its checked config, in `out`
    (= run_dir of cfg.run). Stops with a UserError naming the step when the loss is not finite."""
    out.mkdir(parents=True, exist_ok=True)
    stop_file = out / STOP_FILE
    stop_file.unlink(missing_ok=True)  # a rerun (e.g. with a lower lr) starts afresh
    job = {"task": task, "config": cfg.model_dump(mode="json"), "metrics_path": str(out / "metrics.jsonl"),
           "env": _worker_env(), "step_hooks": list(step_hooks)}
    try:
        if standalone:
            from training.loop import launcher_env_restored, train_worker

            job["checkpoint_root"], job["standalone"] = str(out), True
            # The one-process group stays up for the next standalone run in this process:
            # DeepSpeed keeps module-level handles to it that a destroyed group would break.
            with launcher_env_restored():
                last = train_worker(job)
        else:
            last = _fit(cfg, job, log)
    except Exception:
        if stop_file.exists():  # the workers' reason, without Ray's wrapping
            raise UserError(stop_file.read_text().strip()) from None
        raise
    plot_path = plot_losses(out / "metrics.jsonl", out / "loss.png")
    log(f"train: metrics {out / 'metrics.jsonl'}" + (f", loss curve {plot_path}" if plot_path else ""))
    return last


# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by
# default) and takes one waiting report per worker per poll: a checkpoint (two reports, see
# training.checkpoint) held the workers up to 4 s, and the end of every run (and noticing a dead
# worker) waited up to 2 s more. Ray Train passes this variable from the driver to its controller
# and workers; a value set by the user is kept. A missed poll only waits longer: a worker is
# declared dead after RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S (10 min), not after one interval.
POLL_INTERVAL_ENV, POLL_INTERVAL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def _fit(cfg: TrainJobConfig, job: dict[str, Any], log) -> dict[str, Any]:
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from llmforge.common.ray_session import check_embedded_fit, init_ray
    from training.loop import train_worker

    init_ray()
    storage = cfg.run.storage_path if "://" in cfg.run.storage_path else str(Path(cfg.run.storage_path).resolve())
    resources = {"CPU": cfg.scaling.cpus_per_worker, **cfg.scaling.resources_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    check_embedded_fit([resources] * cfg.scaling.num_workers,
                       "scaling.num_workers / cpus_per_worker / resources_per_worker / use_gpu")
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=job,
        torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            storage_path=storage, name=cfg.run.name,
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.num_to_keep),
        ),
    )
    with env_restored(POLL_INTERVAL_ENV):
        os.environ.setdefault(POLL_INTERVAL_ENV, POLL_INTERVAL_S)
        result = trainer.fit()
    if result.error:
        raise result.error
    log(f"train: finished; latest checkpoint {result.checkpoint.path if result.checkpoint else None}")
    return dict(result.metrics or {})


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Metrics rows by step; a step logged again after a restart keeps its latest row."""
    if not path.exists():
        return []
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


# Preference metrics drawn beside the loss when a task logs them (reward model, DPO).
PANEL_METRICS = ("accuracy", "margin")


def plot_losses(metrics_path: Path, out: Path) -> Path | None:
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in PANEL_METRICS if any(m in r for r in rows)]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(7 + 4 * len(panels), 4), squeeze=False)
    for ax, key, label in zip(axes[0], ("loss", *panels), ("cross-entropy (nats/token)", *panels)):
        ax.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r], label=f"train {key}")
        val = [r for r in rows if f"val_{key}" in r]
        if val:
            ax.plot([r["step"] for r in val], [r[f"val_{key}"] for r in val], "o-", label=f"validation {key}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label if key != "loss" or not panels else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0][0].set_title(f"{metrics_path.parent.name}: last loss {rows[-1]['loss']:.3f}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
