"""The loop in one process without Ray (what runs on a single GPU box): train, resume, export."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RUN = """
import sys
from llmforge.cli import main
code = main(sys.argv[1:])
assert "ray" not in sys.modules, "the standalone loop imported Ray"
sys.exit(code)
"""


def _pretrain(config: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = ["train", "pretrain", "--standalone", "--config", str(config)]
    for o in overrides:
        args += ["--set", o]
    return subprocess.run([sys.executable, "-c", RUN, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_standalone_trains_resumes_and_exports(text_shards, tmp_path, capsys):
    shards, _ = text_shards
    config = tmp_path / "pretrain.yaml"
    config.write_text(
        f"model: {{preset: tiny, max_seq_len: 64}}\n"
        f"data: {{shards: {shards}, seq_len: 64, val_fraction: 0.02}}\n"
        "optim: {lr: 1.0e-2, warmup_steps: 2, schedule: constant}\n"
        "train: {max_steps: 6, micro_batch_size: 4, zero_stage: 1, log_every: 1, eval_every: 3, eval_batches: 2,"
        " checkpoint_every: 3}\n"
        f"run: {{storage_path: {tmp_path / 'runs'}, name: solo, num_to_keep: 1, tensorboard: true}}\n")
    first = _pretrain(config)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    second = _pretrain(config, "train.max_steps=9")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "resumed from step 6" in second.stdout

    run = tmp_path / "runs" / "solo"
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))
    assert [p.name for p in run.glob("checkpoint_*")] == ["checkpoint_00000009"]  # num_to_keep: 1
    assert (run / "checkpoint_00000009" / "tokenizer.json").exists()  # found next to the shards
    assert (run / "loss.png").exists()
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 2 and all(e.stat().st_size > 500 for e in events)  # one per process

    out = subprocess.run([sys.executable, "-m", "llmforge.cli", "train", "export", str(run), "--out",
                          str(tmp_path / "hf")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert json.loads((tmp_path / "hf" / "llmforge.json").read_text())["step"] == 9

    prompts = ["The king", "It was"]
    sample = subprocess.run([sys.executable, "-m", "llmforge.cli", "train", "sample", str(run), "--temperature", "0",
                             "--max-new-tokens", "12", *[a for p in prompts for a in ("--prompt", p)]],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert sample.returncode == 0, sample.stderr[-3000:]
    from tokenizers import Tokenizer

    from training.export import load_model
    from training.generate import SamplingParams, complete_texts

    ckpt = run / "checkpoint_00000009"
    texts = complete_texts(load_model(ckpt), Tokenizer.from_file(str(ckpt / "tokenizer.json")), prompts,
                           SamplingParams(max_new_tokens=12, temperature=0.0))
    assert all(t.strip() for t in texts)  # 9 steps of training: not text yet, but tokens
    assert sample.stdout == "".join(f"--- {p!r}\n{p}{t}\n" for p, t in zip(prompts, texts))
    from llmforge.cli import main

    capsys.readouterr()
    assert main(["train", "sample", str(run), "--prompt", "x", "--top-p", "2"]) == 2  # before loading the model
    assert "top_p" in capsys.readouterr().err
