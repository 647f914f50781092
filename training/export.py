"""Training checkpoint -> Hugging Face directory (`LlamaForCausalLM`, or
`LlamaForSequenceClassification` for a reward model).

    <ckpt>/llmforge.json, <ckpt>/deepspeed/, [<ckpt>/tokenizer.json]
        -> <out>/config.json, [generation_config.json], model.safetensors, llmforge.json,
           [tokenizer.json, tokenizer_config.json]

`training.model` names its parameters like HF's Llama and uses the same rotate-half rotary
layout, so the weights are copied without renaming or permuting any head. A checkpoint trained
with LoRA adapters (llmforge.json `"lora"`) is exported merged: a plain model, no peft needed.
`transformers.AutoModelForCausalLM.from_pretrained(out)` (or `AutoModelForSequenceClassification`)
and `AutoTokenizer.from_pretrained(out)` load the result; nothing here imports transformers.
`save_hf_dir` writes the same directory from a live model's config and state dict.
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
from training.model import MODEL_KINDS, ModelConfig, RewardModel, build_model
from training.safe_load import weights_only_loading

# Where peft's PeftModel keeps the wrapped model: every key of its state dict starts with this.
PEFT_PREFIX = "base_model.model."


# ---------------------------------------------------------------------------- reading

def checkpoint_kind(ckpt_dir: str | os.PathLike) -> str:
    """"causal_lm" or "reward": llmforge.json `model_kind`, "causal_lm" when absent."""
    return _kind(json.loads((Path(ckpt_dir) / META).read_text()), Path(ckpt_dir) / META)


def _kind(meta: dict[str, Any], where: Path) -> str:
    kind = meta.get("model_kind", "causal_lm")
    if kind not in MODEL_KINDS:
        raise UserError(f"{where}: model_kind {kind!r} is not one of {', '.join(MODEL_KINDS)}")
    return kind


def load_model_state(ckpt_dir: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The model config and a full fp32 state dict (every key of
    `build_model(cfg, checkpoint_kind(ckpt_dir)).state_dict()`, a tied `lm_head.weight` being
    the embedding tensor) from a checkpoint of any ZeRO stage. LoRA adapters are merged.

    ZeRO 1-3 keep the fp32 master weights partitioned in the optimizer files; DeepSpeed's
    `zero_to_fp32` reassembles them. Stage 0 writes no such files and the module weights are
    the only copy (fp32, or bf16 upcast: with bf16 at stage 0 the masters live in the
    optimizer state of the model file, whose layout is the optimizer's business).
    """
    ckpt = Path(ckpt_dir)
    meta = json.loads((ckpt / META).read_text())
    cfg = ModelConfig.model_validate(meta["model"])
    kind = _kind(meta, ckpt / META)
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
    if meta.get("lora") is not None:
        state = merge_lora(cfg, kind, meta["lora"], state, source=str(ckpt / META))
    return cfg, _complete_state(cfg, state, source=str(tag_dir), kind=kind)


def load_model(ckpt_dir: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """The checkpoint's model (`Llama`, or `RewardModel` for a reward checkpoint) in eval
    mode with its fp32 weights."""
    cfg, state = load_model_state(ckpt_dir)
    model = build_model(cfg, checkpoint_kind(ckpt_dir))
    model.load_state_dict(state)
    return model.to(device).eval()


def merge_lora(cfg: ModelConfig, kind: str, lora: dict[str, Any], state: dict[str, torch.Tensor],
               source: str) -> dict[str, torch.Tensor]:
    """The plain state dict of `peft.get_peft_model(build_model(cfg, kind), LoraConfig(**lora))`
    after loading `state` (peft's names) into it and merging the adapters.

    Built on the meta device and filled with `assign=True` (no init work, and only the adapted
    layers' weights are copied); the merge itself (W += B A * alpha / r) runs in fp32.
    """
    import peft

    if not isinstance(lora, dict):
        raise UserError(f"{source}: lora must be an object of peft.LoraConfig arguments, got {lora!r:.80}")
    try:
        config = peft.LoraConfig(**lora)
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: lora: {e}") from None
    with torch.device("meta"):
        model = peft.get_peft_model(build_model(cfg, kind), config)
    # The merge adds into the adapted layers' base weights in place: copy those, so that the
    # caller's tensors (a live PeftModel's, say) are left as they were.
    state = {k: v.detach().to(device="cpu", dtype=torch.float32, copy=".base_layer." in k)
             for k, v in state.items()}
    head, embed = PEFT_PREFIX + "lm_head.weight", PEFT_PREFIX + "model.embed_tokens.weight"
    if kind == "causal_lm" and cfg.tie_embeddings and head not in state and embed in state:
        state[head] = state[embed]  # a writer that saved a tied tensor once
    expected = model.state_dict().keys()
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise UserError(f"{source}: the checkpoint's weights are not those of a model with these LoRA "
                        f"adapters (missing {missing[:5]}, unexpected {unexpected[:5]})")
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as e:  # size mismatches: the checkpoint and its llmforge.json disagree
        raise UserError(f"{source}: tensor shapes do not match the model config and LoRA adapters: {e}") from None
    return dict(model.merge_and_unload().state_dict())


def _complete_state(cfg: ModelConfig, state: dict[str, torch.Tensor], source: str,
                    kind: str = "causal_lm") -> dict[str, torch.Tensor]:
    """Check `state` against the shapes `build_model(cfg, kind)` has and make it fp32. A
    mismatch means the weights and their config disagree, and an export would be silently wrong."""
    with torch.device("meta"):  # shapes only: no memory, no init work even for large models
        expected = {k: v.shape for k, v in build_model(cfg, kind).state_dict().items()}
    tied = cfg.tie_embeddings and "lm_head.weight" in expected
    state = dict(state)
    if tied and "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise UserError(f"{source}: state dict does not match the model config "
                        f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(s)}" for k, s in expected.items() if state[k].shape != s]
    if wrong:
        raise UserError(f"{source}: tensor shapes do not match the model config: {wrong[:5]}")
    out: dict[str, torch.Tensor] = {}
    for key in expected:
        out[key] = state[key].detach().to(device="cpu", dtype=torch.float32)
    if tied:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


# ---------------------------------------------------------------------------- HF layout

def hf_tensors(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What goes into model.safetensors: fp32, contiguous, no shared storage. A tied
    `lm_head.weight` is left out; HF re-ties it from `tie_word_embeddings` (safetensors
    refuses tensors sharing memory anyway)."""
    return {k: v.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
            for k, v in state.items() if not (cfg.tie_embeddings and k == "lm_head.weight")}


def state_dict_for_export(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`hf_tensors` of a live `Llama` or `RewardModel` (e.g. one not trained under DeepSpeed)."""
    return hf_tensors(model.cfg, _complete_state(model.cfg, model.state_dict(), source="model",
                                                 kind=model_kind(model)))


def model_kind(model: torch.nn.Module) -> str:
    """The `training.model.MODEL_KINDS` name of a live model."""
    return "reward" if isinstance(model, RewardModel) else "causal_lm"


# What HF names the single output of a reward model (config id2label / label2id).
REWARD_LABEL = "reward"


def to_hf_config(cfg: ModelConfig, *, kind: str = "causal_lm", bos_token_id: int | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None) -> dict[str, Any]:
    """config.json for `transformers.LlamaConfig`. Token ids are None unless given: LlamaConfig's
    defaults (bos 1, eos 2) are Llama-2's ids and would be wrong for our vocabularies.

    kind "reward" is `LlamaForSequenceClassification` with one label, which scores each row at
    its last token that is not `pad_token_id`: the pad id must be the tokenizer's `<|pad|>`."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    head = ({"architectures": ["LlamaForCausalLM"]} if kind == "causal_lm" else
            {"architectures": ["LlamaForSequenceClassification"], "num_labels": 1,
             "id2label": {"0": REWARD_LABEL}, "label2id": {REWARD_LABEL: 0}})
    return {
        **head,
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
    false), which keeps HF's ids equal to the ones the model was trained on. A tokenizer with
    the role tokens gets `training.chat`'s template, so `apply_chat_template` gives the ids
    training used.
    """
    from tokenizers import Tokenizer

    from llmforge.shard_format import EOS_TOKEN, special_token_ids
    from training.chat import CHAT_TEMPLATE, END, ROLES

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
    if all(t in specials for t in (END, *(f"<|{r}|>" for r in ROLES))):
        config["chat_template"] = CHAT_TEMPLATE
    ids = {"bos_token_id": specials.get(eos), "eos_token_id": specials.get(eos), "pad_token_id": specials.get(pad)}
    return config, ids


# ---------------------------------------------------------------------------- export

def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_hf_dir(cfg: ModelConfig, state: dict[str, torch.Tensor], out_dir: str | os.PathLike,
                tokenizer_path: str | os.PathLike | None = None, kind: str = "causal_lm",
                meta: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write an HF directory for `build_model(cfg, kind)` with weights `state` (its
    `state_dict()`, any dtype or device); returns `out_dir`. `meta` goes to llmforge.json as
    provenance, with the model config filled in when missing and `model_kind` set to `kind`.
    A reward model exported without a tokenizer has no pad id, and HF then scores only
    batches of one.

    Everything is written into a sibling temp dir that is renamed at the end, so an
    interrupted write leaves no directory that looks complete.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    state = _complete_state(cfg, state, source="state dict to save", kind=kind)
    ids: dict[str, int | None] = {}
    tok_config: dict[str, Any] | None = None
    if tokenizer_path is not None:
        tok_config, ids = tokenizer_files(tokenizer_path, cfg)
    if kind == "reward" and tokenizer_path is not None and ids["pad_token_id"] is None:
        # HF's sequence classifier reads the last token that is not the pad; without a pad
        # token of its own (eos would do, but it also ends every turn) it would read the wrong one.
        raise UserError(f"tokenizer {tokenizer_path} has no <|pad|> token, which a reward model export needs")
    meta = {"model": cfg.model_dump(), **(meta or {}), "model_kind": kind}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        if tok_config is not None:
            shutil.copyfile(tokenizer_path, tmp / TOKENIZER_FILE)
            _write_json(tmp / "tokenizer_config.json", tok_config)
        _write_json(tmp / "config.json", to_hf_config(cfg, kind=kind, **ids))
        if kind == "causal_lm":  # a sequence classifier does not generate
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


def export_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
              overwrite: bool = False) -> Path:
    """Write the HF directory for a checkpoint (`save_hf_dir`); returns `out_dir`. The
    tokenizer is `tokenizer_path`, else the checkpoint's tokenizer.json if it has one, else none.
    """
    ckpt, out = Path(ckpt_dir), Path(out_dir)
    if out.exists() and not overwrite:  # before the (slow) load
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    if tokenizer_path is None and (ckpt / TOKENIZER_FILE).exists():
        tokenizer_path = ckpt / TOKENIZER_FILE
    cfg, state = load_model_state(ckpt)
    meta = json.loads((ckpt / META).read_text())
    if "lora" in meta:  # the weights written are merged; nothing should apply the adapters again
        meta["lora_merged"] = meta.pop("lora")
    return save_hf_dir(cfg, state, out, tokenizer_path=tokenizer_path, kind=_kind(meta, ckpt / META),
                       meta=meta, overwrite=overwrite)
