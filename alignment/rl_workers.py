"""The actors of online RL, one class per group; `alignment.rl_driver` creates them as Ray actors
in a placement group and is the only one that calls them.

    PolicyTrainer / CriticTrainer   one rank each of a DeepSpeed data-parallel group (gloo or NCCL
                                    process group among the ranks): forward passes for old
                                    log-probs / values, clipped updates, weight export, checkpoints
    Rollout                         KV-cache generation (`training.generate.generate`) with the
                                    weights of one policy version
    Reference                       the frozen starting policy's per-token log-probs
    Reward                          `alignment.rewards.RewardScorer` over a reward model (a reward
                                    function runs in the driver)

Batches travel as dicts of numpy arrays: `ids` (B, L) prompt + completion, right-padded; `mask`
(B, L) 1 on completion tokens; per-token arrays (B, L - 1) aligned with `ids[:, 1:]` (the token
each position predicts).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import numpy as np
import torch

from alignment.losses import selected_logprobs
from alignment.pg_losses import (aggregate, clipped_policy_loss, clipped_value_loss, entropy_sum,
                                 kl_estimate)


def _tensors(batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v)).to(device) for k, v in batch.items()}  # Ray hands read-only arrays


def _set_threads(threads: int) -> None:
    torch.set_num_threads(max(1, int(threads)))


def _quiet_build(source, kind: str, device: str):
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's checkpoint reader talks on stdout
        return source.build(kind, device)


def policy_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token log-probs (B, L-1) of the completion tokens under softmax(logits / temperature),
    0 elsewhere; the scaled logits (n completion tokens, V) they came from). The LM head runs only
    at the positions that predict a completion token."""
    scored = mask[:, 1:].bool()
    select = torch.zeros_like(mask, dtype=torch.bool)
    select[:, :-1] = scored
    logits = model(ids, select=select) / temperature
    picked = selected_logprobs(logits, ids[:, 1:][scored])
    per_token = picked.new_zeros(scored.shape).masked_scatter(scored, picked)
    return per_token, logits


class TrainerWorker:
    """One rank of a DeepSpeed trainer group. role "policy" trains a causal LM with the clipped
    policy objective; role "critic" trains a value head (`training.model.RewardModel`)."""

    role = "policy"

    def __init__(self, algorithm: str, config: dict[str, Any], rank: int, world: int, threads: int,
                 env: dict[str, str]):
        from alignment.rl_driver import config_class

        for key, value in env.items():
            os.environ.setdefault(key, value)
        self.cfg = config_class(algorithm).model_validate(config)
        self.algorithm, self.rank, self.world = algorithm, rank, world
        _set_threads(threads)
        self.engine = None
        self.store = None
        self.version = 0
        self.inference = None  # ZeRO-3 hybrid: a full copy of the partitioned weights to generate with

    def address(self) -> tuple[str, int]:
        """Rank 0: open the group's rendezvous store on a port of its own choosing; where it is."""
        import ray

        from training.loop import rendezvous_store

        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        self.store = rendezvous_store(host, 0, self.world, True)
        return host, self.store.port

    def pid(self) -> int:
        return os.getpid()

    def _source(self):
        from training.sources import resolve_model

        if self.role == "policy":
            return resolve_model(self.cfg.model), "causal_lm"
        start = self.cfg.critic or self.cfg.reward.model or self.cfg.model
        return resolve_model(start), "reward"

    def setup(self, master_addr: str, master_port: int, resume_dir: str | None) -> str:
        """Join the group, build the engine, load `resume_dir` (a checkpoint) if given."""
        import deepspeed

        from training.checkpoint import DS_DIR, TAG
        from training.loop import _device, _init_distributed, deepspeed_config, param_groups, rendezvous_store
        from training.schedule import lr_factor

        os.environ.update({"RANK": str(self.rank), "WORLD_SIZE": str(self.world), "LOCAL_RANK": "0",
                           "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
        self.device = _device(self.cfg)
        store = self.store or rendezvous_store(master_addr, master_port, self.world, self.rank == 0)
        _init_distributed(self.device, store)
        torch.manual_seed(self.cfg.train.seed)
        source, kind = self._source()
        model = _quiet_build(source, kind, "cpu").train()
        lr = self.cfg.optim.lr if self.role == "policy" else (self.cfg.critic_lr or self.cfg.optim.lr)
        optimizer = torch.optim.AdamW(param_groups(model, self.cfg.optim.weight_decay), lr=lr,
                                      betas=(self.cfg.optim.beta1, self.cfg.optim.beta2), eps=self.cfg.optim.eps)
        total = self.cfg.train.max_steps * self.cfg.train.update_epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, self.cfg.optim))
        self.precision = self.cfg.precision_on(self.device.type)
        ds = deepspeed_config(self.cfg, self.world, self.precision)
        self.accum = self.cfg.accumulation(self.world)
        ds["gradient_accumulation_steps"] = self.accum
        ds["train_batch_size"] = self.cfg.train.micro_batch_size * self.accum * self.world
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=ds)
        if self.role == "policy" and self.cfg.placement.hybrid and self.cfg.train.zero_stage == 3:
            self.inference = _quiet_build(source, kind, self.device.type).eval()
        if resume_dir:
            from training.safe_load import weights_only_loading

            with weights_only_loading(), contextlib.redirect_stdout(sys.stderr):
                path, _ = self.engine.load_checkpoint(os.path.join(resume_dir, DS_DIR), tag=TAG,
                                                      load_module_strict=True)
            if path is None:
                raise RuntimeError(f"DeepSpeed found no checkpoint in {resume_dir}")
        return f"{self.role} rank {self.rank}/{self.world}: {self.precision} on {self.device}"

    # ------------------------------------------------------------------ forward passes

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.role == "policy":
            return policy_logprobs(self.engine, batch["ids"], batch["mask"], self.cfg.rollout.temperature)[0]
        return self.engine(batch["ids"])[:, :-1].float()

    def score(self, micro_batches: list[dict[str, np.ndarray]]) -> list[np.ndarray | None]:
        """Per-token log-probs (policy) or values (critic), (B, L-1) float32 per micro-batch, no
        gradient; None for an empty one (which still runs a forward: ZeRO-3 gathers need every rank)."""
        out = []
        self.engine.eval()
        with torch.no_grad():
            for micro in micro_batches:
                empty = not len(micro.get("ids", ()))
                values = self._forward(_tensors(_dummy() if empty else micro, self.device)).float().cpu().numpy()
                out.append(None if empty else values)
        self.engine.train()
        return out

    # ------------------------------------------------------------------ updates

    def update(self, micro_batches: list[dict[str, np.ndarray]], denominator: float,
               version: int | None = None) -> dict[str, float]:
        """One optimizer step over this rank's `self.accum` micro-batches (empty ones allowed):
        each micro-batch's loss numerator is divided by `denominator`, the step's total over
        every micro-batch of every rank (pg_losses: normalised once, not per micro-batch).
        `version`: the weights after the step are that policy version (`set_version`)."""
        from training.loop import engine_step

        if len(micro_batches) != self.accum:
            raise ValueError(f"{len(micro_batches)} micro-batches for an accumulation of {self.accum}")
        sums: dict[str, float] = {}
        for micro in micro_batches:
            empty = not len(micro.get("ids", ()))
            batch = _tensors(_dummy() if empty else micro, self.device)
            numerator, metrics = self._loss(batch)
            scale = 0.0 if empty else self.accum * self.world / denominator  # engine: / accum, mean over ranks
            self.engine.backward(numerator * scale)
            norm = engine_step(self.engine)
            if not empty:
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        sums["grad_norm"] = float("nan") if norm is None else norm
        if version is not None:
            self.set_version(version)
        return sums

    def _loss(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        m = b["mask"][:, 1:].float()
        if self.role == "critic":
            values = self.engine(b["ids"])[:, :-1].float()
            per_token, clipped = clipped_value_loss(values, b["old_values"], b["returns"], cfg.cliprange_value)
            numerator, _ = aggregate(per_token * cfg.vf_coef, m, "token-mean")
            return numerator, {"value_loss": (per_token * m).sum().detach(), "value_clipped": (clipped * m).sum(),
                               "value_tokens": m.sum()}
        logp, logits = policy_logprobs(self.engine, b["ids"], b["mask"], cfg.rollout.temperature)
        old = b["old_logp"] if "old_logp" in b else logp.detach()
        if self.algorithm == "grpo":
            eps_low, eps_high, mode = cfg.eps_low, cfg.eps_high, cfg.loss_aggregation
        else:
            eps_low = eps_high = cfg.cliprange
            mode = "token-mean"
        per_token, metrics = clipped_policy_loss(logp, old, b["advantages"], m, eps_low, eps_high)
        if self.algorithm == "grpo" and cfg.kl_coef > 0:
            kl = kl_estimate(logp, b["ref_logp"], "k3")
            per_token = per_token + cfg.kl_coef * kl
            metrics["kl_loss"] = (kl.detach() * m).sum()
        numerator, _ = aggregate(per_token, m, mode, cfg.rollout.max_new_tokens)
        metrics["policy_loss"] = (per_token.detach() * m).sum()
        metrics["entropy"] = entropy_sum(logits)  # the completion positions' logits only
        return numerator, metrics

    # ------------------------------------------------------------------ generation (hybrid)

    def set_version(self, version: int) -> int:
        """The weights now are policy `version`. Under ZeRO-3 every rank must call this: the
        generation copy is refreshed from the gathered partitions."""
        import deepspeed

        if self.inference is not None:
            module = self.engine.module
            with torch.no_grad(), deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                mine = dict(self.inference.named_parameters())
                for name, param in module.named_parameters():
                    mine[name].copy_(param.data)
        self.version = version
        return version

    def _generating_model(self):
        return self.inference if self.inference is not None else self.engine.module

    def weights_digest(self) -> str:
        """Which weights this rank generates with (hybrid), as `Rollout.weights_digest`."""
        return state_digest(self._generating_model().state_dict())

    def generate(self, prompts: list[list[int]], seeds: list[int], sampling: dict[str, Any], pad_id: int,
                 batch_size: int) -> dict[str, Any]:
        """The hybrid engine: this rank generates with the weights it trains (`Rollout.generate`;
        `training.generate.generate` puts the module in eval mode and back)."""
        return generate_rollouts(self._generating_model(), self.version, prompts, seeds, sampling, pad_id,
                                 batch_size)

    # ------------------------------------------------------------------ weights and checkpoints

    def update_and_export(self, micro_batches: list[dict[str, np.ndarray]], denominator: float):
        """`update`, then `weights()`: (metrics, weights) as two results (call with num_returns=2)
        so the driver can pass the weights on to the rollout actors without a round trip."""
        return self.update(micro_batches, denominator), self.weights()

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The full weights on rank 0 (None elsewhere). Under ZeRO-3 every rank must call this:
        the partitions are gathered first."""
        import deepspeed

        module = self.engine.module
        if self.cfg.train.zero_stage == 3:
            ctx = deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            if self.rank != 0:
                return None
            state, seen = {}, set()
            for key, value in module.state_dict().items():
                if value.data_ptr() in seen:  # a tied weight (lm_head = embeddings) travels once
                    continue
                seen.add(value.data_ptr())
                state[key] = value.detach().float().cpu().clone()
            return state

    def save(self, directory: str, meta: dict[str, Any]) -> None:
        """Every rank writes its part of `directory` (training.checkpoint layout); rank 0 the meta."""
        from training.checkpoint import save_to

        with contextlib.redirect_stdout(sys.stderr):
            save_to(directory, self.engine, meta, self.rank)


class PolicyTrainer(TrainerWorker):
    role = "policy"


class CriticTrainer(TrainerWorker):
    role = "critic"


def _dummy() -> dict[str, np.ndarray]:
    """A one-row batch with nothing to score: a rank without sequences still runs the forward
    and backward every other rank runs (ZeRO's collectives need all of them)."""
    return {"ids": np.zeros((1, 2), dtype=np.int64), "mask": np.zeros((1, 2), dtype=np.int64),
            **{k: np.zeros((1, 1), dtype=np.float32) for k in ("advantages", "old_logp", "ref_logp",
                                                              "old_values", "returns")}}


class Rollout:
    """Generates with the weights of one policy version; `set_weights` installs the next."""

    def __init__(self, model_path: str, threads: int, device: str = "cpu"):
        from training.sources import resolve_model

        _set_threads(threads)
        self.device = device
        self.model = _quiet_build(resolve_model(model_path), "causal_lm", device)
        self.version = 0

    def pid(self) -> int:
        return os.getpid()

    def weights_digest(self) -> str:
        return state_digest(self.model.state_dict())

    def set_weights(self, state: dict[str, torch.Tensor], version: int) -> int:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        own = self.model.state_dict()
        sent = {own[k].data_ptr() for k in state}
        untied = [k for k in missing if own[k].data_ptr() not in sent]  # a tied alias is loaded with its twin
        if untied or unexpected:
            raise RuntimeError(f"weights of version {version} do not fit the rollout model: missing {untied}, "
                               f"unexpected {unexpected}")
        self.version = version
        return version

    def generate(self, prompts: list[list[int]], seeds: list[int], sampling: dict[str, Any], pad_id: int,
                 batch_size: int) -> dict[str, Any]:
        return generate_rollouts(self.model, self.version, prompts, seeds, sampling, pad_id, batch_size)


def generate_rollouts(model, version: int, prompts: list[list[int]], seeds: list[int], sampling: dict[str, Any],
                      pad_id: int, batch_size: int) -> dict[str, Any]:
    """{"tokens", "finish"} for each prompt, in order, with the policy `version` that made them and
    the seconds it took; shortest prompts batched together (less left padding)."""
    import time

    from training.generate import SamplingParams, generate

    start = time.perf_counter()
    params = SamplingParams.model_validate(sampling)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    tokens, finish = [None] * len(prompts), [None] * len(prompts)
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        out = generate(model, [prompts[i] for i in rows], params, pad_id=pad_id, row_seeds=[seeds[i] for i in rows])
        for i, g in zip(rows, out):
            tokens[i], finish[i] = g.tokens, g.finish_reason
    return {"tokens": tokens, "finish": finish, "version": version, "seconds": time.perf_counter() - start}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the weights' names and float32 bytes: which weights an actor holds."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode() + b"\0" + state[key].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Reference:
    """The starting policy, frozen: per-token log-probs of sampled completions."""

    def __init__(self, model_path: str, threads: int, temperature: float, device: str = "cpu"):
        from training.sources import resolve_model

        _set_threads(threads)
        self.device, self.temperature = device, temperature
        self.model = _quiet_build(resolve_model(model_path), "causal_lm", device)

    def pid(self) -> int:
        return os.getpid()

    def score(self, batch: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(batch["ids"]), batch_size):
                part = _tensors({k: batch[k][s:s + batch_size] for k in ("ids", "mask")}, self.device)
                out.append(policy_logprobs(self.model, part["ids"], part["mask"], self.temperature)[0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class Reward:
    """`alignment.rewards.RewardScorer` in an actor (a reward model loads once)."""

    def __init__(self, function: str | None, model: str | None, threads: int, device: str = "cpu"):
        from alignment.rewards import RewardScorer

        _set_threads(threads)
        self.scorer = RewardScorer(function, model, device)

    def pid(self) -> int:
        return os.getpid()

    def score(self, prompts, completions, rows, batch_size: int):
        return self.scorer.score(prompts, completions, rows, batch_size)
