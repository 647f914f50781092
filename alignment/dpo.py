"""Direct preference optimisation: sigmoid (optionally label-smoothed), IPO and robust losses
on the policy's and the reference's summed completion log-probs (`alignment.losses.dpo_loss`).

The reference's log-probs come precomputed (`alignment.reference`: a Ray Data pass cached as
Parquet, joined here by example id) or, with `reference_mode: live`, from the base weights
with LoRA adapters disabled, else from a frozen copy of the starting model.
"""
from __future__ import annotations

import contextlib
import sys

import torch

from alignment.config import DPOConfig
from alignment.losses import dpo_loss, dpo_metrics, sequence_logprobs
from alignment.task import AlignTask

METRICS = ("accuracy", "chosen", "rejected", "margin")


def pair_logprobs(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed completion log-probs and completion token counts, both sides
    in one forward."""
    n = batch["chosen_ids"].shape[0]
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    logps, counts = sequence_logprobs(model(ids), ids, mask)
    return logps[:n], logps[n:], counts[:n], counts[n:]


class DPOTask(AlignTask):
    config_class = DPOConfig
    name = "dpo"
    metric_names = METRICS

    def __init__(self, config, run_dir=None):
        super().__init__(config, run_dir)
        self._reference = None

    def split_extra_columns(self):
        if self.cfg.reference_mode != "precomputed":
            return {}
        from alignment.reference import read_reference_logps

        return read_reference_logps(self.run_dir)

    def _live_reference(self, model, batch):
        """Reference log-probs in the loop: adapters off (LoRA) or a frozen copy."""
        with torch.no_grad():
            if self.cfg.lora.enabled:
                peft_model = getattr(model, "module", model)
                with peft_model.disable_adapter():
                    return pair_logprobs(model, batch)[:2]
            if self._reference is None:
                from training.sources import resolve_model

                source = resolve_model(self.cfg.reference or self.cfg.model)
                device = batch["chosen_ids"].device
                with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's reader talks on stdout
                    self._reference = source.build("causal_lm", str(device)).eval()
            return pair_logprobs(self._reference, batch)[:2]

    def loss(self, model, batch):
        pc, pr, nc, nr = pair_logprobs(model, batch)
        if self.cfg.reference_mode == "precomputed":
            rc, rr = batch["ref_chosen"].to(pc.dtype), batch["ref_rejected"].to(pc.dtype)
        else:
            rc, rr = self._live_reference(model, batch)
        losses, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta=self.cfg.beta, loss_type=self.cfg.loss_type,
                                                label_smoothing=self.cfg.label_smoothing, chosen_len=nc,
                                                rejected_len=nr)
        metrics = dpo_metrics(chosen_r, rejected_r)
        return losses.sum(), {k: metrics[k] for k in METRICS}
