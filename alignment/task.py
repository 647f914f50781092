"""What SFT, the reward model and DPO share as training tasks (`training.task.TrainTask`): the
prepared examples, the starting weights, LoRA, and the checkpoint metadata."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alignment.examples import TokenizedExamples, read_prepared
from training.task import TrainTask


class AlignTask(TrainTask):
    eval_coverage = "all"  # held-out accuracy over every held-out pair, once
    eval_at_end = True
    split_extra: dict[str, dict[str, dict[str, float]]] = {}

    def __init__(self, config, run_dir: str | None = None):
        super().__init__(config, run_dir)
        self.prepared = read_prepared(run_dir)
        self._source = None

    @property
    def source(self):
        if self._source is None:
            from training.sources import resolve_model

            self._source = resolve_model(self.cfg.model)
        return self._source

    @property
    def model_config(self):
        return self.source.config

    @property
    def order_seed(self) -> int:
        return self.cfg.data.seed

    def tokens_per_example(self) -> int:
        return max(1, int(round(self.prepared.record["mean_tokens"])))

    def pad_id(self) -> int:
        from training.chat import ChatTokenizer

        return ChatTokenizer.from_file(self.prepared.record["tokenizer"]).pad_id

    def examples(self):
        pad = self.pad_id()
        extra = self.split_extra_columns()
        train = TokenizedExamples(self.prepared.directory / "train.parquet", pad, extra.get("train"))
        val = None
        if self.prepared.record["examples"]["val"]:
            val = TokenizedExamples(self.prepared.directory / "val.parquet", pad, extra.get("val"))
        return train, val

    def split_extra_columns(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per split, {column: {example id: value}} joined onto the examples (DPO's reference)."""
        return {}

    def build_model(self) -> torch.nn.Module:
        model = self.source.build(self.model_kind).train()
        if self.cfg.lora.enabled:
            model = wrap_lora(model, self.cfg.lora.peft_kwargs())
        return model

    def meta(self) -> dict[str, Any]:
        return {"tokenizer": self.prepared.record["tokenizer"], "start": str(Path(self.cfg.model)),
                "lora": self.cfg.lora.peft_kwargs() if self.cfg.lora.enabled else None}


def wrap_lora(model: torch.nn.Module, peft_kwargs: dict[str, Any]) -> torch.nn.Module:
    """peft's LoRA on our module: the base weights frozen, adapters on the named projections."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(**peft_kwargs))
