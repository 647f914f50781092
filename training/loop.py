"""The per-worker pretraining loop: one function, run by every Ray Train worker or standalone.

    train_worker({"config": TrainJobConfig dict, "metrics_path": ..., "checkpoint_root": ...})

Standalone (no Ray; one process, e.g. one GPU box or a debugger) it sets the torch.distributed
environment a launcher would and keeps checkpoints in `checkpoint_root`. Under Ray Train the
process group already exists and checkpoints go through `ray.train.report`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmforge.common.errors import ConfigError
from training.checkpoint import DS_DIR, STOP_FILE, TAG, LocalCheckpoints, RayCheckpoints, read_meta
from training.config import TrainJobConfig
from training.data import GlobalOrder, rank_micro_batches
from training.flops import peak_flops
from training.model import count_parameters, flops_per_token
from training.schedule import lr_factor
from training.task import PRETRAIN, load_task

def rendezvous_store(host: str, port: int, world: int, is_master: bool):
    """The TCP store a process group meets at. The master binds port 0 when `port` is 0: a port
    picked first and bound later can be taken in between by an outgoing connection (EADDRINUSE
    seen under Ray), so the store's own bind chooses it and `.port` says which it got."""
    import torch.distributed as dist

    return dist.TCPStore(host, port, world, is_master, wait_for_workers=False)


def _under_ray_train() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:
        return False


LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launcher_env_restored():
    """Takes back the launcher variables a group set up in this process wrote, so that a
    subprocess started later (a test, a data job) does not inherit a MASTER_PORT this process
    listens on."""
    from llmforge.common.environ import env_restored

    return env_restored(*LAUNCHER_ENV)


def _init_distributed(device: torch.device, store=None) -> tuple[int, int]:
    """Join (or create) the default process group. `store` is a rendezvous store from
    `rendezvous_store`; without one and without a launcher's MASTER_PORT, a one-process group."""
    import deepspeed
    import torch.distributed as dist

    from training.ds_ops import jit_build_env

    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized() and store is None and "MASTER_PORT" not in os.environ:
        store = rendezvous_store("127.0.0.1", 0, 1, True)
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port)})
    # What a launcher would set: without them DeepSpeed tries MPI discovery (and its engine
    # asserts LOCAL_RANK even when the process group exists from an earlier run).
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    if not dist.is_initialized() and store is not None:
        dist.init_process_group(backend, store=store, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
    with jit_build_env():  # on CPU it loads the comm op infra/setup.sh built
        deepspeed.init_distributed(dist_backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _device(cfg: TrainJobConfig) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if cfg.scaling.use_gpu or torch.cuda.is_available() else "cpu"
    if want == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % max(1, torch.cuda.device_count()))
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def deepspeed_config(cfg: TrainJobConfig, world: int, precision: str) -> dict[str, Any]:
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
    # Empty groups are left out (LoRA trains matrices only): ZeRO drops them, and the lr
    # scheduler would then hold more learning rates than the optimizer has groups.
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class MetricsLog:
    """Rank 0's metrics: one JSON line per log step, and gauges on the Ray dashboard."""

    def __init__(self, path: str | None, rank: int, under_ray: bool, tensorboard: bool = False,
                 extra: tuple[str, ...] = ()):
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

                self.gauges = {k: Gauge(f"llmforge_train_{k}", description=f"training {k}")
                               for k in ("loss", "tokens_per_s", "mfu", "lr", "val_loss", *extra)}
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


def _evaluate(engine, task, val, cfg, rank: int, world: int, device: torch.device,
              names: tuple[str, ...]) -> dict[str, float]:
    """Held-out loss and metrics, weighted like training: sums over every worker / their weight."""
    import torch.distributed as dist

    n = cfg.train.micro_batch_size
    if task.eval_coverage == "all":  # each held-out example once, spread over the ranks
        mine = np.arange(rank, len(val), world)
        batches = [mine[i:i + n] for i in range(0, len(mine), n)]
        rounds = -(-len(val) // (n * world))
    else:  # a fixed sample, wrapping around a small held-out set
        batches = [[((b * world + rank) * n + i) % len(val) for i in range(n)] for b in range(cfg.train.eval_batches)]
        rounds = len(batches)
    total = torch.zeros(len(names) + 1, device=device, dtype=torch.float64)
    engine.eval()
    with torch.no_grad():
        for b in range(rounds):  # every rank runs the same number of forwards (ZeRO-3 gathers)
            idx = batches[b] if b < len(batches) and len(batches[b]) else [0]
            loss_sum, metrics = task.loss(engine, _to_device(val.batch(idx), device))
            if b < len(batches) and len(batches[b]):
                total += torch.tensor([float(loss_sum), *(float(metrics[m]) for m in task.metric_names),
                                       val.weight(idx)], dtype=torch.float64, device=device)
    engine.train()
    dist.all_reduce(total)
    return {f"val_{k}": float(v) for k, v in zip(names, (total[:-1] / total[-1]).tolist())}


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the run stops, the last checkpoint stays as it was."""


def _to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def train_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Train until `train.max_steps`, resuming from the latest checkpoint; returns the last metrics.

    job: {"task": "module:TaskClass" (default pretraining), "config": the task's config dict,
    "metrics_path", "checkpoint_root" (standalone), "env", "step_hooks"}.
    """
    import deepspeed

    for key, value in job.get("env", {}).items():
        os.environ.setdefault(key, value)
    metrics_path = job.get("metrics_path")
    # Callables run on every rank before each optimizer step: hook(step, rank, run_dir), where
    # step counts the steps done so far and run_dir holds metrics.jsonl (None if not logging).
    step_hooks = job.get("step_hooks", ())
    run_dir = Path(metrics_path).parent if metrics_path else None
    task = load_task(job.get("task", PRETRAIN), job["config"], str(run_dir) if run_dir else None)
    stop_file = run_dir / STOP_FILE if run_dir else None
    if stop_file and stop_file.exists():  # a restart after a stop: fail again at once
        raise NonFiniteLoss(stop_file.read_text())
    cfg = task.cfg
    under_ray = not job.get("standalone") and _under_ray_train()  # standalone never imports Ray
    device = _device(cfg)
    threads = cfg.train.threads or max(1, int(cfg.scaling.cpus_per_worker))
    if device.type == "cpu":
        torch.set_num_threads(threads)
    rank, world = _init_distributed(device)
    precision = cfg.precision_on(device.type)
    ckpts = RayCheckpoints() if under_ray else LocalCheckpoints(job["checkpoint_root"], cfg.run.num_to_keep)
    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank and every restart

    train, val = task.examples()
    order = GlobalOrder(len(train), task.order_seed)
    global_batch, accum = cfg.global_batch(world), cfg.grad_accum(world)

    with contextlib.ExitStack() as stack:
        resume = _resume_source(ckpts.latest(), stack, global_batch, world, cfg.train.zero_stage)
        model = task.build_model()
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

    tokens_per_step = global_batch * task.tokens_per_example()
    model_cfg = task.model_config
    fpt = flops_per_token(model_cfg, task.tokens_per_example())
    peak, peak_source = peak_flops(device, precision)
    log = MetricsLog(metrics_path, rank, under_ray, tensorboard=cfg.run.tensorboard,
                     extra=tuple(f"{m}" for m in task.metric_names) + tuple(f"val_{m}" for m in task.metric_names))
    if rank == 0:
        print(f"{task.name}: model {count_parameters(model_cfg) / 1e6:.2f}M params, {fpt / 1e6:.1f} MFLOPs/token; "
              f"{len(train)} examples; world {world}, global batch {global_batch} = {cfg.train.micro_batch_size} "
              f"x {accum} accum x {world}; {precision}; peak {peak / 1e12:.2f} TFLOP/s per worker ({peak_source})",
              flush=True)

    names = ("loss", *task.metric_names)
    last: dict[str, Any] = {}
    window_start, tokens_since = time.perf_counter(), 0
    window = torch.zeros(len(names) + 1, dtype=torch.float64)  # local sums, then the weight
    grad_norm = float("nan")  # of the last optimizer step
    while step < cfg.train.max_steps:
        for hook in step_hooks:
            hook(step, rank, run_dir)
        micro = rank_micro_batches(order, step, global_batch, rank, world, accum)
        step_weight = torch.tensor([sum(train.weight(idx) for idx in micro)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(step_weight)
        scale = accum * world / float(step_weight)  # engine.backward divides by accum, DeepSpeed averages ranks
        step_sums = torch.zeros(len(names), dtype=torch.float64)
        for idx in micro:
            loss_sum, metrics = task.loss(engine, _to_device(train.batch(idx), device))
            engine.backward(loss_sum * scale)
            norm = engine_step(engine)
            grad_norm = grad_norm if norm is None else norm
            step_sums += torch.tensor([float(loss_sum.detach()), *(float(metrics[m]) for m in task.metric_names)],
                                      dtype=torch.float64)
        local_ok = math.isfinite(float(step_sums[0]))
        finite = torch.tensor([float(local_ok)], device=device)
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not finite.item():
            reason = f"{task.name}: non-finite loss at step {step + 1} on another worker"
            if not local_ok:
                names_of = getattr(train, "ids", None)
                ids = [x for idx in micro for x in (names_of(idx) if names_of else [int(i) for i in idx])]
                reason = (f"{task.name}: non-finite loss at step {step + 1} (worker {rank}, examples "
                          f"{ids[:16]}{' ...' if len(ids) > 16 else ''}); stopped without saving, the last "
                          f"checkpoint is kept (lower optim.lr, check the data)")
                if stop_file:
                    stop_file.write_text(reason + "\n")
            raise NonFiniteLoss(reason)
        step += 1
        window[:-1] += step_sums
        window[-1] += float(step_weight)
        tokens_since += tokens_per_step

        log_now = step % cfg.train.log_every == 0 or step == cfg.train.max_steps
        eval_now = bool(val) and ((cfg.train.eval_every and step % cfg.train.eval_every == 0)
                                  or (step == cfg.train.max_steps and (cfg.train.eval_every or task.eval_at_end)))
        ckpt_now = step == cfg.train.max_steps or (cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0)
        if not (log_now or eval_now or ckpt_now):
            continue
        sums = window[:-1].to(device)
        torch.distributed.all_reduce(sums)
        means = (sums.cpu() / window[-1]).tolist()
        elapsed = time.perf_counter() - window_start
        tokens_per_s = tokens_since / elapsed
        row = {
            "step": step, **dict(zip(names, means)), "lr": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_worker": tokens_per_s / world,
            "mfu": fpt * tokens_per_s / world / peak, "tokens_seen": step * tokens_per_step,
            "samples_seen": step * global_batch, "time": time.time(),
        }
        if eval_now:
            row.update(_evaluate(engine, task, val, cfg, rank, world, device, names))
        log.write(row)
        if rank == 0 and log_now:
            extra = "".join(f" {m} {row[m]:.4f}" for m in task.metric_names)
            print(f"step {step}/{cfg.train.max_steps} loss {row['loss']:.4f}{extra} lr {row['lr']:.2e} "
                  f"grad_norm {row['grad_norm']:.3f} tok/s {tokens_per_s:,.0f} mfu {row['mfu']:.3f}"
                  + (f" val_loss {row['val_loss']:.4f}" if "val_loss" in row else ""), flush=True)
        meta = {"step": step, "samples_seen": step * global_batch, "global_batch": global_batch,
                "world_size": world, "zero_stage": cfg.train.zero_stage, "model": model_cfg.model_dump(),
                "task": task.name, "model_kind": task.model_kind, **task.meta()}
        # Rows go to metrics.jsonl and the metrics endpoint; only checkpoints go through
        # ray.train.report. Ray Train holds one unconsumed report per worker and its controller
        # takes one per poll (every 0.5 s, training.trainer.POLL_INTERVAL_S), so a report per logged
        # step would stall training.
        if ckpt_now:
            ckpts.save(engine, meta, row, rank)
        last = row
        window_start, tokens_since = time.perf_counter(), 0
        window.zero_()

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


def engine_step(engine) -> float | None:
    """`engine.step()`; at a gradient-accumulation boundary returns the global gradient norm
    before clipping (None elsewhere). DeepSpeed keeps that norm (`get_global_grad_norm`) under
    ZeRO 1-3 and mixed precision; under ZeRO-0 in fp32 it clips with it and drops it, so there it
    is taken here, from the gradients `engine.backward` has already all-reduced."""
    boundary = engine.is_gradient_accumulation_boundary()
    own = None
    if boundary and engine.zero_optimization_stage() == 0 and not (engine.fp16_enabled() or engine.bfloat16_enabled()):
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        own = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    engine.step()
    if not boundary:
        return None
    if own is not None:
        return own
    norm = engine.get_global_grad_norm()
    return float("nan") if norm is None else float(norm.item() if torch.is_tensor(norm) else norm)
