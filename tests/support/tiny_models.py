"""A small pretrained base model for post-training tests and benchmarks, made in seconds.

`base_checkpoint(dir)` trains the byte-level BPE of the data pipeline on real text (tiny
Shakespeare + WikiText-2 when ../shared/data is here, else generated English), pretrains a
tiny Llama on it for a few hundred plain-torch steps and writes an llmforge checkpoint
(ZeRO-0 layout: llmforge.json + deepspeed/checkpoint/mp_rank_00_model_states.pt +
tokenizer.json) that every `--model` flag accepts. No DeepSpeed engine, no Ray: a fixture.
"""
from __future__ import annotations

import json
from pathlib import Path

VOCAB = 1024


def write_checkpoint(directory: Path, model, tokenizer_path: Path | None, step: int = 0, kind: str = "causal_lm") -> Path:
    """An llmforge checkpoint of a live model in the ZeRO-0 layout `training.export` reads."""
    import shutil

    import torch

    from training.checkpoint import DS_DIR, META, TAG

    tag = directory / DS_DIR / TAG
    tag.mkdir(parents=True, exist_ok=True)
    torch.save({"module": model.state_dict()}, tag / "mp_rank_00_model_states.pt")
    (directory / DS_DIR / "latest").write_text(TAG)
    if tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, directory / "tokenizer.json")
    meta = {"step": step, "samples_seen": 0, "global_batch": 1, "world_size": 1, "zero_stage": 0,
            "model": model.cfg.model_dump(), "model_kind": kind}
    (directory / META).write_text(json.dumps(meta))
    return directory


def base_checkpoint(directory: Path, steps: int = 300, seq_len: int = 128, seed: int = 0) -> Path:
    """Pretrain the tiny preset (dim 64, 2 layers) on packed windows; returns the checkpoint dir."""
    import numpy as np
    import torch

    from tests.support.text_shards import build_shards
    from training.data import split_train_val
    from training.model import Llama, ModelConfig

    directory = Path(directory)
    if (directory / "llmforge.json").exists():
        return directory
    shards, _ = build_shards(directory.parent / f"{directory.name}-shards", vocab_size=VOCAB)
    train, _ = split_train_val(str(shards), seq_len, 0.0)
    torch.manual_seed(seed)
    model = Llama(ModelConfig(preset="tiny", vocab_size=VOCAB, max_seq_len=256))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        x, y = train.batch(rng.integers(0, len(train), 16))
        _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return write_checkpoint(directory, model, shards / "tokenizer.json", step=steps)
