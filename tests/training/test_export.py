"""Checkpoint -> HF export (training.export) and weights-only loading (training.safe_load).

Checkpoints come from real single-process DeepSpeed engines, written in a subprocess so that
the launcher environment (RANK, MASTER_PORT, ...) and DeepSpeed's process group stay out of
the pytest process. The exported directory is loaded with transformers and its logits are
compared with the engine's own forward pass.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.ray_head import free_port
from training.export import export_hf, load_model_state, state_dict_for_export, to_hf_config
from training.model import Llama, ModelConfig
from training.safe_load import FORCE, safe_torch_load, weights_only_loading

REPO = Path(__file__).resolve().parents[2]
VOCAB = 300
SEQ = 32

# name -> (ZeRO stage, precision, ModelConfig overrides). All GQA (tiny: 4 query heads, 2 kv).
SPECS = {
    "zero0_tied": (0, "fp32", {"tie_embeddings": True}),
    "zero3_untied": (3, "fp32", {"tie_embeddings": False, "rope_theta": 50000.0, "norm_eps": 1e-6}),
    # The training default (bf16, ZeRO 2): its optimizer files carry DeepSpeed types.
    "zero2_bf16": (2, "bf16", {"tie_embeddings": True}),
}


def model_config(name: str) -> ModelConfig:
    # A larger init than training's 0.02 so that logits are O(1) and a wrong head layout,
    # rotary base or norm would show far above the tolerance.
    return ModelConfig(preset="tiny", vocab_size=VOCAB, init_std=0.2, **SPECS[name][2])


def write_checkpoints(root: str) -> None:
    """Run in a subprocess: one DeepSpeed engine per spec, one AdamW step, then
    <root>/<name>/{llmforge.json, deepspeed/} plus reference.pt (ids, the engine's logits
    and, for bf16, the engine's bf16 module weights)."""
    import deepspeed
    import torch.distributed as dist

    from training.loop import _init_distributed

    # As training joins: DeepSpeed's CPU comm op loads from the cache infra/setup.sh built, with
    # this environment's ninja (another ninja on PATH rebuilds it, about a minute).
    _init_distributed(torch.device("cpu"))
    for i, (name, (stage, precision, _)) in enumerate(SPECS.items()):
        cfg = model_config(name)
        torch.manual_seed(i)
        model = Llama(cfg)
        with torch.no_grad():  # norms at 1.0 would hide a swapped or missing norm
            for pname, p in model.named_parameters():
                if "norm" in pname:
                    p.uniform_(0.5, 1.5)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                       {"params": rest, "weight_decay": 0.0}], lr=1e-2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config={
            "train_micro_batch_size_per_gpu": 1, "gradient_clipping": 1.0,
            "zero_optimization": {"stage": stage}, "bf16": {"enabled": precision == "bf16"},
            "steps_per_print": 10**9})
        ids = torch.randint(0, VOCAB, (2, SEQ))
        _, loss = engine(ids, ids)
        engine.backward(loss)
        engine.step()

        out = Path(root, name)
        engine.save_checkpoint(str(out / "deepspeed"), tag="checkpoint", client_state={"step": 1})
        (out / "llmforge.json").write_text(json.dumps(
            {"model": cfg.model_dump(), "step": 1, "zero_stage": stage, "precision": precision}))
        engine.eval()
        with torch.no_grad():
            ref = {"ids": ids, "logits": engine(ids).float()}
        if precision == "bf16":
            ref["module"] = {k: v.clone() for k, v in engine.module.state_dict().items()}
        torch.save(ref, out / "reference.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, train_tokenizer

    words = ["the", "model", "token", "export", "hugging", "face", "layer", "weight", "over", "under"]
    docs = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) + "." for i in range(300)]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(docs, TokenizerTrainOptions(vocab_size=VOCAB, sample_docs=300), str(path))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer_path) -> Path:
    root = tmp_path_factory.mktemp("ckpts")
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    code = "import sys; from tests.training.test_export import write_checkpoints; write_checkpoints(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shutil.copyfile(tokenizer_path, root / "zero0_tied" / "tokenizer.json")  # as the trainer would
    return root


def _reference(ckpt: Path) -> dict:
    return torch.load(ckpt / "reference.pt", weights_only=True)


def _hf_logits(out: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(input_ids=ids).logits


# ---------------------------------------------------------------------------- export

@pytest.mark.parametrize("name", ["zero0_tied", "zero3_untied"])
def test_export_matches_engine_logits(checkpoints, tmp_path, name):
    ckpt = checkpoints / name
    cfg = model_config(name)
    ref = _reference(ckpt)

    loaded_cfg, state = load_model_state(ckpt)
    assert loaded_cfg == cfg
    model = Llama(cfg)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        ours = model(ref["ids"])
    assert (ours - ref["logits"]).abs().max() < 1e-5  # the checkpoint is the trained model
    assert ref["logits"].std() > 0.5  # large enough that 1e-4 below is a real test

    out = export_hf(ckpt, tmp_path / "hf")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "llmforge.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed away

    from safetensors.torch import load_file

    tensors = load_file(out / "model.safetensors")
    assert ("lm_head.weight" in tensors) == (not cfg.tie_embeddings)
    assert all(t.dtype == torch.float32 for t in tensors.values())

    diff = (_hf_logits(out, ref["ids"]) - ref["logits"]).abs().max().item()
    assert diff < 1e-4, f"HF logits differ from the engine's by {diff}"

    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] == cfg.kv_heads < cfg.n_heads
    assert config["rope_theta"] == cfg.rope_theta and config["tie_word_embeddings"] == cfg.tie_embeddings


def test_export_tokenizer_loads_in_transformers(checkpoints, tokenizer_path, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    out = export_hf(checkpoints / "zero0_tied", tmp_path / "hf")  # tokenizer.json from the checkpoint
    assert (out / "tokenizer.json").read_bytes() == tokenizer_path.read_bytes()
    hf_tok = AutoTokenizer.from_pretrained(out)
    raw = Tokenizer.from_file(str(tokenizer_path))
    texts = ["the model token export.", "  hugging   face\n\tweight ", "unicode é 日本語 👩‍👩‍👧",
             "the end<|endoftext|>next <|user|> hi", ""]
    for text in texts:
        ids = raw.encode(text).ids
        assert hf_tok(text)["input_ids"] == ids, text
        assert hf_tok.decode(ids) == raw.decode(ids, skip_special_tokens=False)
    assert hf_tok.eos_token == hf_tok.bos_token == "<|endoftext|>"
    assert hf_tok.eos_token_id == raw.token_to_id("<|endoftext|>") == 0
    assert hf_tok.pad_token_id == raw.token_to_id("<|pad|>")

    config = json.loads((out / "config.json").read_text())
    generation = json.loads((out / "generation_config.json").read_text())
    assert config["eos_token_id"] == config["bos_token_id"] == generation["eos_token_id"] == 0
    assert config["pad_token_id"] == generation["pad_token_id"] == hf_tok.pad_token_id


def test_export_bf16_zero2_uses_fp32_masters(checkpoints, tokenizer_path, tmp_path):
    ckpt = checkpoints / "zero2_bf16"
    cfg, state = load_model_state(ckpt)
    module = _reference(ckpt)["module"]
    for key, tensor in state.items():
        assert tensor.dtype == torch.float32
        # The bf16 weights the engine ran are its fp32 masters rounded.
        assert torch.equal(tensor.to(torch.bfloat16), module[key]), key
    assert any(not torch.equal(t, t.to(torch.bfloat16).float()) for t in state.values())

    out = export_hf(ckpt, tmp_path / "hf", tokenizer_path=tokenizer_path)
    assert (out / "tokenizer_config.json").exists()
    with pytest.raises(FileExistsError):
        export_hf(ckpt, out)
    (out / "stale").write_text("x")
    export_hf(ckpt, out, overwrite=True)
    assert not (out / "stale").exists() and (out / "model.safetensors").exists()


def test_state_dict_for_export_without_deepspeed(tmp_path):
    from safetensors.torch import save_file

    cfg = ModelConfig(preset="tiny", vocab_size=VOCAB, init_std=0.2, n_kv_heads=1)  # MQA
    torch.manual_seed(0)
    model = Llama(cfg).eval()
    out = tmp_path / "hf"
    out.mkdir()
    save_file(state_dict_for_export(model), str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(to_hf_config(cfg)))
    ids = torch.randint(0, VOCAB, (2, SEQ))
    with torch.no_grad():
        assert (_hf_logits(out, ids) - model(ids)).abs().max() < 1e-4


def test_load_model_state_refuses_mismatched_config(checkpoints, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints / "zero0_tied", ckpt)
    meta = json.loads((ckpt / "llmforge.json").read_text())
    meta["model"]["n_kv_heads"] = 4
    (ckpt / "llmforge.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="shapes do not match"):
        load_model_state(ckpt)


# ---------------------------------------------------------------------------- weights only

class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would contain."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious_file(path: Path, marker: Path) -> Path:
    torch.save({"module": {"w": torch.zeros(2)}, "payload": RunsCode(marker)}, path)
    return path


def test_safe_load_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious_file(tmp_path / "evil.pt", marker)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        safe_torch_load(path)
    # DeepSpeed passes weights_only=False explicitly; inside the block that is overridden.
    before = os.environ.get(FORCE)
    with weights_only_loading(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=False)
    assert os.environ.get(FORCE) == before
    assert not marker.exists()
    torch.save({"w": torch.ones(3)}, tmp_path / "fine.pt")
    assert torch.equal(safe_torch_load(tmp_path / "fine.pt")["w"], torch.ones(3))


def test_load_model_state_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt"
    (ckpt / "deepspeed" / "checkpoint").mkdir(parents=True)
    (ckpt / "deepspeed" / "latest").write_text("checkpoint")
    (ckpt / "llmforge.json").write_text(json.dumps({"model": model_config("zero0_tied").model_dump(), "step": 1}))
    _malicious_file(ckpt / "deepspeed" / "checkpoint" / "mp_rank_00_model_states.pt", marker)
    with pytest.raises(pickle.UnpicklingError):
        load_model_state(ckpt)
    # The ZeRO path goes through DeepSpeed's zero_to_fp32 (torch.load(weights_only=False)).
    _malicious_file(ckpt / "deepspeed" / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt", marker)
    with pytest.raises(pickle.UnpicklingError):
        load_model_state(ckpt)
    assert not marker.exists()
