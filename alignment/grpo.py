"""GRPO's part of an RL step (the driver, `alignment.rl_driver`, does the rest): group-relative
advantages, groups without signal left out and counted, the loss aggregation of the config.

Every algorithm module gives the driver the same four things:
    select(rewards, cfg)            -> (sample indices to train on, per-sample advantages or None,
                                        metrics for the step's row, counters to add)
    needs_values / needs_old_logp   whether the step needs the critic's values / the policy's
                                    log-probs before the update
    advantages(...)                 -> per-token arrays for the trainers, and metrics
    aggregation(cfg)                how the policy loss is normalised (`alignment.pg_losses`)
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from alignment.pg_losses import group_advantages

needs_values = False


def needs_old_logp(cfg) -> bool:
    return cfg.train.update_epochs > 1  # with one update per batch, old = current, detached


def select(rewards: torch.Tensor, cfg) -> tuple[list[int], torch.Tensor, dict[str, Any], dict[str, int]]:
    """`rewards` (N,) in groups of `group_size`, NaN where unscored."""
    adv, constant = group_advantages(rewards, cfg.group_size, cfg.advantage_scale)
    keep_group = ~constant if cfg.filter_constant_groups else torch.ones_like(constant)
    keep = [i for i in range(len(rewards)) if not torch.isnan(rewards[i]) and keep_group[i // cfg.group_size]]
    n_constant = int(constant.sum())
    return keep, adv, {"constant_groups": n_constant}, {"groups": len(constant), "constant_groups": n_constant}


def advantages(adv: torch.Tensor, keep: list[int], scores: torch.Tensor, arrays: dict[str, np.ndarray],
               m: np.ndarray, cfg, values: np.ndarray | None = None) -> dict[str, float]:
    """The sequence's advantage on each of its completion tokens (arrays["advantages"])."""
    arrays["advantages"] = adv[keep].numpy().astype(np.float32)[:, None] * m
    return {}


def aggregation(cfg) -> str:
    return cfg.loss_aggregation
