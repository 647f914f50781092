"""Log-likelihood of continuations given contexts: the primitive of every scored evaluation
(multiple choice, perplexity, contamination, the lm-evaluation-harness adapter).

    loglikelihood(model, [(context_ids, continuation_ids), ...]) -> [Score(logprob, greedy, n)]

Semantics are lm-evaluation-harness's `loglikelihood`: the sum of log p(continuation token |
everything before it), and whether greedy decoding would have produced the continuation.

Speed comes from sharing: requests are grouped by context, and each distinct context becomes
one row holding the context once and all its continuations after it, each continuation at the
positions right after the context and attending only to the context and to itself — so a
4-way multiple-choice item costs one forward over context + choices instead of four over
context + choice, and the output head (a large share of a small model's work) runs only where
a continuation token is predicted. Rows are sorted by length and right-padded into batches of
about `batch_tokens`. A context + continuation longer than the model's window keeps the
window's last tokens, as the harness does.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch



MAX_PADDING = 0.1  # of a batch's tokens: a shorter row starts the next batch instead


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
    # One row per context and its continuations, packed after it (a row longer than twice the
    # window is split, so no row's attention mask grows without bound).
    rows: list[tuple[tuple[int, ...], list[int]]] = []
    for ctx, members in by_context.items():
        limit = max(2 * window, len(ctx) + max(len(fitted[i][1]) for i in members))
        chunk, length = [], len(ctx)
        for i in members:
            n = len(fitted[i][1]) - 1
            if chunk and length + n > limit:
                rows.append((ctx, chunk))
                chunk, length = [], len(ctx)
            chunk.append(i)
            length += n
        rows.append((ctx, chunk))
    lengths = [len(ctx) + sum(len(fitted[i][1]) - 1 for i in members) for ctx, members in rows]
    # Longest first (as the harness): the first batch shows the peak memory at once.
    order = sorted(range(len(rows)), key=lambda r: -lengths[r])
    out: list[Score | None] = [None] * len(requests)
    start = 0
    while start < len(order):
        # Rows while they fit `batch_tokens` and padding stays under MAX_PADDING of the batch
        # (lengths fall along the order: each row pads to the first).
        longest, real, stop = lengths[order[start]], lengths[order[start]], start + 1
        while (stop < len(order) and (stop - start + 1) * longest <= batch_tokens
               and real + lengths[order[stop]] >= (1 - MAX_PADDING) * (stop - start + 1) * longest):
            real += lengths[order[stop]]
            stop += 1
        batch = [rows[r] for r in order[start:stop]]
        scores = _score_rows(model, [(ctx, [fitted[i][1] for i in members]) for ctx, members in batch], pad_id)
        for (_, members), row_scores in zip(batch, scores):
            for i, sc in zip(members, row_scores):
                out[i] = sc
        start = stop
    return out  # type: ignore[return-value]


def _hidden(model, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states of `ids` at rotary `positions` under an attention `mask`
    (batch, 1, seq, seq), True = attend: `training.model.Llama`'s blocks, without its head."""
    x = model.model.embed_tokens(ids)
    cos = model.rope_cos[positions].unsqueeze(1).to(x.dtype)
    sin = model.rope_sin[positions].unsqueeze(1).to(x.dtype)
    for block in model.model.layers:
        x = block(x, cos, sin, None, mask)
    return model.model.norm(x)


def _score_rows(model, rows: list[tuple[tuple[int, ...], list[list[int]]]], pad_id: int) -> list[list[Score]]:
    """One forward for a batch of rows, each a context followed by all its continuations but
    their last tokens, which are only predicted (right-padded). A continuation's tokens sit at the positions right after the context and
    attend to the context and to their own earlier tokens only, so each is scored exactly as
    if it alone followed the context; the context is run once. The head runs only where a
    continuation token is predicted."""
    device = model.rope_cos.device
    b = len(rows)
    width = max(len(ctx) + sum(len(k) - 1 for k in conts) for ctx, conts in rows)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    positions = torch.zeros(b, width, dtype=torch.long)
    segment = torch.full((b, width), -1, dtype=torch.long)  # 0 context, j + 1 continuation j, -1 padding
    src_row, src_col, targets, owner = [], [], [], []  # per scored token: where it is predicted, what, for whom
    n = 0
    for r, (ctx, conts) in enumerate(rows):
        c = len(ctx)
        ids[r, :c] = torch.tensor(ctx)
        positions[r, :c] = torch.arange(c)
        segment[r, :c] = 0
        at = c
        for j, k in enumerate(conts):
            m = len(k) - 1  # the last token is only predicted, never fed
            ids[r, at:at + m] = torch.tensor(k[:-1])
            positions[r, at:at + m] = torch.arange(c, c + m)
            segment[r, at:at + m] = j + 1
            src_row.extend([r] * (m + 1))
            src_col.append(c - 1)
            src_col.extend(range(at, at + m))
            targets.extend(k)
            owner.extend([n] * (m + 1))
            n += 1
            at += m
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = causal & (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q))
    mask |= torch.eye(width, dtype=torch.bool)  # a padding query sees itself (no all-False row)
    hidden = _hidden(model, ids.to(device), positions.to(device), mask.unsqueeze(1).to(device))
    picked = hidden[torch.tensor(src_row, device=device), torch.tensor(src_col, device=device)]
    logits = model.lm_head(picked).float()
    target = torch.tensor(targets, device=device)
    token_lp = logits.gather(-1, target[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
    wrong = (logits.argmax(-1) != target).double()
    who = torch.tensor(owner, device=device)
    sums = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, who, token_lp.double())
    misses = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, who, wrong)
    counts = torch.zeros(n, dtype=torch.long, device=device).index_add_(0, who, torch.ones_like(who))
    flat = [Score(float(s), m == 0, int(t)) for s, m, t in zip(sums.tolist(), misses.tolist(), counts.tolist())]
    out, i = [], 0
    for _, conts in rows:
        out.append(flat[i:i + len(conts)])
        i += len(conts)
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
