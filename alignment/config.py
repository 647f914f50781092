"""Configs of `llmforge align sft|reward|dpo`: the pretraining job's optimizer, loop, workers
and run (`training.config.TrainJobConfig`) plus where the weights and the data come from.

The defaults fine-tune a small model within a CPU test budget: one epoch, a short warmup,
a learning rate for fine-tuning rather than pretraining, validation on the held-out split at
the end. `train.max_steps` left unset means `epochs` passes over the training examples.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmforge.common.config import StrictModel
from training.config import LoopConfig, OptimConfig, TrainJobConfig


class AlignData(StrictModel):
    path: str = Field(description="the data file (.json, .jsonl, .jsonl.gz); format detected from its first row")
    format: str | None = Field(default=None, description="force a format: alpaca, messages, sharegpt (SFT); "
                               "pairs, sharegpt_pairs, hh (preferences)")
    val_fraction: float = Field(default=0.05, ge=0.0, lt=1.0, description="held out, chosen by hashing each row's id")
    max_len: int | None = Field(default=None, gt=8, description="tokens per example; None = the model's max_seq_len")
    truncation: Literal["truncate", "drop"] = Field(
        default="truncate", description="an example longer than max_len: truncate (SFT: cut the end; preferences: "
        "cut the prompt from the left so the replies stay whole) or drop; both counted")
    tokenizer: str | None = Field(default=None, description="tokenizer.json; None = the model's. Must be the "
                                  "model's own (checked by sha256)")
    seed: int = Field(default=0, description="order of the examples over epochs")


class LoraOptions(StrictModel):
    """Low-rank adapters by `peft` on our module; export merges them into the weights."""

    enabled: bool = False
    r: int = Field(default=8, gt=0)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"])

    def peft_kwargs(self) -> dict:
        return {"r": self.r, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": list(self.target_modules)}


class AlignLoop(LoopConfig):
    max_steps: int | None = Field(default=None, gt=0, description="optimizer steps; None = `epochs` passes")
    micro_batch_size: int = Field(default=4, gt=0, description="examples per worker per forward")
    log_every: int = Field(default=5, gt=0)
    eval_every: int = Field(default=0, ge=0, description="0 = validate at the end only")
    checkpoint_every: int = Field(default=50, ge=0, description="0 = only at the end")


class AlignOptim(OptimConfig):
    lr: float = Field(default=1e-4, gt=0)
    warmup_steps: int = Field(default=5, ge=0)
    weight_decay: float = Field(default=0.0, ge=0.0)


class AlignConfig(TrainJobConfig):
    model: str = Field(description="starting weights: an llmforge checkpoint or run directory, or a Hugging "
                       "Face LlamaForCausalLM directory")
    data: AlignData
    epochs: int = Field(default=1, gt=0, description="passes over the training examples when train.max_steps is unset")
    lora: LoraOptions = Field(default_factory=LoraOptions)
    optim: AlignOptim = Field(default_factory=AlignOptim)
    train: AlignLoop = Field(default_factory=AlignLoop)

    @model_validator(mode="after")
    def _loop(self):
        self._check_loop()
        return self


class SFTConfig(AlignConfig):
    packing: bool = Field(default=False, description="pack several examples into each max_len sequence")
    mask_boundaries: bool = Field(default=True, description="with packing: examples do not attend to each other "
                                  "and restart their positions")


class RewardConfig(AlignConfig):
    """Pairs of replies; the model is the trunk of `--model` plus a fresh scalar head (or a
    reward model to continue)."""

    margin: bool = Field(default=False, description="use each pair's `margin` field in the loss")
    center_coeff: float = Field(default=0.0, ge=0.0, description="TRL's center_rewards_coefficient: "
                                "coeff * mean((r_c + r_r)^2) keeps rewards centred on zero")
    optim: AlignOptim = Field(default_factory=lambda: AlignOptim(lr=3e-4))

    @model_validator(mode="after")
    def _no_lora(self):
        if self.lora.enabled:
            raise ValueError("lora.enabled: LoRA is offered for SFT and DPO; a reward model trains its head and "
                             "trunk in full")
        return self


class DPOConfig(AlignConfig):
    beta: float = Field(default=0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "robust"] = "sigmoid"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5, description="sigmoid: conservative DPO; "
                                   "robust: the assumed label-noise rate")
    reference: str | None = Field(default=None, description="reference model; None = the starting model")
    reference_mode: Literal["precomputed", "live"] = Field(
        default="precomputed", description="precomputed: log-probs computed once by a Ray Data pass and cached "
        "as Parquet (the reference is never in memory while training); live: computed in the loop — with "
        "LoRA from the base weights with adapters disabled, otherwise from a frozen copy")
    reference_batch_size: int = Field(default=8, gt=0, description="pairs per reference forward")
    reference_concurrency: int = Field(default=1, gt=0, description="reference model actors")
    optim: AlignOptim = Field(default_factory=lambda: AlignOptim(lr=5e-5))

    @model_validator(mode="after")
    def _reference(self):
        if self.reference_mode == "live" and self.reference and self.lora.enabled:
            raise ValueError("reference: with lora.enabled and reference_mode live the reference is the base "
                             "weights with adapters off; a separate reference model needs reference_mode precomputed")
        return self
