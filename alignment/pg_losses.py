"""Online RL losses (the policy-gradient family): KL estimators, GRPO group advantages, GAE,
whitening, the clipped policy objective with its aggregations, the clipped value loss.

Pure torch on tensors the caller computed; nothing here runs a model or talks to workers.
Per-token tensors are (B, T) and aligned with the completion tokens they score; `mask` is 1 on
completion tokens (the stop token included) and 0 on the prompt and padding.

Normalisation under gradient accumulation: every aggregation is returned as a
(numerator, denominator) pair. The trainer adds the denominators of every micro-batch of an
optimizer step on every worker *before* the first backward and divides each micro-batch's
numerator by that total, so one big batch and any split into micro-batches and workers give
the same gradient. (Averaging per micro-batch instead weights a micro-batch of short
completions like one of long completions: the bug TRL fixed for its GRPO `token-mean`.)

Definitions (cited where they come from):
- k1 = logp - ref; k3 = exp(ref - logp) - (ref - logp) - 1 (Schulman, "Approximating KL
  divergence"; GRPO's per-token KL in the loss, DeepSeekMath eq. 4).
- GRPO advantage (r - mean_group) / (std_group + eps) (DeepSeekMath); `scale: none` keeps
  r - mean_group (Dr. GRPO, Liu et al. 2025). std is the unbiased sample std, as TRL's.
- ratio = exp(logp - old); loss_t = -min(ratio A, clamp(ratio, 1 - eps_low, 1 + eps_high) A)
  (PPO; DAPO's clip-higher uses eps_high 0.28).
- Aggregations: `token-mean` sum over every token / tokens in the step (DAPO, TRL "dapo");
  `seq-mean-token-mean` each sequence's token mean, then the mean over sequences (the
  original GRPO, TRL "grpo"); `dr-grpo` sum over tokens / (sequences x max completion length)
  (Dr. GRPO, TRL "dr_grpo").
- GAE: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1}, returns = A + V
  (TRL `PPOTrainer`, OpenRLHF `get_advantages_and_returns`); V after the last token is 0.
- Value loss 0.5 max((V - R)^2, (clamp(V, V_old - c, V_old + c) - R)^2) (TRL, OpenRLHF).
"""
from __future__ import annotations

from typing import Literal

import torch

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "dr-grpo")
Aggregation = Literal["token-mean", "seq-mean-token-mean", "dr-grpo"]


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs."""
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        # Clamped like TRL/OpenRLHF: a token the reference finds impossible would overflow exp.
        log_ratio = log_ratio.clamp(-20.0, 20.0)
        return log_ratio.exp() - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r} (k1, k3)")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: Literal["std", "none"] = "std",
                     eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages (N,), constant (N / group_size,) bool): rewards of consecutive groups of
    `group_size` samples of one prompt, centred per group (and divided by the group's std
    with scale "std"). A NaN reward is a sample that could not be scored: it is left out of
    its group's statistics and gets advantage 0. `constant` marks groups whose scored rewards
    are all equal (or fewer than two): their advantages are 0, they carry no signal."""
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if scale not in ("std", "none"):
        raise ValueError(f"unknown advantage scale {scale!r} (std, none)")
    grouped = rewards.double().view(-1, group_size)
    valid = ~torch.isnan(grouped)
    n = valid.sum(dim=1, keepdim=True)
    filled = torch.where(valid, grouped, torch.zeros_like(grouped))
    mean = filled.sum(dim=1, keepdim=True) / n.clamp(min=1)
    centred = torch.where(valid, grouped - mean, torch.zeros_like(grouped))
    spread = (torch.where(valid, grouped, torch.full_like(grouped, -torch.inf)).max(dim=1).values
              - torch.where(valid, grouped, torch.full_like(grouped, torch.inf)).min(dim=1).values)
    constant = (n.squeeze(1) < 2) | (spread == 0)
    if scale == "std":  # the unbiased sample std, as torch.std (TRL)
        std = ((centred ** 2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
        centred = centred / (std + eps)
    centred = torch.where(constant[:, None], torch.zeros_like(centred), centred)
    return centred.reshape(-1).float(), constant


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / std over the masked entries (TRL's `masked_whiten`); masked-out entries
    are returned as 0."""
    m = mask.float()
    n = m.sum()
    mean = (values * m).sum() / n
    var = (((values - mean) * m) ** 2).sum() / (n - 1).clamp(min=1)
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (B, T), for per-token rewards and value estimates over right-
    padded completions (`mask` 1 on the completion's tokens, a prefix of each row)."""
    m = mask.float()
    rewards, values = rewards.float() * m, values.float() * m
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * m[:, t]  # a padding position resets the recursion
        advantages[:, t] = last
    return advantages, (advantages + values) * m


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: Aggregation,
              max_completion_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator, denominator) of the aggregated loss over this batch; see the module doc.
    `dr-grpo` needs `max_completion_len` (the configured maximum, not this batch's)."""
    m = mask.float()
    if mode == "token-mean":
        return (per_token * m).sum(), m.sum().detach()
    if mode == "seq-mean-token-mean":
        lengths = m.sum(dim=1).clamp(min=1.0)
        return ((per_token * m).sum(dim=1) / lengths).sum(), (m.sum(dim=1) > 0).float().sum()
    if mode == "dr-grpo":
        if not max_completion_len:
            raise ValueError("dr-grpo aggregation needs max_completion_len")
        rows = (m.sum(dim=1) > 0).float().sum()
        return (per_token * m).sum(), rows * float(max_completion_len)
    raise ValueError(f"unknown loss aggregation {mode!r} ({', '.join(AGGREGATIONS)})")


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, eps_low: float = 0.2,
                        eps_high: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate loss (B, T) and metric sums over masked tokens: `clipped`
    (tokens where the clipped term was the one taken), `ratio` (sum of ratios), `tokens`.
    `advantages` is (B, T) or (B,) (one per sequence, broadcast over its tokens)."""
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logp)
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    m = mask.float()
    with torch.no_grad():
        was_clipped = (clipped < unclipped).float() * m
        metrics = {"clipped": was_clipped.sum(), "ratio": (ratio * m).sum(), "tokens": m.sum()}
    return loss, metrics


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token 0.5 max((V - R)^2, (V_clipped - R)^2) (B, T), and where the clipped term won."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    plain, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(plain, clipped), (clipped > plain).float()


def entropy_sum(logits: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """Sum over the rows of `logits` (N, V) of the entropy of their softmax (no gradient),
    float32, `chunk_rows` rows at a time."""
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for s in range(0, logits.shape[0], chunk_rows):
            lp = torch.log_softmax(logits[s:s + chunk_rows].float(), dim=-1)
            total += -(lp.exp() * lp).sum()
        return total
