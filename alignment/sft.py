"""Supervised fine-tuning: next-token loss on the assistant's tokens only (multi-turn; prompt,
system and user tokens carry zero weight), optionally on packed sequences."""
from __future__ import annotations

from alignment.config import SFTConfig
from alignment.losses import sft_loss_sum
from alignment.task import AlignTask


class SFTTask(AlignTask):
    config_class = SFTConfig
    name = "sft"

    def loss(self, model, batch):
        logits = model(batch["ids"], segments=batch.get("segments"))
        loss_sum, _ = sft_loss_sum(logits, batch["ids"], batch["mask"])
        return loss_sum, {}
