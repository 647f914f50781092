"""Offline post-training losses: SFT, reward modelling (Bradley-Terry) and DPO.

Pure torch functions on tensors the caller has already computed (logits, summed
log-probs, scalar rewards); nothing here runs a model, touches a device or
talks to other workers. The definitions follow TRL 1.16 (the function each one
matches is cited next to it) so a run here can be compared with a TRL run.

Conventions
-----------
* Losses are returned **un-reduced**: per pair for the reward and DPO losses,
  as a (sum, token count) pair for SFT. The caller sums over every micro-batch
  of an accumulated step (and over workers) and divides once by the total
  number of pairs / tokens. Averaging micro-batch means instead would weight a
  short micro-batch like a long one.
* Every metric is a **sum** over the batch, returned as a detached 0-d float32
  tensor (so it can be all-reduced without a host sync). Each metrics dict
  carries ``"pairs"``, the number of pairs it sums over; the caller adds the
  dicts of all micro-batches and workers and divides each entry by the summed
  ``"pairs"`` to get TRL's logged means (``rewards/accuracies``,
  ``rewards/chosen``, ... for DPO; ``accuracy``, ``margin`` for the reward
  model).
* Log-probabilities are computed in float32 whatever the logits' dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo")

# Metric keys shared by reward_loss and dpo_metrics (all sums over pairs).
METRIC_KEYS = ("pairs", "accuracy", "chosen", "rejected", "margin")


# ---------------------------------------------------------------------------
# Token and sequence log-probabilities
# ---------------------------------------------------------------------------

def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets[b, t] | logits[b, t]) for every position, shape (B, T), float32.

    ``logits`` (B, T, V) must already be aligned with ``targets`` (B, T): row t
    scores targets[:, t] (no shift happens here; see :func:`sequence_logprobs`).

    Computed as ``logit[target] - logsumexp(logits)`` in float32, one batch row
    at a time, so the float32 copy of a bf16/fp16 (T, V) slab is the only
    transient -- never a full (B, T, V) float32 log_softmax. This is TRL's
    ``trl.trainer.utils.selective_log_softmax`` (gather minus logsumexp),
    except that half-precision logits are upcast rather than normalised in
    their own dtype.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"token_logprobs wants logits (B, T, V) and targets (B, T); got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    targets = targets.long()
    rows = []
    for row_logits, row_targets in zip(logits, targets):
        row = row_logits.float()
        picked = row.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    if not rows:  # B == 0
        return logits.new_zeros(targets.shape, dtype=torch.float32)
    return torch.stack(rows)


# Logits normalised at a time in float32 (positions x vocabulary): bounds the transient copy.
_CHUNK_ELEMENTS = 1 << 24


class _PickedLogprobs(torch.autograd.Function):
    """``log_softmax(logits[rows, cols])[targets]`` in float32, at the selected positions only.

    What :func:`token_logprobs` computes, without touching the other positions (a prompt or
    padding row is never normalised) and without one autograd node per batch row: positions
    go ``chunk`` at a time, a float32 (chunk, V) copy being the only transient in either pass,
    and the backward writes ``onehot(target) - softmax`` of the selected rows into a single
    zero tensor shaped like ``logits``.
    """

    @staticmethod
    def forward(ctx, logits, rows, cols, targets):
        n = rows.numel()
        chunk = max(1, _CHUNK_ELEMENTS // max(1, logits.shape[-1]))
        out = torch.empty(n, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(out)
        for s in range(0, n, chunk):
            e = s + chunk
            x = logits[rows[s:e], cols[s:e]].float()
            lse[s:e] = torch.logsumexp(x, dim=-1)
            out[s:e] = x.gather(-1, targets[s:e, None]).squeeze(-1) - lse[s:e]
        ctx.save_for_backward(logits, rows, cols, targets, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        logits, rows, cols, targets, lse = ctx.saved_tensors
        grad_logits = torch.zeros_like(logits)
        grad = grad.float()
        for s in range(0, rows.numel(), ctx.chunk):
            e = s + ctx.chunk
            g = grad[s:e, None]
            # d(x[t] - logsumexp(x))/dx = onehot(t) - softmax(x)
            d = torch.exp(logits[rows[s:e], cols[s:e]].float() - lse[s:e, None]).mul_(-g)
            d.scatter_add_(-1, targets[s:e, None], g)
            grad_logits[rows[s:e], cols[s:e]] = d.to(grad_logits.dtype)
        return grad_logits, None, None, None


def sequence_logprobs(
    logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token log-prob of the masked tokens of each sequence.

    Args:
        logits: (B, T, V) the model's output for ``ids`` (unshifted: row t is
            the distribution of the token *after* ids[:, t]).
        ids: (B, T) token ids fed to the model.
        mask: (B, T) 1 on the tokens to score (the completion), 0 on prompt
            and padding. It is indexed like ``ids``: mask[b, t] says whether
            token ids[b, t] is scored.

    The shift: token ids[:, t] (t >= 1) is predicted by logits[:, t - 1], so
    this scores ``token_logprobs(logits[:, :-1], ids[:, 1:])`` where
    ``mask[:, 1:]`` is 1 (the same values, computed at those positions only:
    prompt and padding rows of the logits are never normalised, so a -inf
    there cannot turn into NaN, and their gradient is zero). ``logits[:, -1]``
    (the prediction after the last token) and ``mask[:, 0]`` (the first token
    has no prediction) are unused.
    This is what TRL 1.16's DPOTrainer does: it builds
    ``labels = input_ids.masked_fill(completion_mask == 0, -100)``, its fused
    LM head scores ``labels[:, 1:]`` from hidden states ``[:, :-1]``
    (``trl.trainer.utils.add_fused_lm_head``), and ``_compute_loss`` sums the
    per-token log-probs over the sequence.

    Returns:
        (logp_sum, count): (B,) float32 sum of the scored log-probs and (B,)
        int64 number of scored tokens (the completion length; IPO divides by it).
    """
    if ids.shape != mask.shape or logits.shape[:2] != ids.shape:
        raise ValueError(
            f"sequence_logprobs wants logits (B, T, V), ids and mask (B, T); got {tuple(logits.shape)}, "
            f"{tuple(ids.shape)}, {tuple(mask.shape)}"
        )
    scored = mask[:, 1:].bool()
    rows, cols = scored.nonzero(as_tuple=True)
    picked = _PickedLogprobs.apply(logits, rows, cols, ids[rows, cols + 1].long())
    per_token = picked.new_zeros(scored.shape).index_put((rows, cols), picked)
    return per_token.sum(dim=1), scored.sum(dim=1)


def selected_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[targets] for logits (N, V) of positions already selected (float32, N,),
    with :class:`_PickedLogprobs`' chunked float32 normalisation and single backward."""
    positions = torch.arange(logits.shape[0], device=logits.device)
    return _PickedLogprobs.apply(logits.unsqueeze(0), torch.zeros_like(positions), positions, targets.long())


# ---------------------------------------------------------------------------
# SFT
# ---------------------------------------------------------------------------

def sft_loss_sum(
    logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL over the masked tokens, and how many there were.

    Same arguments and shift as :func:`sequence_logprobs`. Returns
    ``(loss_sum, n_tokens)``: a float32 0-d tensor (with grad) and an int64
    0-d tensor. The caller sums both over all micro-batches (and workers) of a
    step and uses ``loss_sum / total_tokens`` -- the token-weighted mean over
    the whole accumulated batch, as TRL's SFTTrainer gets by passing
    ``num_items_in_batch`` (the step's token count) to the model's loss.
    ``loss_sum / n_tokens`` on one micro-batch equals
    ``F.cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100)`` with
    the unscored labels set to -100.
    """
    logp_sum, count = sequence_logprobs(logits, ids, mask)
    return -logp_sum.sum(), count.sum()


# ---------------------------------------------------------------------------
# Pair metrics (shared by the reward model and DPO)
# ---------------------------------------------------------------------------

def _pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums over pairs: count, accuracy (chosen > rejected, ties count as wrong), chosen, rejected, margin."""
    chosen = chosen.detach().float()
    rejected = rejected.detach().float()
    return {
        "pairs": torch.tensor(float(chosen.numel()), device=chosen.device),
        "accuracy": (chosen > rejected).float().sum(),
        "chosen": chosen.sum(),
        "rejected": rejected.sum(),
        "margin": (chosen - rejected).sum(),
    }


def _as_pair_vector(x: torch.Tensor, name: str) -> torch.Tensor:
    """(B,) or (B, 1) -> (B,) float32."""
    if x.dim() == 2 and x.size(-1) == 1:
        x = x.squeeze(-1)
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape (B,) or (B, 1); got {tuple(x.shape)}")
    return x.float()


# ---------------------------------------------------------------------------
# Reward model (Bradley-Terry)
# ---------------------------------------------------------------------------

def reward_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_coeff: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry pairwise loss on scalar rewards, per pair.

    ``loss_i = -log sigma(r_c,i - r_r,i - margin_i) + center_coeff * (r_c,i + r_r,i)^2``

    This is ``trl.RewardTrainer.compute_loss`` (TRL 1.16, reward_trainer.py)::

        loss = -logsigmoid(rewards_chosen - rewards_rejected - inputs["margin"]).mean()
        if center_rewards_coefficient is not None:
            loss += center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)

    written per pair: the mean of these per-pair losses over a micro-batch is
    exactly TRL's loss (both terms are means over the same pairs), and summing
    them over an accumulated step and dividing by the pair count extends it
    to the whole step. ``center_coeff=0.0`` is TRL's ``None``.

    Args:
        chosen, rejected: (B,) or (B, 1) rewards of the chosen/rejected responses.
        margin: optional (B,) per-pair margin (or a float for every pair).
        center_coeff: TRL's ``center_rewards_coefficient`` (>= 0).

    Returns:
        (loss (B,) float32, metrics): metrics as in :func:`dpo_metrics`, summed
        over pairs -- ``accuracy`` counts r_c > r_r, ``margin`` sums r_c - r_r
        (without the ``margin`` argument, like TRL's logged ``margin``).
    """
    if center_coeff < 0:
        raise ValueError(f"center_coeff must be >= 0; got {center_coeff}")
    chosen = _as_pair_vector(chosen, "chosen")
    rejected = _as_pair_vector(rejected, "rejected")
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} differ in shape")
    diff = chosen - rejected
    if margin is not None:
        if isinstance(margin, torch.Tensor):
            margin = margin.to(diff.device, torch.float32)
            if margin.dim() != 0 and margin.shape != diff.shape:
                raise ValueError(f"margin must be a scalar or shape {tuple(diff.shape)}; got {tuple(margin.shape)}")
        diff = diff - margin
    loss = -F.logsigmoid(diff)
    if center_coeff:
        loss = loss + center_coeff * (chosen + rejected) ** 2
    return loss, _pair_metrics(chosen, rejected)


# ---------------------------------------------------------------------------
# DPO
# ---------------------------------------------------------------------------

def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_len: torch.Tensor | None = None,
    rejected_len: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss per pair from summed completion log-probs.

    Args:
        policy_chosen, policy_rejected: (B,) summed completion log-probs under
            the policy (:func:`sequence_logprobs`), with grad.
        ref_chosen, ref_rejected: (B,) the same under the frozen reference
            (computed without grad; not detached here).
        beta: > 0. For IPO it is TRL's tau (the target log-ratio gap is 1/(2 beta)).
        loss_type: "sigmoid", "robust" or "ipo".
        label_smoothing: epsilon in [0, 0.5), sigmoid and robust only.
        chosen_len, rejected_len: (B,) completion token counts (the ``count``
            of :func:`sequence_logprobs`); required by "ipo", ignored otherwise.

    With ``delta = (pi_c - ref_c) - (pi_r - ref_r)``, per pair:

    * sigmoid: ``-(1 - eps) log sigma(beta delta) - eps log sigma(-beta delta)``.
      At eps = 0 this is TRL 1.16 ``DPOTrainer._compute_loss`` ``loss_type ==
      "sigmoid"`` (``-F.logsigmoid(self.beta * delta_score)``). eps > 0 is
      conservative DPO (cDPO): NOTE TRL 1.16's "sigmoid" branch ignores
      ``label_smoothing`` (its DPOConfig documents it for robust and EXO only);
      the smoothed form here is the one TRL 1.16 still uses in its "aot"
      branches and that its "sigmoid" used before 1.0.
    * robust: ``(-(1 - eps) log sigma(beta delta) + eps log sigma(-beta delta)) / (1 - 2 eps)``,
      TRL 1.16 ``_compute_loss`` ``loss_type == "robust"``.
    * ipo: ``(delta_c / len_c - delta_r / len_r - 1 / (2 beta))^2`` with
      ``delta_x = pi_x - ref_x``: each side's log-ratio is divided by its
      completion length (clamped to >= 1), TRL 1.16 ``_compute_loss``
      ``loss_type == "ipo"`` (``chosen_scores / chosen_mask.sum(dim=1).clamp(min=1.0)``).
      TRL's IPO ignores label_smoothing; here a non-zero one is an error.

    Returns:
        (loss (B,) float32, chosen_rewards (B,), rejected_rewards (B,)), the
        rewards being ``beta * (policy - ref)``, detached (TRL's
        ``rewards/chosen`` / ``rewards/rejected``; for IPO too they use the
        summed, not length-normalised, log-ratios, as in TRL).
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}; got {loss_type!r}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    if loss_type == "ipo":
        if label_smoothing != 0.0:
            raise ValueError(f"label_smoothing has no meaning for the ipo loss; got {label_smoothing}")
        if chosen_len is None or rejected_len is None:
            raise ValueError("the ipo loss needs chosen_len and rejected_len (completion token counts)")
    elif not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0.0, 0.5); got {label_smoothing}")
    shape = policy_chosen.shape
    for name, t in (("policy_rejected", policy_rejected), ("ref_chosen", ref_chosen),
                    ("ref_rejected", ref_rejected)):
        if t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, policy_chosen {tuple(shape)}")

    chosen_logratios = policy_chosen.float() - ref_chosen.float()
    rejected_logratios = policy_rejected.float() - ref_rejected.float()

    if loss_type == "ipo":
        chosen_avg = chosen_logratios / chosen_len.to(chosen_logratios.device).float().clamp(min=1.0)
        rejected_avg = rejected_logratios / rejected_len.to(rejected_logratios.device).float().clamp(min=1.0)
        loss = (chosen_avg - rejected_avg - 1.0 / (2.0 * beta)) ** 2
    else:
        logits = beta * (chosen_logratios - rejected_logratios)
        eps = label_smoothing
        if loss_type == "sigmoid":
            loss = -F.logsigmoid(logits) * (1.0 - eps) - F.logsigmoid(-logits) * eps
        else:  # robust
            loss = (-(1.0 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1.0 - 2.0 * eps)

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return loss, chosen_rewards, rejected_rewards


def dpo_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums over the pairs of a batch, as detached 0-d float32 tensors.

    Keys: ``pairs`` (number of pairs), ``accuracy`` (pairs with chosen >
    rejected; ties count as wrong), ``chosen``, ``rejected``, ``margin``
    (chosen - rejected). Add the dicts of every micro-batch and worker, then
    divide each by the summed ``pairs`` to get TRL's ``rewards/accuracies``,
    ``rewards/chosen``, ``rewards/rejected`` and ``rewards/margins``
    (TRL 1.16 ``DPOTrainer._compute_loss``, which logs their means).
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(
            f"chosen_rewards {tuple(chosen_rewards.shape)} and rejected_rewards "
            f"{tuple(rejected_rewards.shape)} differ in shape"
        )
    return _pair_metrics(chosen_rewards, rejected_rewards)
