"""Reward model: the LM trunk with a scalar head, trained on preference pairs with the
Bradley-Terry loss −log σ(r_c − r_r − margin) (+ TRL's reward centring). Held-out pairwise
accuracy is its validation metric."""
from __future__ import annotations

import torch

from alignment.config import RewardConfig
from alignment.losses import reward_loss
from alignment.task import AlignTask

METRICS = ("accuracy", "chosen", "rejected", "margin")


def pair_inputs(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected sides in one forward (TRL's concatenated forward)."""
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    return ids, torch.cat([batch["chosen_len"], batch["rejected_len"]])


class RewardTask(AlignTask):
    config_class = RewardConfig
    name = "reward"
    model_kind = "reward"
    metric_names = METRICS

    def loss(self, model, batch):
        ids, lengths = pair_inputs(batch)
        rewards = model(ids, lengths).float()
        n = batch["chosen_ids"].shape[0]
        margin = batch["margin"] if self.cfg.margin else None
        losses, metrics = reward_loss(rewards[:n], rewards[n:], margin=margin, center_coeff=self.cfg.center_coeff)
        return losses.sum(), {k: metrics[k] for k in METRICS}
