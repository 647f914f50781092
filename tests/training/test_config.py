"""Bad pretraining configs stop before any worker starts, naming the key."""
from __future__ import annotations

import pytest

from llmforge.cli import main


def _write(tmp_path, text: str):
    path = tmp_path / "pretrain.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("yaml_text,message", [
    ("data: {shards: SHARDS}\ntrain: {zero_stage: 4}\n", "train.zero_stage: Input should be 0, 1, 2 or 3"),
    ("data: {shards: SHARDS, seq_len: 512}\n", "data.seq_len 512 is larger than model.max_seq_len 256"),
    ("data: {shards: SHARDS}\nmodel: {preset: tiny, vocab_size: 100}\n",
     "model.vocab_size 100 is smaller than the shards' vocabulary 1024"),
    ("data: {shards: /nonexistent/shards}\n", "data.shards: /nonexistent/shards/manifest.json not found"),
    ("data: {shards: SHARDS}\ntrain: {micro_batch_size: 3, global_batch_size: 8}\n",
     "train.global_batch_size 8 is not a multiple of train.micro_batch_size 3 x 1 workers"),
    ("data: {shards: SHARDS}\ntrain: {precision: fp16, device: cpu}\n", "fp16 needs a GPU"),
    ("data: {shards: SHARDS}\ntrain: {max_step: 10}\n", "train.max_step: unknown key"),
    ("data: {shards: SHARDS}\nmodel: {preset: 7b}\n", "model.preset"),
])
def test_bad_config_names_the_key(text_shards, tmp_path, capsys, yaml_text, message):
    shards, _ = text_shards
    path = _write(tmp_path, yaml_text.replace("SHARDS", str(shards)))
    for verb in ("validate", "pretrain"):
        assert main(["train", verb, "--config", path]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_validate_fills_vocab_from_the_shards(text_shards, tmp_path, capsys):
    shards, _ = text_shards
    path = _write(tmp_path, f"data: {{shards: {shards}}}\nmodel: {{preset: tiny}}\n")
    assert main(["train", "validate", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "vocab_size: 1024" in out and "parameters" in out
