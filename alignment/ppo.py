"""PPO's part of an RL step (the driver, `alignment.rl_driver`, does the rest; the interface is
described in `alignment.grpo`): per-token rewards = −kl_coef · KL(policy ‖ reference) with the
reward model's score added on the last completion token, GAE over the critic's values, whitened
advantages (TRL's PPOTrainer, OpenRLHF)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from alignment.pg_losses import gae, kl_estimate, whiten

needs_values = True


def needs_old_logp(cfg) -> bool:
    return True  # the KL penalty and the update epochs need the rollout policy's log-probs


def select(rewards: torch.Tensor, cfg) -> tuple[list[int], None, dict[str, Any], dict[str, int]]:
    return [i for i in range(len(rewards)) if not torch.isnan(rewards[i])], None, {}, {}


def advantages(adv: None, keep: list[int], scores: torch.Tensor, arrays: dict[str, np.ndarray], m: np.ndarray, cfg,
               values: np.ndarray | None = None) -> dict[str, float]:
    mask = torch.from_numpy(m)
    kl = torch.zeros(m.shape)
    if "ref_logp" in arrays:
        kl = kl_estimate(torch.from_numpy(arrays["old_logp"]), torch.from_numpy(arrays["ref_logp"]),
                         cfg.kl_estimator) * mask
    token_rewards = -cfg.kl_coef * kl
    last = mask.cumsum(1).argmax(1)  # the last completion token of each row
    token_rewards[torch.arange(len(scores)), last] += scores.float()
    adv_t, returns = gae(token_rewards, torch.from_numpy(values), mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv_t = whiten(adv_t, mask)
    arrays.update(advantages=adv_t.numpy().astype(np.float32), returns=returns.numpy().astype(np.float32),
                  old_values=(values * m).astype(np.float32))
    return {"non_score_reward": float(token_rewards.sum(1).mean() - scores.float().mean()),
            "value_mean": float((values * m).sum() / m.sum())}


def aggregation(cfg) -> str:
    return "token-mean"  # TRL's masked mean over the batch
