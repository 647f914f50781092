"""The per-worker pretraining loop: one function, run by every Ray Train worker or standalone.

    train_worker({"config": PretrainConfig dict, "metrics_path": ..., "checkpoint_root": ...})

Standalone (no Ray; one process, e.g. one GPU box or a debugger) it sets the torch.distributed
environment a launcher would and keeps checkpoints in `checkpoint_root`. Under Ray Train the
process group already exists and checkpoints go through `ray.train.report`.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmforge.common.errors import ConfigError
from training.checkpoint import DS_DIR, TAG, LocalCheckpoints, RayCheckpoints, read_meta
from training.config import PretrainConfig
from training.data import GlobalOrder, rank_micro_batches, split_train_val
from training.flops import peak_flops
from training.model import Llama, count_parameters, flops_per_token
from training.schedule import lr_factor

# Fault injection for the restart tests: SIGKILL rank 1 the first time it reaches this step
# (a marker file next to the metrics makes it happen once per run, not after every restart).


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _under_ray_train() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:
        return False


def _init_distributed(device: torch.device) -> tuple[int, int]:
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        # What a launcher would set: without them DeepSpeed tries MPI discovery.
        for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"),
                           ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port()))):
            os.environ.setdefault(key, value)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _device(cfg: PretrainConfig) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if cfg.scaling.use_gpu or torch.cuda.is_available() else "cpu"
    if want == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % max(1, torch.cuda.device_count()))
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def deepspeed_config(cfg: PretrainConfig, world: int, precision: str) -> dict[str, Any]:
    t = cfg.train
    return {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum(world),
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings; not norms (GPT-2/Llama practice)."""
    decay, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class MetricsLog:
    """Rank 0's metrics: one JSON line per log step, and gauges on the Ray dashboard."""

    def __init__(self, path: str | None, rank: int, under_ray: bool, tensorboard: bool = False):
        self.path = Path(path) if path and rank == 0 else None
        self.tb = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(logdir=str(self.path.parent / "tensorboard"))
        self.gauges = {}
        if under_ray and rank == 0:
            try:
                from ray.util.metrics import Gauge

                self.gauges = {k: Gauge(f"llmforge_train_{k}", description=f"pretraining {k}")
                               for k in ("loss", "tokens_per_s", "mfu", "lr", "val_loss")}
            except Exception:  # dashboard metrics are best effort
                self.gauges = {}

    def write(self, row: dict[str, Any]) -> None:
        if self.path:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        for key, gauge in self.gauges.items():
            if key in row and row[key] is not None:
                gauge.set(float(row[key]))
        if self.tb is not None:
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"train/{key}", value, global_step=row["step"])
            self.tb.flush()


def _evaluate(engine, val, cfg: PretrainConfig, rank: int, world: int, device: torch.device) -> float:
    import torch.distributed as dist

    n = cfg.train.micro_batch_size
    total, count = torch.zeros(2, device=device, dtype=torch.float64), 0
    engine.eval()
    with torch.no_grad():
        for b in range(cfg.train.eval_batches):
            first = (b * world + rank) * n
            idx = [(first + i) % len(val) for i in range(n)]
            x, y = val.batch(idx)
            _, loss = engine(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
            total[0] += loss.item() * n
            count += n
    total[1] = count
    engine.train()
    dist.all_reduce(total)
    return float(total[0] / total[1])


def train_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Train until `train.max_steps`, resuming from the latest checkpoint; returns the last metrics."""
    import deepspeed

    for key, value in job.get("env", {}).items():
        os.environ.setdefault(key, value)
    cfg = PretrainConfig.model_validate(job["config"])
    metrics_path = job.get("metrics_path")
    # Callables run on every rank before each optimizer step: hook(step, rank, run_dir), where
    # step counts the steps done so far and run_dir holds metrics.jsonl (None if not logging).
    step_hooks = job.get("step_hooks", ())
    run_dir = Path(metrics_path).parent if metrics_path else None
    under_ray = not job.get("standalone") and _under_ray_train()  # standalone never imports Ray
    device = _device(cfg)
    threads = cfg.train.threads or max(1, int(cfg.scaling.cpus_per_worker))
    if device.type == "cpu":
        torch.set_num_threads(threads)
    rank, world = _init_distributed(device)
    precision = cfg.precision_on(device.type)
    ckpts = RayCheckpoints() if under_ray else LocalCheckpoints(job["checkpoint_root"], cfg.run.num_to_keep)
    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank and every restart

    train, val = split_train_val(cfg.data.shards, cfg.data.seq_len, cfg.data.val_fraction, cfg.data.val_shards)
    order = GlobalOrder(len(train), cfg.data.seed)
    global_batch, accum = cfg.global_batch(world), cfg.grad_accum(world)

    with contextlib.ExitStack() as stack:
        resume = _resume_source(ckpts.latest(), stack, global_batch, world, cfg.train.zero_stage)
        model = Llama(cfg.model)
        optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                      betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.train.max_steps, cfg.optim))
        ds_config = deepspeed_config(cfg, world, precision)
        if resume and resume["universal"]:
            ds_config["checkpoint"] = {"load_universal": True}
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                               config=ds_config)
        step = 0
        if resume:
            from training.safe_load import weights_only_loading

            with weights_only_loading():
                path, state = engine.load_checkpoint(resume["dir"], tag=TAG, load_module_strict=True)
            if path is None:
                raise RuntimeError(f"DeepSpeed found no checkpoint in {resume['dir']}")
            step = int(state["step"]) if state and "step" in state else resume["step"]
            if rank == 0:
                print(f"resumed from step {step} ({resume['source']}"
                      + (f", resharded from {resume['from_world']} workers" if resume["universal"] else "") + ")",
                      flush=True)
    if cfg.train.compile:
        engine.compile()

    tokens_per_step = global_batch * cfg.data.seq_len
    fpt = flops_per_token(cfg.model, cfg.data.seq_len)
    peak, peak_source = peak_flops(device, precision)
    log = MetricsLog(metrics_path, rank, under_ray, tensorboard=cfg.run.tensorboard)
    if rank == 0:
        print(f"model {count_parameters(cfg.model) / 1e6:.2f}M params, {fpt / 1e6:.1f} MFLOPs/token; "
              f"world {world}, global batch {global_batch} = {cfg.train.micro_batch_size} x {accum} accum x "
              f"{world}; {precision}; peak {peak / 1e12:.2f} TFLOP/s per worker ({peak_source})", flush=True)

    last: dict[str, Any] = {}
    window_start, tokens_since, losses = time.perf_counter(), 0, []
    while step < cfg.train.max_steps:
        for hook in step_hooks:
            hook(step, rank, run_dir)
        micro = rank_micro_batches(order, step, global_batch, rank, world, accum)
        step_loss = 0.0
        for idx in micro:
            x, y = train.batch(idx)
            _, loss = engine(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
            engine.backward(loss)
            engine.step()
            step_loss += loss.item() / accum
        step += 1
        losses.append(step_loss)
        tokens_since += tokens_per_step

        log_now = step % cfg.train.log_every == 0 or step == cfg.train.max_steps
        eval_now = bool(val) and cfg.train.eval_every and (step % cfg.train.eval_every == 0
                                                          or step == cfg.train.max_steps)
        ckpt_now = step == cfg.train.max_steps or (cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0)
        if not (log_now or eval_now or ckpt_now):
            continue
        loss_t = torch.tensor([float(np.mean(losses))], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(loss_t)
        elapsed = time.perf_counter() - window_start
        tokens_per_s = tokens_since / elapsed
        row = {
            "step": step, "loss": float(loss_t) / world, "lr": scheduler.get_last_lr()[0],
            "grad_norm": _grad_norm(engine), "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_worker": tokens_per_s / world,
            "mfu": fpt * tokens_per_s / world / peak, "tokens_seen": step * tokens_per_step,
            "samples_seen": step * global_batch, "time": time.time(),
        }
        if eval_now:
            row["val_loss"] = _evaluate(engine, val, cfg, rank, world, device)
        log.write(row)
        if rank == 0 and log_now:
            print(f"step {step}/{cfg.train.max_steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                  f"grad_norm {row['grad_norm']:.3f} tok/s {tokens_per_s:,.0f} mfu {row['mfu']:.3f}"
                  + (f" val_loss {row['val_loss']:.4f}" if "val_loss" in row else ""), flush=True)
        meta = {"step": step, "samples_seen": step * global_batch, "global_batch": global_batch,
                "world_size": world, "zero_stage": cfg.train.zero_stage, "model": cfg.model.model_dump(),
                "data": cfg.data.model_dump()}
        if ckpt_now:
            ckpts.save(engine, meta, row, rank)
        else:
            ckpts.report(row)
        last = row
        window_start, tokens_since, losses = time.perf_counter(), 0, []

    torch.distributed.barrier()
    return last


def _resume_source(latest, stack: contextlib.ExitStack, global_batch: int, world: int,
                   zero_stage: int) -> dict[str, Any] | None:
    """Where to load the latest checkpoint from (None: start fresh). A checkpoint written by
    another number of workers with partitioned state is converted to a universal one."""
    if latest is None:
        return None
    d = stack.enter_context(latest.as_directory())
    meta = read_meta(d)
    if meta["global_batch"] != global_batch:
        raise ConfigError(f"checkpoint {d} was trained with a global batch of {meta['global_batch']} sequences, "
                          f"this run has {global_batch}: the data position would not be exact; set "
                          f"train.global_batch_size to {meta['global_batch']}")
    if meta["zero_stage"] != zero_stage:
        raise ConfigError(f"checkpoint {d} was written at ZeRO stage {meta['zero_stage']}, train.zero_stage is "
                          f"{zero_stage}")
    info = {"dir": os.path.join(d, DS_DIR), "step": meta["step"], "source": d, "universal": False,
            "from_world": meta["world_size"]}
    if meta["world_size"] != world and zero_stage > 0:
        from training.reshard import to_universal

        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="llmforge-universal-"))
        info.update(dir=to_universal(info["dir"], TAG, tmp), universal=True)
    return info


def _grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return float("nan")
    return float(norm.item() if torch.is_tensor(norm) else norm)
