"""Hugging Face Llama directory -> `training.model` config and weights, without transformers.

    cfg, kind = read_hf_config("hf/llama")              # kind: "causal_lm" or "reward"
    cfg, kind, state = load_hf_state("hf/llama")         # fp32, keyed like build_model(cfg, kind)

`LlamaForCausalLM` is our `Llama` and `LlamaForSequenceClassification` with one label is our
`RewardModel`; both use the same parameter names, so the weights load without renaming.
Anything in config.json that would make HF compute something our model does not (scaled
rotary positions, biases, another activation, a head size of its own, quantised weights) is
refused with a UserError naming the key, rather than imported into a silently different model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from llmforge.common.errors import UserError
from training.model import ModelConfig

CONFIG_FILE = "config.json"
ARCHITECTURES = {"LlamaForCausalLM": "causal_lm", "LlamaForSequenceClassification": "reward"}
# transformers' own defaults (LlamaConfig, PreTrainedConfig) for keys a config.json may omit:
# HF would run the model with these, so the import must too.
HF_DEFAULTS = {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
               "initializer_range": 0.02, "rope_theta": 10000.0, "hidden_act": "silu"}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def read_hf_config(hf_dir: str | os.PathLike) -> tuple[ModelConfig, str]:
    """(ModelConfig, kind) from `hf_dir`/config.json; UserError for anything we cannot reproduce."""
    path = Path(hf_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (not a Hugging Face model directory)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object")

    def refuse(key: str, why: str) -> UserError:
        return UserError(f"{path}: {key} = {json.dumps(config.get(key))}: {why}")

    if config.get("model_type") != "llama":
        raise refuse("model_type", "only Llama models (model_type \"llama\") can be imported")
    archs = config.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or archs[0] not in ARCHITECTURES:
        raise refuse("architectures", f"expected one of {sorted(ARCHITECTURES)}")
    kind = ARCHITECTURES[archs[0]]
    if kind == "reward":
        # HF keeps num_labels as len(id2label); a config without id2label means its default, 2.
        labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels", 2)
        if labels != 1:
            key = "id2label" if "id2label" in config else "num_labels"
            raise refuse(key, f"{labels} labels; only a single-score (num_labels 1) reward model can be imported")

    missing = [k for k in _REQUIRED if not isinstance(config.get(k), int)]
    if missing:
        raise UserError(f"{path}: missing or non-integer {', '.join(missing)}")
    get = lambda key: config[key] if config.get(key) is not None else HF_DEFAULTS[key]  # noqa: E731

    if get("hidden_act") != "silu":
        raise refuse("hidden_act", "only silu (SwiGLU) is supported")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise refuse(key, "our layers have no biases")
    if config.get("quantization_config"):
        raise refuse("quantization_config", "quantised weights cannot be imported; use a full-precision copy")
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    if config.get("head_dim") not in (None, head_dim) or config["hidden_size"] % config["num_attention_heads"]:
        raise refuse("head_dim", f"must be hidden_size / num_attention_heads "
                                 f"({config['hidden_size']} / {config['num_attention_heads']})")
    rope_theta = _rope_theta(config, refuse)

    fields = dict(
        vocab_size=config["vocab_size"], dim=config["hidden_size"], n_layers=config["num_hidden_layers"],
        n_heads=config["num_attention_heads"], n_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        ffn_dim=config["intermediate_size"], max_seq_len=get("max_position_embeddings"), rope_theta=rope_theta,
        norm_eps=get("rms_norm_eps"), tie_embeddings=bool(get("tie_word_embeddings")),
        init_std=get("initializer_range"))
    try:
        return ModelConfig.model_validate(fields), kind
    except ValueError as e:  # pydantic's ValidationError: heads not dividing, odd head size...
        raise UserError(f"{path}: not a shape our model can take: {e}") from None


def _rope_theta(config: dict[str, Any], refuse) -> float:
    """The rotary base; refuses scaled rotary embeddings (linear, dynamic, llama3, yarn...).
    transformers 5 writes `rope_parameters`, 4.x `rope_theta` and `rope_scaling`."""
    theta = config.get("rope_theta")
    for key in ("rope_parameters", "rope_scaling"):
        params = config.get(key)
        if params is None:
            continue
        if not isinstance(params, dict):
            raise refuse(key, "expected an object")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type != "default":
            raise refuse(key, f"rope_type {rope_type!r}: only unscaled rotary embeddings (\"default\") are supported")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise refuse(key, "partial_rotary_factor must be 1")
        theta = params.get("rope_theta", theta)
    if config.get("partial_rotary_factor", 1.0) not in (1.0, None):
        raise refuse("partial_rotary_factor", "must be 1")
    return float(theta if theta is not None else HF_DEFAULTS["rope_theta"])


# ---------------------------------------------------------------------------- weights

def load_hf_state(hf_dir: str | os.PathLike) -> tuple[ModelConfig, str, dict[str, torch.Tensor]]:
    """(config, kind, fp32 CPU state dict keyed like `build_model(cfg, kind).state_dict()`).
    Reads model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin
    (weights only: no pickled code runs). A tied lm_head is filled from the embeddings."""
    from training.export import _complete_state

    hf = Path(hf_dir)
    cfg, kind = read_hf_config(hf)
    state = _read_weights(hf)
    # Old checkpoints saved the rotary inverse frequencies; ours are recomputed from the config.
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    return cfg, kind, _complete_state(cfg, state, source=str(hf), kind=kind)


def _read_weights(hf: Path) -> dict[str, torch.Tensor]:
    # In transformers' own order of preference: safetensors before pickles.
    if (hf / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(hf / "model.safetensors"))
    for index_name, single in (("model.safetensors.index.json", False), ("pytorch_model.bin.index.json", True)):
        index = hf / index_name
        if index.exists():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
                raise UserError(f"{index}: not a weight index ({e!r})") from None
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_file(hf / shard, index))
            return state
    if (hf / "pytorch_model.bin").exists():
        return _read_file(hf / "pytorch_model.bin", hf)
    raise UserError(f"{hf}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _read_file(path: Path, named_by: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise UserError(f"{named_by}: names {path.name}, which does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from training.safe_load import safe_torch_load

    state = safe_torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a dict of tensors")
    return state
