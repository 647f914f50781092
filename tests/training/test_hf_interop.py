"""Hugging Face interop: HF Llama directories in (training.hf_import), HF directories out from
live weights (training.export.save_hf_dir), reward models as LlamaForSequenceClassification,
LoRA checkpoints exported merged, and the chat template in tokenizer_config.json.

Every comparison is against transformers itself (or peft), with weights large enough that
logits are O(1), so 1e-4 catches a wrong layout, norm, rotary base or head.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmforge.common.errors import UserError
from tests.support.ray_head import free_port
from training.chat import ChatTokenizer
from training.export import checkpoint_kind, export_hf, load_model, load_model_state, save_hf_dir, to_hf_config
from training.hf_import import load_hf_state, read_hf_config
from training.model import Llama, ModelConfig, RewardModel
from training.sources import resolve_model

REPO = Path(__file__).resolve().parents[2]
VOCAB = 400
SEQ = 24
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]}


def tiny_config(**overrides) -> ModelConfig:
    # init 0.2 rather than training's 0.02: logits O(1), so 1e-4 below is a real test.
    # Explicit fields, not the "tiny" preset, so that configs read back from HF compare equal.
    return ModelConfig(**{"vocab_size": VOCAB, "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                          "ffn_dim": 96, "init_std": 0.2, "max_seq_len": 64, "rope_theta": 50000.0, **overrides})


def _randomise_norms(model: torch.nn.Module) -> None:
    with torch.no_grad():  # norms at 1.0 would hide a swapped or missing norm
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)


def _ids(batch: int = 2, seq: int = SEQ, low: int = 0, seed: int = 0) -> torch.Tensor:
    return torch.randint(low, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    from dataproc.synthetic.english import generated_documents
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(generated_documents(300, seed=1), TokenizerTrainOptions(vocab_size=VOCAB, sample_docs=300),
                    str(path))
    return path


# ---------------------------------------------------------------------------- HF -> llmforge -> HF

def _hf_llama(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-5, initializer_range=0.2, tie_word_embeddings=tied,
                         rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(1 + tied)
    model = LlamaForCausalLM(config).eval()
    _randomise_norms(model)
    return model


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_hf_causal_lm_round_trip(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    hf = _hf_llama(tied)
    hf.save_pretrained(tmp_path / "hf")
    ids = _ids()
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
    assert expected.std() > 0.5

    source = resolve_model(tmp_path / "hf")
    assert (source.format, source.kind) == ("hf", "causal_lm")
    assert source.config == tiny_config(tie_embeddings=tied)
    model = source.build()
    with torch.no_grad():
        assert _max_diff(model(ids), expected) < 1e-4

    cfg, kind, state = load_hf_state(tmp_path / "hf")
    out = save_hf_dir(cfg, state, tmp_path / "again")
    from safetensors.torch import load_file

    assert ("lm_head.weight" in load_file(out / "model.safetensors")) == (not tied)
    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert _max_diff(back(input_ids=ids).logits, expected) < 1e-4
    assert read_hf_config(out) == (cfg, "causal_lm")


@pytest.mark.parametrize("layout", ["sharded", "bin"])
def test_hf_weight_files(tmp_path, layout):
    hf = _hf_llama(tied=False)
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(hf_dir, max_shard_size="40KB")
    if layout == "bin":  # what older checkpoints hold, rotary buffer included
        state = {k: v.to(torch.bfloat16) for k, v in hf.state_dict().items()}
        state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
        for f in hf_dir.glob("model*.safetensors*"):
            f.unlink()
        torch.save(state, hf_dir / "pytorch_model.bin")
    else:
        assert len(json.loads((hf_dir / "model.safetensors.index.json").read_text())["weight_map"]) > 1
        assert len(list(hf_dir.glob("model-*.safetensors"))) > 1
    cfg, kind, state = load_hf_state(hf_dir)
    for key, value in hf.state_dict().items():
        assert state[key].dtype == torch.float32
        expected = value.to(torch.bfloat16).float() if layout == "bin" else value
        assert torch.equal(state[key], expected), key


# ---------------------------------------------------------------------------- reward model

def _reward_model(cfg: ModelConfig, seed: int = 3) -> RewardModel:
    torch.manual_seed(seed)
    model = RewardModel(cfg).eval()
    _randomise_norms(model)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.5)
    return model


def test_reward_model_as_sequence_classifier(tmp_path, tokenizer_path):
    from transformers import AutoModelForSequenceClassification

    pad = ChatTokenizer.from_file(str(tokenizer_path)).pad_id
    cfg = tiny_config(tie_embeddings=False)
    ours = _reward_model(cfg)
    out = save_hf_dir(cfg, ours.state_dict(), tmp_path / "rm", tokenizer_path=tokenizer_path, kind="reward")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["pad_token_id"] == pad != config["eos_token_id"]
    assert not (out / "generation_config.json").exists()

    hf = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    assert hf.config.num_labels == 1 and hf.score.bias is None
    lengths = torch.tensor([SEQ, 9, 3, 1])
    ids = _ids(batch=4, low=pad + 1)  # no pad inside the real tokens (specials are the lowest ids)
    mask = torch.arange(SEQ)[None, :] < lengths[:, None]
    ids[~mask] = pad  # right padding, as our batches are
    with torch.no_grad():
        expected = ours(ids, lengths)
        scores = hf(input_ids=ids, attention_mask=mask.long()).logits
    assert scores.shape == (4, 1)
    assert expected.std() > 0.3
    assert _max_diff(scores.squeeze(1), expected) < 1e-4

    source = resolve_model(out)  # and back
    assert (source.kind, source.config) == ("reward", cfg)
    back = source.build()
    assert isinstance(back, RewardModel)
    with torch.no_grad():
        assert _max_diff(back(ids, lengths), expected) < 1e-4


def test_reward_export_needs_a_pad_token(tmp_path):
    from dataproc.synthetic.english import generated_documents
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, train_tokenizer

    tok = tmp_path / "tokenizer.json"
    train_tokenizer(generated_documents(50, seed=2), TokenizerTrainOptions(
        vocab_size=300, sample_docs=50, special_tokens=["<|endoftext|>"]), str(tok))
    cfg = tiny_config()
    with pytest.raises(UserError, match="<\\|pad\\|>"):
        save_hf_dir(cfg, RewardModel(cfg).state_dict(), tmp_path / "rm", tokenizer_path=tok, kind="reward")
    assert not (tmp_path / "rm").exists()
    out = save_hf_dir(cfg, Llama(cfg).state_dict(), tmp_path / "lm", tokenizer_path=tok)
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())  # no role tokens


# ---------------------------------------------------------------------------- LoRA checkpoints

def _write_zero0_checkpoint(ckpt: Path, meta: dict, module_state: dict[str, torch.Tensor]) -> Path:
    """The layout a ZeRO-0 DeepSpeed engine saves (training/checkpoint.py: save_to)."""
    tag_dir = ckpt / "deepspeed" / "checkpoint"
    tag_dir.mkdir(parents=True)
    (ckpt / "deepspeed" / "latest").write_text("checkpoint")
    torch.save({"module": module_state}, tag_dir / "mp_rank_00_model_states.pt")
    (ckpt / "llmforge.json").write_text(json.dumps({"step": 1, **meta}))
    return ckpt


@pytest.mark.parametrize("kind", ["causal_lm", "reward"])
def test_lora_checkpoint_is_merged(tmp_path, kind):
    import peft

    cfg = tiny_config(tie_embeddings=True)
    torch.manual_seed(5)
    base = _reward_model(cfg) if kind == "reward" else Llama(cfg).eval()
    _randomise_norms(base)
    ids, lengths = _ids(), torch.tensor([SEQ, 7])
    run = (lambda m: m(ids, lengths)) if kind == "reward" else (lambda m: m(ids))
    with torch.no_grad():
        plain = run(base)
    # A reward model trains its fresh score head in full alongside the adapters.
    lora = {**LORA, "modules_to_save": ["score"]} if kind == "reward" else LORA
    policy = peft.get_peft_model(base, peft.LoraConfig(**lora))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:  # peft starts B at 0 (a no-op adapter)
                p.normal_(0.0, 0.2)
        expected = run(policy.eval())
    assert _max_diff(expected, plain) > 0.1  # else a merge that did nothing would pass
    module_state = policy.state_dict()
    assert any(".base_layer." in k for k in module_state)
    meta = {"model": cfg.model_dump(), "lora": lora, **({"model_kind": kind} if kind == "reward" else {})}
    ckpt = _write_zero0_checkpoint(tmp_path / "ckpt", meta, module_state)

    assert checkpoint_kind(ckpt) == kind
    loaded_cfg, state = load_model_state(ckpt)
    assert loaded_cfg == cfg and not any("lora" in k or "base_layer" in k for k in state)
    model = load_model(ckpt)
    assert type(model) is type(base)
    with torch.no_grad():
        assert _max_diff(run(model), expected) < 1e-4
        assert _max_diff(run(policy), expected) == 0  # the PeftModel's tensors were not merged into

    out = export_hf(ckpt, tmp_path / "hf")
    exported = json.loads((out / "llmforge.json").read_text())
    assert "lora" not in exported and exported["lora_merged"] == lora
    assert resolve_model(out).kind == kind
    with torch.no_grad():
        assert _max_diff(run(resolve_model(out).build()), expected) < 1e-4


def test_lora_checkpoint_refuses_mismatched_adapters(tmp_path):
    import peft

    cfg = tiny_config()
    policy = peft.get_peft_model(Llama(cfg), peft.LoraConfig(**LORA))
    ckpt = _write_zero0_checkpoint(tmp_path / "ckpt", {"model": cfg.model_dump(),
                                                        "lora": {**LORA, "target_modules": ["q_proj"]}},
                                   policy.state_dict())
    with pytest.raises(UserError, match="LoRA adapters"):
        load_model_state(ckpt)
    meta = json.loads((ckpt / "llmforge.json").read_text())
    (ckpt / "llmforge.json").write_text(json.dumps({**meta, "lora": {**LORA, "rank": 3}}))
    with pytest.raises(UserError, match="lora"):
        load_model_state(ckpt)
    (ckpt / "llmforge.json").write_text(json.dumps({**meta, "lora": LORA, "model_kind": "critic"}))
    with pytest.raises(UserError, match="model_kind"):
        load_model_state(ckpt)


def write_zero2_lora_checkpoint(root: str) -> None:
    """Run in a subprocess (see test_export.py): a real ZeRO-2 engine over a PeftModel (frozen
    base, tied embeddings), one AdamW step, then the checkpoint and the engine's logits."""
    import deepspeed
    import peft
    import torch.distributed as dist

    from training.loop import _init_distributed

    # As training joins: DeepSpeed's CPU comm op loads from the cache infra/setup.sh built, with
    # this environment's ninja (another ninja on PATH rebuilds it, about a minute).
    _init_distributed(torch.device("cpu"))
    cfg = tiny_config(tie_embeddings=True)
    torch.manual_seed(7)
    base = Llama(cfg)
    _randomise_norms(base)
    ids = _ids()
    with torch.no_grad():
        before = base(ids)
    model = peft.get_peft_model(base, peft.LoraConfig(**LORA))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config={
        "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}, "steps_per_print": 10**9})
    for _ in range(2):  # B starts at 0: the second step moves A too
        _, loss = engine(ids, ids)
        engine.backward(loss)
        engine.step()
    out = Path(root)
    engine.save_checkpoint(str(out / "deepspeed"), tag="checkpoint", client_state={"step": 2})
    (out / "llmforge.json").write_text(json.dumps({"model": cfg.model_dump(), "step": 2, "lora": LORA}))
    engine.eval()
    with torch.no_grad():
        torch.save({"ids": ids, "logits": engine(ids).float(), "before": before}, out / "reference.pt")
    dist.destroy_process_group()


def test_zero2_lora_checkpoint_from_deepspeed(tmp_path):
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    code = ("import sys; from tests.training.test_hf_interop import write_zero2_lora_checkpoint; "
            "write_zero2_lora_checkpoint(sys.argv[1])")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list((tmp_path / "deepspeed" / "checkpoint").glob("*optim_states.pt"))  # the zero_to_fp32 path
    ref = torch.load(tmp_path / "reference.pt", weights_only=True)
    assert _max_diff(ref["logits"], ref["before"]) > 0.05  # training moved the adapters
    model = load_model(tmp_path)
    with torch.no_grad():
        assert _max_diff(model(ref["ids"]), ref["logits"]) < 1e-4


# ---------------------------------------------------------------------------- chat template

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is in the box?"},
     {"role": "assistant", "content": "Nothing at all."}, {"role": "user", "content": "Are you sure?"}],
    [{"role": "system", "content": "  leading and trailing  "}, {"role": "user", "content": "\n\nnewlines\n"},
     {"role": "assistant", "content": " the answer \n"}],
    [{"role": "user", "content": "unicode é ß 日本語 👩‍👩‍👧 — “quotes”"},
     {"role": "assistant", "content": "tabs\tand <|user|> inside"}],
]


def _ids_of(encoded) -> list[int]:
    # transformers 5 returns a BatchEncoding for tokenize=True; 4.x a plain list.
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def test_chat_template_matches_training(tmp_path, tokenizer_path):
    from transformers import AutoTokenizer

    from training.chat import render

    cfg = tiny_config()
    out = save_hf_dir(cfg, Llama(cfg).state_dict(), tmp_path / "hf", tokenizer_path=tokenizer_path)
    hf_tok = AutoTokenizer.from_pretrained(out)
    ours = ChatTokenizer.from_file(str(tokenizer_path))
    for messages in CONVERSATIONS:
        for gen in (False, True):
            assert hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen) == \
                render(messages, gen)
            hf_ids = _ids_of(hf_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen))
            assert hf_ids == ours.encode(messages, add_generation_prompt=gen).ids, (messages, gen)
        assert _ids_of(hf_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)) == \
            ours.prompt_ids(messages)


# ---------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("edit, key", [
    ({"model_type": "mistral"}, "model_type"),
    ({"architectures": ["LlamaModel"]}, "architectures"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "rope_parameters"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"head_dim": 32}, "head_dim"),
    ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantization_config"),
    ({"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "a", "1": "b"}}, "id2label"),
    ({"architectures": ["LlamaForSequenceClassification"]}, "num_labels"),  # HF's default: 2
    ({"hidden_size": None}, "hidden_size"),
    ({"num_key_value_heads": 3}, "n_kv_heads"),
])
def test_read_hf_config_refuses(tmp_path, edit, key):
    config = {**to_hf_config(tiny_config()), **edit}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=key) as info:
        read_hf_config(tmp_path)
    assert "config.json" in str(info.value)


def test_read_hf_config_defaults(tmp_path):
    config = to_hf_config(tiny_config())
    for key in ("tie_word_embeddings", "rope_parameters", "rope_theta", "rms_norm_eps", "num_key_value_heads"):
        del config[key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    cfg, kind = read_hf_config(tmp_path)
    # What transformers' LlamaConfig assumes for absent keys, not our own defaults.
    assert (cfg.tie_embeddings, cfg.rope_theta, cfg.norm_eps, cfg.kv_heads) == (False, 10000.0, 1e-6, cfg.n_heads)


def test_load_hf_state_refuses_bad_weights(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        load_hf_state(tmp_path)
    cfg = tiny_config(tie_embeddings=False)
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config(cfg)))
    with pytest.raises(UserError, match="model.safetensors"):
        load_hf_state(tmp_path)
    state = Llama(tiny_config(tie_embeddings=False, ffn_dim=128)).state_dict()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match="shapes do not match"):
        load_hf_state(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-1.safetensors"}}))
    with pytest.raises(UserError, match="model-1.safetensors"):
        load_hf_state(tmp_path)
