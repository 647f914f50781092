"""Log-likelihood of continuations given contexts: the primitive of every scored evaluation
(multiple choice, perplexity, contamination, the lm-evaluation-harness adapter).

    loglikelihood(model, [(context_ids, continuation_ids), ...]) -> [Score(logprob, greedy, n)]

Semantics are lm-evaluation-harness's `loglikelihood`: the sum of log p(continuation token |
everything before it), and whether greedy decoding would have produced the continuation.

Speed comes from sharing: requests are grouped by context, each distinct context is run once
(left-padded batches of contexts sorted by length, KV cache) and its continuations are scored
together against the cached keys and values — a 4-way multiple-choice item costs one context
forward instead of four. A context + continuation longer than the model's window keeps the
window's last tokens, as the harness does.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

from training.model import LayerCache


@dataclass(frozen=True)
class Score:
    logprob: float  # sum of the continuation tokens' log-probabilities
    greedy: bool  # every continuation token was the argmax
    tokens: int  # continuation tokens scored


def _fit(context: Sequence[int], continuation: Sequence[int], window: int) -> tuple[list[int], list[int]]:
    """Truncate from the left so that context + continuation - 1 tokens fit the model (the last
    continuation token is only predicted, never fed). At least one context token is needed to
    predict the first continuation token; an empty context is the harness's job to fill."""
    if not continuation:
        raise ValueError("empty continuation")
    if not context:
        raise ValueError("empty context: prepend a boundary token (e.g. <|endoftext|>) to score from the start")
    total = list(context) + list(continuation)
    keep = total[-(window + 1):]
    n_cont = len(continuation)
    if n_cont > window:
        raise ValueError(f"continuation of {n_cont} tokens does not fit the model's window of {window}")
    return keep[:-n_cont], keep[-n_cont:]


@torch.no_grad()
def loglikelihood(model, requests: Sequence[tuple[Sequence[int], Sequence[int]]], batch_tokens: int = 8192,
                  pad_id: int = 0) -> list[Score]:
    """Scores in request order. `batch_tokens` bounds each forward (rows x longest row)."""
    window = model.cfg.max_seq_len
    fitted = [_fit(c, k, window) for c, k in requests]
    by_context: OrderedDict[tuple[int, ...], list[int]] = OrderedDict()
    for i, (ctx, _) in enumerate(fitted):
        by_context.setdefault(tuple(ctx), []).append(i)
    # Longest first (as the harness): the first batch shows the peak memory at once.
    contexts = sorted(by_context, key=lambda c: -(len(c) + max(len(fitted[i][1]) for i in by_context[c])))
    out: list[Score | None] = [None] * len(requests)
    start = 0
    while start < len(contexts):
        longest = len(contexts[start]) + max(len(fitted[i][1]) for i in by_context[contexts[start]])
        rows, stop = 0, start
        while stop < len(contexts) and (rows + len(by_context[contexts[stop]])) * longest <= max(batch_tokens, longest * len(by_context[contexts[start]])):
            rows += len(by_context[contexts[stop]])
            stop += 1
        group = contexts[start:stop]
        scores = _score_group(model, group, [[fitted[i][1] for i in by_context[c]] for c in group], pad_id)
        for ctx, ctx_scores in zip(group, scores):
            for i, s in zip(by_context[ctx], ctx_scores):
                out[i] = s
        start = stop
    return out  # type: ignore[return-value]


def _score_group(model, contexts: list[tuple[int, ...]], continuations: list[list[list[int]]],
                 pad_id: int) -> list[list[Score]]:
    device = model.rope_cos.device
    b, width = len(contexts), max(len(c) for c in contexts)
    cont_width = max(len(k) for ks in continuations for k in ks)
    # 1. Contexts, left-padded, into a KV cache (as generation does).
    ids = torch.full((b, width), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros(b, width, dtype=torch.bool, device=device)
    for r, c in enumerate(contexts):
        ids[r, width - len(c):] = torch.tensor(c, device=device)
        valid[r, width - len(c):] = True
    pad = (~valid).sum(1, keepdim=True)
    positions = (torch.arange(width, device=device).unsqueeze(0) - pad).clamp(min=0)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    mask = causal & (valid[:, None, :] | torch.eye(width, dtype=torch.bool, device=device))
    cache = model.new_cache(b, width)
    ctx_logits = model.forward_cached(ids, positions, cache, mask.unsqueeze(1))[:, -1].float()
    # 2. Every continuation against its context's cache: rows repeated per continuation.
    owner = torch.tensor([r for r, ks in enumerate(continuations) for _ in ks], device=device)
    flat = [k for ks in continuations for k in ks]
    n = len(flat)
    cont = torch.full((n, cont_width), pad_id, dtype=torch.long, device=device)
    lengths = torch.tensor([len(k) for k in flat], device=device)
    for r, k in enumerate(flat):
        cont[r, :len(k)] = torch.tensor(k, device=device)
    big = [LayerCache(torch.cat([lc.k[owner], lc.k.new_zeros(n, *lc.k.shape[1:-2], cont_width, lc.k.shape[-1])], 2),
                      torch.cat([lc.v[owner], lc.v.new_zeros(n, *lc.v.shape[1:-2], cont_width, lc.v.shape[-1])], 2))
           for lc in cache]
    for lc in big:
        lc.length = width
    first = ctx_logits[owner]  # predicts each continuation's first token
    if cont_width > 1:
        feed = cont[:, :-1]
        pos = (positions[owner, -1:] + 1 + torch.arange(cont_width - 1, device=device)).long()
        # A row's padding after its own (shorter) continuation may run past the window; those
        # positions feed nothing (causal), but must still index the rotary table.
        pos = pos.clamp(max=model.rope_cos.shape[0] - 1)
        key_valid = torch.cat([valid[owner], torch.ones(n, cont_width - 1, dtype=torch.bool, device=device)], 1)
        step_causal = torch.ones(cont_width - 1, cont_width - 1, dtype=torch.bool, device=device).tril()
        m = torch.cat([key_valid[:, None, :width].expand(n, cont_width - 1, width), step_causal.expand(n, -1, -1)], 2)
        rest = model.forward_cached(feed, pos, big, m.unsqueeze(1)).float()
        logits = torch.cat([first.unsqueeze(1), rest], 1)
    else:
        logits = first.unsqueeze(1)
    logprobs = torch.log_softmax(logits, -1)
    chosen = logprobs.gather(-1, cont.unsqueeze(-1)).squeeze(-1)
    in_cont = torch.arange(cont_width, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    sums = (chosen * in_cont).sum(1)
    greedy = ((logits.argmax(-1) == cont) | ~in_cont).all(1)
    scores = [Score(float(s), bool(g), int(L)) for s, g, L in zip(sums.tolist(), greedy.tolist(), lengths.tolist())]
    out, i = [], 0
    for ks in continuations:
        out.append(scores[i:i + len(ks)])
        i += len(ks)
    return out


@torch.no_grad()
def rolling_token_logprobs(model, ids: Sequence[int], stride: int | None = None) -> torch.Tensor:
    """log p of tokens 1..n-1 of `ids`, each scored exactly once, in windows of the model's
    context (lm-evaluation-harness's `loglikelihood_rolling`: each window after the first sees
    the previous `window - stride` tokens as context and scores only its new tokens)."""
    window = model.cfg.max_seq_len
    stride = stride or window
    ids_t = torch.tensor(list(ids), dtype=torch.long, device=model.rope_cos.device)
    n = len(ids_t)
    out = torch.empty(max(n - 1, 0), dtype=torch.float32)
    scored = 1  # token 0 has no context
    while scored < n:
        end = min(scored + stride, n)
        begin = max(0, end - 1 - window)
        x = ids_t[begin:end - 1].unsqueeze(0)
        logits = model(x).float()[0]
        lp = torch.log_softmax(logits, -1)
        targets = ids_t[begin + 1:end]
        token_lp = lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        new = end - scored
        out[scored - 1:end - 1] = token_lp[-new:].cpu()
        scored = end
    return out
