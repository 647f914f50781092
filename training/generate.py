"""Autoregressive decoding with a KV cache: greedy or sampled (temperature, top-k, top-p).

Prompts of different lengths share a batch by left padding: each row gets its own rotary
positions (counting from its first real token) and a key mask that hides its padding, so a row
decodes exactly as it would alone. Used by `llmforge train sample`, and meant for RL rollouts
and generative evaluation, which need the chosen tokens' log-probabilities too.

Sampling draws from one `torch.Generator` for the whole batch, so a row's tokens depend on the
rows it shares a batch with. With `row_seeds`, each row instead samples by inverting its own
cumulative distribution at a uniform hashed from (its seed, the step): its tokens then depend
only on its own seed (and, through float rounding at near-ties, on nothing else), whatever the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from llmforge.common.config import StrictModel
from llmforge.common.errors import UserError
from training.model import Llama


class SamplingParams(StrictModel):
    max_new_tokens: int = Field(default=64, gt=0)
    temperature: float = Field(default=1.0, ge=0.0, description="0 = greedy")
    top_k: int | None = Field(default=None, gt=0, description="keep the k most likely tokens")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="nucleus: smallest set with this much mass")
    stop_token_ids: list[int] = Field(default_factory=list, description="end a row after emitting one of these")
    seed: int = 0


@dataclass
class Generation:
    tokens: list[int]  # the completion; a stop token that ended it is included
    logprobs: list[float]  # each chosen token's log-probability under softmax(logits / temperature)
    finish_reason: Literal["stop", "length"]


@torch.inference_mode()
def generate(model: Llama, prompts: list[list[int]], params: SamplingParams, pad_id: int = 0,
             row_seeds: list[int] | None = None) -> list[Generation]:
    """Continue each prompt (token ids) by up to `params.max_new_tokens` tokens. `row_seeds`
    (one int per prompt) gives each row its own random stream, independent of the batch;
    `params.seed` is then unused."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UserError("every prompt needs at least one token")
    device = model.rope_cos.device
    batch, width = len(prompts), max(len(p) for p in prompts)
    total = width + params.max_new_tokens - 1  # the last chosen token is never fed back
    if total > model.cfg.max_seq_len:
        raise UserError(f"longest prompt ({width} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds "
                        f"model.max_seq_len {model.cfg.max_seq_len}")
    was_training = model.training
    model.eval()
    ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    key_valid = torch.ones(batch, total, dtype=torch.bool, device=device)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, device=device)
        key_valid[row, :width - len(prompt)] = False
    pad = (width - lengths).unsqueeze(1)
    positions = (torch.arange(width, device=device).unsqueeze(0) - pad).clamp(min=0)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    # A padding query may see only itself: a row of all-False would make SDPA return NaN.
    mask = causal & (key_valid[:, None, :width] | torch.eye(width, dtype=torch.bool, device=device))
    cache = model.new_cache(batch, total)
    logits = model.forward_cached(ids, positions, cache, mask.unsqueeze(1))[:, -1]

    generator = torch.Generator(device=device).manual_seed(params.seed)
    stop = torch.tensor(params.stop_token_ids or [-1], device=device)
    # Chosen tokens by original row and step (-1: not generated, the row had stopped).
    out_tokens = torch.full((batch, params.max_new_tokens), -1, dtype=torch.long, device=device)
    out_logprobs = torch.zeros(batch, params.max_new_tokens, dtype=torch.float32, device=device)
    rows = torch.arange(batch, device=device)  # the original row of each row still decoding
    if row_seeds is not None and len(row_seeds) != batch:
        raise ValueError(f"{len(row_seeds)} row seeds for {batch} prompts")
    keys = None if row_seeds is None else torch.tensor([s & _M32 for s in row_seeds], device=device)
    for step in range(params.max_new_tokens):
        noise = None if keys is None or params.temperature == 0.0 else _uniforms(keys, step)
        token, logprob = _choose(logits.float(), params, generator, noise)
        out_tokens[rows, step] = token
        out_logprobs[rows, step] = logprob.float()
        stopped = torch.isin(token, stop)
        if bool(stopped.all()) or step == params.max_new_tokens - 1:
            break
        if 4 * int(stopped.sum()) >= len(rows):  # a quarter or more done: drop them from the batch
            live = (~stopped).nonzero().squeeze(1)
            rows, token, lengths, key_valid = rows[live], token[live], lengths[live], key_valid[live]
            keys = None if keys is None else keys[live]
            for layer_cache in cache:
                layer_cache.k, layer_cache.v = layer_cache.k[live], layer_cache.v[live]
        # Rows that stopped since the last compaction decode on with the others; what they add
        # is cut off below (each row's output ends at its first stop token).
        step_mask = key_valid[:, None, None, :width + step + 1]
        logits = model.forward_cached(token.unsqueeze(1), (lengths + step).unsqueeze(1), cache, step_mask)[:, -1]
    model.train(was_training)
    out = []
    for t, lp in zip(out_tokens.tolist(), out_logprobs.tolist()):
        n = next((i for i, x in enumerate(t) if x == -1), len(t))
        t, lp = t[:n], lp[:n]
        hit = next((i for i, x in enumerate(t) if x in params.stop_token_ids), None)
        out.append(Generation(t[:hit + 1], lp[:hit + 1], "stop") if hit is not None else Generation(t, lp, "length"))
    return out


def _choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator,
            noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-probability (before top-k/top-p truncation). With `noise`
    (one uniform in (0, 1) per row, float64) the choice is the inverse of the row's cumulative
    distribution over the kept tokens at that uniform, a draw from p renormalised over them, and
    `generator` is unused."""
    if params.temperature == 0.0:
        token = logits.argmax(-1)
        return token, torch.log_softmax(logits, -1).gather(-1, token[:, None]).squeeze(-1)
    scaled = logits / params.temperature
    logprobs = torch.log_softmax(scaled, -1)
    keep = torch.ones_like(scaled, dtype=torch.bool)
    if params.top_k is not None and params.top_k < scaled.shape[-1]:
        kth = scaled.topk(params.top_k, dim=-1).values[:, -1:]
        keep &= scaled >= kth
    if params.top_p < 1.0:  # on what top-k left, renormalised (the order Hugging Face applies them)
        probs, order = torch.softmax(scaled.masked_fill(~keep, float("-inf")), -1).sort(-1, descending=True)
        mass_before = probs.cumsum(-1) - probs  # a token stays while the mass above it is < top_p
        keep &= torch.zeros_like(keep).scatter(-1, order, mass_before < params.top_p)
    if noise is not None:
        # One uniform per row (not a Gumbel per row and token: hashing the whole vocabulary at
        # every step cost more than the decoding of a small model).
        cdf = torch.where(keep, logprobs.double().exp(), torch.zeros_like(logprobs, dtype=torch.float64)).cumsum(-1)
        token = torch.searchsorted(cdf, (noise * cdf[:, -1]).unsqueeze(-1)).squeeze(-1).clamp(max=scaled.shape[-1] - 1)
    else:
        probs = torch.where(keep, logprobs.exp(), torch.zeros_like(scaled))
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


_M32 = 0xFFFFFFFF


def _mul32(x, m: int):
    """(x * m) mod 2**32 for 0 <= x < 2**32, in halves so int64 tensors never overflow."""
    return (x * (m & 0xFFFF) + (((x * (m >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x):
    """A 32-bit integer hash (Wellons' lowbias32), on Python ints or int64 tensors alike."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform in (0, 1) per row (float64), a pure function of (row key, step): integer
    arithmetic only, so the same on every device and in every batch."""
    bits = _mix32(_mix32(keys ^ _mix32((step * 0x9E3779B9 + 0x632BE5AB) & _M32)) ^ 0x5BD1E995)
    return (bits.double() + 0.5) / 2.0 ** 32


def complete_texts(model: Llama, tokenizer, prompts: list[str], params: SamplingParams) -> list[str]:
    """Text continuations. Each prompt starts after a document boundary, as documents did in
    pretraining, and a row stops at the next boundary unless `params.stop_token_ids` says
    otherwise. `tokenizer` is a `tokenizers.Tokenizer` (the one the shards were made with)."""
    from llmforge.shard_format import EOS_TOKEN

    eos = tokenizer.token_to_id(EOS_TOKEN)
    start = [eos] if eos is not None else []
    ids = [start + tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    if not params.stop_token_ids and eos is not None:
        params = params.model_copy(update={"stop_token_ids": [eos]})
    out = generate(model, ids, params, pad_id=eos if eos is not None else 0)
    return [tokenizer.decode(g.tokens, skip_special_tokens=True) for g in out]



def complete_from_checkpoint(ckpt_dir, prompts: list[str], params: SamplingParams, tokenizer_path=None,
                             device: str = "cpu") -> list[str]:
    """`complete_texts` with a checkpoint's weights and its tokenizer (or `tokenizer_path`)."""
    import contextlib
    import sys
    from pathlib import Path

    from tokenizers import Tokenizer

    from llmforge.shard_format import TOKENIZER_FILE
    from training.export import load_model

    path = Path(tokenizer_path) if tokenizer_path else Path(ckpt_dir) / TOKENIZER_FILE
    if not path.exists():
        raise UserError(f"tokenizer {path}: no such file" if tokenizer_path
                        else f"{ckpt_dir} carries no {TOKENIZER_FILE}; pass one (--tokenizer)")
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's checkpoint reader talks on stdout
        model = load_model(ckpt_dir, device=device)
    return complete_texts(model, Tokenizer.from_file(str(path)), prompts, params)
