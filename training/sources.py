"""Where a job's starting weights come from: `--model PATH` is an llmforge checkpoint, an
llmforge run directory (its latest checkpoint) or a Hugging Face Llama directory.

    source = resolve_model("runs/align/sft")
    source.config, source.kind, source.tokenizer_path, source.weights_hash()
    model = source.build()           # an fp32 module with the weights, in eval mode

`weights_hash` names the weights (a digest of the files that hold them), so caches computed
from a model (reference log-probs) can tell whether they were made by this one.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from llmforge.common.errors import UserError
from llmforge.shard_format import TOKENIZER_FILE
from training.model import ModelConfig, build_model

HF_CONFIG = "config.json"


@dataclass(frozen=True)
class ModelSource:
    path: Path  # the checkpoint directory or the HF directory
    format: Literal["llmforge", "hf"]
    config: ModelConfig
    kind: str  # "causal_lm" or "reward" (training.model.MODEL_KINDS)
    tokenizer_path: Path | None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """fp32 weights under `training.model` names (LoRA adapters merged)."""
        if self.format == "llmforge":
            from training.export import load_model_state

            return load_model_state(self.path)[1]
        from training.hf_import import load_hf_state

        return load_hf_state(self.path)[2]

    def build(self, kind: str | None = None, device: str = "cpu") -> torch.nn.Module:
        """The model with these weights. `kind` "reward" over a causal LM keeps the trunk and
        starts a fresh score head (a reward model initialised from the SFT policy)."""
        kind = kind or self.kind
        model = build_model(self.config, kind)
        state = self.state_dict()
        if kind != self.kind:
            state = {k: v for k, v in state.items() if k.startswith("model.")}
            fresh = model.state_dict()
            state = {**{k: v for k, v in fresh.items() if not k.startswith("model.")}, **state}
        model.load_state_dict(state)
        return model.to(device).eval()

    def weights_hash(self) -> str:
        """sha256 over the weight files' names and bytes (16 hex digits)."""
        h = hashlib.sha256()
        for f in _weight_files(self):
            h.update(f.relative_to(self.path).as_posix().encode() + b"\0")
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        return h.hexdigest()[:16]

    def tokenizer_sha256(self) -> str | None:
        if self.tokenizer_path is None:
            return None
        return hashlib.sha256(self.tokenizer_path.read_bytes()).hexdigest()


def _weight_files(source: ModelSource) -> list[Path]:
    if source.format == "llmforge":
        from training.checkpoint import DS_DIR

        # The module weights: every rank's model file and, for ZeRO, the fp32 partitions.
        # Optimizer moments change with training, but so do the weights, so hashing them too
        # costs time without telling two models apart any better; they are left out.
        files = sorted(p for p in (source.path / DS_DIR).rglob("*") if p.is_file() and "model_states" in p.name)
        files += sorted(p for p in (source.path / DS_DIR).rglob("*optim_states.pt"))
        return files
    return sorted(p for p in source.path.iterdir() if p.suffix in (".safetensors", ".bin"))


def resolve_model(path: str | os.PathLike) -> ModelSource:
    """The model at `path`; a UserError says what was expected when it is neither kind."""
    from training.checkpoint import META, latest_checkpoint, read_meta

    p = Path(path)
    if not p.exists():
        raise UserError(f"--model {p}: no such file or directory")
    from training.checkpoint import DS_DIR

    # An HF export carries llmforge.json too (provenance), but never a DeepSpeed directory.
    if (p / HF_CONFIG).exists() and not (p / DS_DIR).is_dir():
        from training.hf_import import read_hf_config

        cfg, kind = read_hf_config(p)
        tok = p / TOKENIZER_FILE
        return ModelSource(p, "hf", cfg, kind, tok if tok.exists() else None)
    ckpt = p if (p / META).exists() else latest_checkpoint(p)
    if ckpt is None:
        raise UserError(f"--model {p}: not an llmforge checkpoint ({META}), a run directory with checkpoint_* "
                        f"directories, or a Hugging Face directory ({HF_CONFIG})")
    meta = read_meta(str(ckpt))
    tok = ckpt / TOKENIZER_FILE
    return ModelSource(ckpt, "llmforge", ModelConfig.model_validate(meta["model"]),
                       meta.get("model_kind", "causal_lm"), tok if tok.exists() else None)


def load_for_inference(path: str | os.PathLike, device: str = "cpu", kind: str | None = None):
    """(model in eval mode, ChatTokenizer) for generation and scoring; the tokenizer must be
    next to the weights."""
    import contextlib
    import sys

    from training.chat import ChatTokenizer

    source = resolve_model(path)
    if source.tokenizer_path is None:
        raise UserError(f"--model {path}: no {TOKENIZER_FILE} next to the weights")
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's checkpoint reader talks on stdout
        model = source.build(kind, device)
    return model, ChatTokenizer.from_file(str(source.tokenizer_path))


def describe(source: ModelSource) -> dict:
    return {"path": str(source.path), "format": source.format, "kind": source.kind,
            "model": json.loads(source.config.model_dump_json())}
