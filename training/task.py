"""What a training job trains, as seen by the one loop in `training/loop.py`.

A `TrainTask` builds the model, names the examples and computes the loss of a micro-batch;
the loop does everything else alike for every job (DeepSpeed, accumulation, clipping, the
schedule, checkpoints and exact resume, metrics, NaN checks). Pretraining is `PretrainTask`
below; SFT, the reward model and DPO are tasks in `alignment/`, named in the job by import
path ("alignment.dpo:DPOTask") so that `training` never imports `alignment`.

Normalisation: `loss` returns a SUM over the micro-batch and `Examples.weight` says how many
units (tokens, pairs) a micro-batch holds. The loop divides by the weight of the whole
optimizer step over every worker, so accumulation and the worker count never change the
gradient (averaging per-micro-batch means would over-weight short micro-batches).
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from training.config import PretrainConfig, TrainJobConfig


class Examples(Protocol):
    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]: ...

    def weight(self, indices: Sequence[int]) -> float: ...


class TrainTask:
    config_class: type[TrainJobConfig] = TrainJobConfig
    name = "train"
    model_kind = "causal_lm"
    # Metrics (besides the loss) the task sums per micro-batch; the loop divides them by the
    # step's weight. Gauges on the Ray dashboard are made for these too.
    metric_names: tuple[str, ...] = ()
    # Validation: "sample" = `train.eval_batches` micro-batches per worker (pretraining's
    # estimate of a large held-out stream); "all" = every held-out example exactly once.
    eval_coverage = "sample"
    # Validate after the last step even when `train.eval_every` is 0 (0 then means "only then").
    eval_at_end = False

    def __init__(self, config: dict[str, Any] | TrainJobConfig, run_dir: str | None = None):
        self.cfg = config if isinstance(config, TrainJobConfig) else self.config_class.model_validate(config)
        self.run_dir = run_dir

    @property
    def model_config(self):
        raise NotImplementedError

    @property
    def order_seed(self) -> int:
        return 0

    def tokens_per_example(self) -> int:
        """For tokens/s and MFU: tokens one example feeds through the model (an upper bound)."""
        raise NotImplementedError

    def examples(self) -> tuple[Examples, Examples | None]:
        raise NotImplementedError

    def build_model(self) -> torch.nn.Module:
        """The model with its starting weights (called after the seed is set)."""
        raise NotImplementedError

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(summed loss, {metric: summed value}) of one micro-batch."""
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        """Extra fields for every checkpoint's llmforge.json (model kind, LoRA, tokenizer)."""
        return {}


class PretrainTask(TrainTask):
    """Next-token prediction on packed windows of token shards."""

    config_class = PretrainConfig
    name = "pretrain"

    @property
    def model_config(self):
        return self.cfg.model

    @property
    def order_seed(self) -> int:
        return self.cfg.data.seed

    def tokens_per_example(self) -> int:
        return self.cfg.data.seq_len

    def examples(self):
        from training.data import split_train_val

        d = self.cfg.data
        train, val = split_train_val(d.shards, d.seq_len, d.val_fraction, d.val_shards)
        return _WindowExamples(train), (_WindowExamples(val) if val else None)

    def build_model(self):
        from training.model import Llama

        return Llama(self.cfg.model)

    def loss(self, model, batch):
        _, loss = model(batch["x"], batch["y"])
        return loss * batch["y"].numel(), {}

    def meta(self):
        return {"data": self.cfg.data.model_dump(), "tokenizer": self.cfg.data.tokenizer}


class _WindowExamples:
    def __init__(self, windows):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def batch(self, indices):
        x, y = self.windows.batch(indices)
        return {"x": x, "y": y}

    def weight(self, indices) -> float:
        return float(len(indices) * self.windows.seq_len)


def load_task(path: str, config: dict[str, Any], run_dir: str | None = None) -> TrainTask:
    """The task class at "package.module:Class", built from its config dict."""
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, TrainTask)):
        raise TypeError(f"{path} is not a TrainTask")
    return cls(config, run_dir)


PRETRAIN = "training.task:PretrainTask"
