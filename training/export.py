"""Training checkpoint -> Hugging Face `LlamaForCausalLM` directory.

    <ckpt>/llmforge.json, <ckpt>/deepspeed/, [<ckpt>/tokenizer.json]
        -> <out>/config.json, generation_config.json, model.safetensors, llmforge.json,
           [tokenizer.json, tokenizer_config.json]

`training.model` names its parameters like HF's Llama and uses the same rotate-half rotary
layout, so the weights are copied without renaming or permuting any head.
`transformers.AutoModelForCausalLM.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)`
load the result; nothing here imports transformers.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from llmforge.common.errors import UserError
from llmforge.shard_format import TOKENIZER_FILE
from training.checkpoint import DS_DIR, META, TAG
from training.model import Llama, ModelConfig
from training.safe_load import weights_only_loading


# ---------------------------------------------------------------------------- reading

def load_model_state(ckpt_dir: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The model config and a full fp32 state dict (every key of `Llama(cfg).state_dict()`,
    a tied `lm_head.weight` being the embedding tensor) from a checkpoint of any ZeRO stage.

    ZeRO 1-3 keep the fp32 master weights partitioned in the optimizer files; DeepSpeed's
    `zero_to_fp32` reassembles them. Stage 0 writes no such files and the module weights are
    the only copy (fp32, or bf16 upcast: with bf16 at stage 0 the masters live in the
    optimizer state of the model file, whose layout is the optimizer's business).
    """
    ckpt = Path(ckpt_dir)
    meta = json.loads((ckpt / META).read_text())
    cfg = ModelConfig.model_validate(meta["model"])
    ds_dir = ckpt / DS_DIR
    latest = ds_dir / "latest"
    tag = latest.read_text().strip() if latest.exists() else TAG
    tag_dir = ds_dir / tag
    if not tag_dir.is_dir():
        raise FileNotFoundError(f"{ckpt} has no DeepSpeed checkpoint {tag_dir}")
    with weights_only_loading():
        if any(tag_dir.glob("*_optim_states.pt")):
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=tag)
        else:
            state = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu",
                               weights_only=True)["module"]
    return cfg, _complete_state(cfg, state, source=str(tag_dir))


def load_model(ckpt_dir: str | os.PathLike, device: str = "cpu") -> Llama:
    """A `Llama` in eval mode with a checkpoint's fp32 weights."""
    cfg, state = load_model_state(ckpt_dir)
    model = Llama(cfg)
    model.load_state_dict(state)
    return model.to(device).eval()


def _complete_state(cfg: ModelConfig, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Check `state` against the shapes `cfg` implies and make it fp32. A mismatch means the
    checkpoint and its llmforge.json disagree, and an export would be silently wrong."""
    with torch.device("meta"):  # shapes only: no memory, no init work even for large models
        expected = {k: v.shape for k, v in Llama(cfg).state_dict().items()}
    state = dict(state)
    if cfg.tie_embeddings and "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{source}: state dict does not match the model config "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(s)}" for k, s in expected.items() if state[k].shape != s]
    if wrong:
        raise ValueError(f"{source}: tensor shapes do not match the model config: {wrong[:5]}")
    out: dict[str, torch.Tensor] = {}
    for key in expected:
        out[key] = state[key].detach().to(device="cpu", dtype=torch.float32)
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


# ---------------------------------------------------------------------------- HF layout

def hf_tensors(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What goes into model.safetensors: fp32, contiguous, no shared storage. A tied
    `lm_head.weight` is left out; HF re-ties it from `tie_word_embeddings` (safetensors
    refuses tensors sharing memory anyway)."""
    return {k: v.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
            for k, v in state.items() if not (cfg.tie_embeddings and k == "lm_head.weight")}


def state_dict_for_export(model: Llama) -> dict[str, torch.Tensor]:
    """`hf_tensors` of a live model (e.g. one not trained under DeepSpeed)."""
    return hf_tensors(model.cfg, _complete_state(model.cfg, model.state_dict(), source="model"))


def to_hf_config(cfg: ModelConfig, *, bos_token_id: int | None = None, eos_token_id: int | None = None,
                 pad_token_id: int | None = None) -> dict[str, Any]:
    """config.json for `transformers.LlamaConfig`. Token ids are None unless given: LlamaConfig's
    defaults (bos 1, eos 2) are Llama-2's ids and would be wrong for our vocabularies."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        # transformers 4.x reads rope_theta; 5.x reads rope_parameters (and still accepts rope_theta).
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "torch_dtype": "float32",
        "use_cache": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
    }


def tokenizer_files(tokenizer_path: str | os.PathLike, cfg: ModelConfig) -> tuple[dict[str, Any], dict[str, int | None]]:
    """tokenizer_config.json for `PreTrainedTokenizerFast` over our tokenizer.json, and the
    bos/eos/pad ids for the model config.

    Our tokenizers have no BOS: documents are packed with `<|endoftext|>` between them, so
    like GPT-2 it is both eos and bos, and nothing is added when encoding (add_bos_token
    false), which keeps HF's ids equal to the ones the model was trained on.
    """
    from tokenizers import Tokenizer

    from llmforge.shard_format import EOS_TOKEN, special_token_ids

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise UserError(f"tokenizer {tokenizer_path} has {tokenizer.get_vocab_size()} tokens, "
                        f"more than the model's vocab_size {cfg.vocab_size}")
    specials = special_token_ids(tokenizer)
    eos = EOS_TOKEN if EOS_TOKEN in specials else None
    pad = "<|pad|>" if "<|pad|>" in specials else None
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eos,
        "eos_token": eos,
        "pad_token": pad,
        "unk_token": None,  # byte-level: every string is encodable
        "add_bos_token": False,
        "add_eos_token": False,
        # HF's default clean-up rewrites " ." to "." on decode; byte-level BPE decodes exactly.
        "clean_up_tokenization_spaces": False,
        "model_max_length": cfg.max_seq_len,
    }
    ids = {"bos_token_id": specials.get(eos), "eos_token_id": specials.get(eos), "pad_token_id": specials.get(pad)}
    return config, ids


# ---------------------------------------------------------------------------- export

def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def export_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
              overwrite: bool = False) -> Path:
    """Write the HF directory for a checkpoint; returns `out_dir`. The tokenizer is
    `tokenizer_path`, else the checkpoint's tokenizer.json if it has one, else none.

    Everything is written into a sibling temp dir that is renamed at the end, so an
    interrupted export leaves no directory that looks complete.
    """
    from safetensors.torch import save_file

    ckpt, out = Path(ckpt_dir), Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    if tokenizer_path is None and (ckpt / TOKENIZER_FILE).exists():
        tokenizer_path = ckpt / TOKENIZER_FILE
    cfg, state = load_model_state(ckpt)
    meta = json.loads((ckpt / META).read_text())

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        ids: dict[str, int | None] = {}
        if tokenizer_path is not None:
            tok_config, ids = tokenizer_files(tokenizer_path, cfg)
            shutil.copyfile(tokenizer_path, tmp / TOKENIZER_FILE)
            _write_json(tmp / "tokenizer_config.json", tok_config)
        _write_json(tmp / "config.json", to_hf_config(cfg, **ids))
        _write_json(tmp / "generation_config.json", {k: v for k, v in ids.items() if v is not None})
        save_file(hf_tensors(cfg, state), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        # Provenance (step, data position...); HF ignores files it does not know.
        _write_json(tmp / META, meta)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
