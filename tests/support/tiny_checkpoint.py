"""A tiny llmforge checkpoint made by hand (no DeepSpeed, no training): a random `Llama` and a
BPE tokenizer trained on generated text, in the layout `training.export.load_model_state`
reads for ZeRO stage 0:

    <dir>/llmforge.json                                          {"step": 0, "model": {...}}
    <dir>/deepspeed/checkpoint/mp_rank_00_model_states.pt        {"module": state_dict}
    <dir>/tokenizer.json

`base_checkpoint` is a small *pretrained* one for post-training tests and benchmarks: the data
pipeline's BPE on real text (tiny Shakespeare + WikiText-2 when ../shared/data is here, else
generated English) and the tiny preset pretrained for a few hundred plain-torch steps.
"""
from __future__ import annotations

import json
from pathlib import Path


def write_checkpoint(directory: Path, model, tokenizer_path: Path | None = None, step: int = 0,
                     kind: str = "causal_lm") -> Path:
    """`model`'s weights and config as a stage-0 checkpoint directory (with the tokenizer)."""
    import shutil

    import torch

    from llmforge.shard_format import TOKENIZER_FILE
    from training.checkpoint import DS_DIR, META, TAG

    tag_dir = directory / DS_DIR / TAG
    tag_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"module": model.state_dict()}, tag_dir / "mp_rank_00_model_states.pt")
    if tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, directory / TOKENIZER_FILE)
    (directory / META).write_text(json.dumps({"step": step, "model": model.cfg.model_dump(), "model_kind": kind}))
    return directory


def tiny_checkpoint(directory: Path, vocab_size: int = 400, max_seq_len: int = 64, seed: int = 0):
    """(checkpoint dir, the model in eval mode, its ChatTokenizer). init_std 0.2: logits O(1),
    so greedy choices are rarely near-ties."""
    import torch

    from dataproc.synthetic.english import generated_documents
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, train_tokenizer
    from training.chat import ChatTokenizer
    from training.model import Llama, ModelConfig

    directory.mkdir(parents=True, exist_ok=True)
    tok_path = directory.parent / f"{directory.name}-tokenizer.json"
    info = train_tokenizer(generated_documents(200, 0), TokenizerTrainOptions(vocab_size=vocab_size),
                           out_path=str(tok_path))
    torch.manual_seed(seed)
    cfg = ModelConfig(preset="tiny", vocab_size=info["vocab_size"], max_seq_len=max_seq_len, init_std=0.2)
    model = Llama(cfg).eval()
    write_checkpoint(directory, model, tok_path)
    return directory, model, ChatTokenizer.from_file(str(tok_path))


BASE_VOCAB = 1024


def base_checkpoint(directory: Path, steps: int = 150, seq_len: int = 128, seed: int = 0) -> Path:
    """Pretrain the tiny preset (dim 64, 2 layers) on packed windows; returns the checkpoint dir."""
    import numpy as np
    import torch

    from tests.support.text_shards import build_shards
    from training.data import split_train_val
    from training.model import Llama, ModelConfig

    directory = Path(directory)
    if (directory / "llmforge.json").exists():
        return directory
    shards, _ = build_shards(directory.parent / f"{directory.name}-shards", vocab_size=BASE_VOCAB)
    train, _ = split_train_val(str(shards), seq_len, 0.0)
    torch.manual_seed(seed)
    model = Llama(ModelConfig(preset="tiny", vocab_size=BASE_VOCAB, max_seq_len=512))
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
