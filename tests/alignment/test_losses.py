"""alignment.losses: hand-computed values, then the same numbers from TRL 1.16's own trainer code.

The hand tests spell the math out with math.log/exp; the TRL tests call
``RewardTrainer.compute_loss`` and ``DPOTrainer._compute_loss`` unbound, with a
namespace standing in for the trainer (only the attributes those methods read),
so the comparison is against TRL's code, not a transcription of it.
"""
from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from alignment.losses import (
    METRIC_KEYS,
    dpo_loss,
    dpo_metrics,
    reward_loss,
    sequence_logprobs,
    sft_loss_sum,
    token_logprobs,
)


def log_sigmoid(x: float) -> float:
    return -math.log(1.0 + math.exp(-x))


def approx(values, rel=1e-6, abs=1e-6):
    return pytest.approx(values, rel=rel, abs=abs)


# ---------------------------------------------------------------------------
# token / sequence log-probs, SFT
# ---------------------------------------------------------------------------

def test_token_logprobs_by_hand():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]]])
    out = token_logprobs(logits, torch.tensor([[2, 1]]))
    e = math.e
    assert out.shape == (1, 2) and out.dtype == torch.float32
    assert out[0].tolist() == approx([2.0 - math.log(1 + e + e**2), 0.0 - math.log(e**3 + 2)])


def test_token_logprobs_half_precision_is_computed_in_fp32():
    torch.manual_seed(0)
    logits = (torch.randn(2, 5, 50) * 4).to(torch.bfloat16)
    targets = torch.randint(0, 50, (2, 5))
    out = token_logprobs(logits, targets)
    ref = torch.log_softmax(logits.double(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)


def _seq_case():
    """Two sequences, T=4, V=3, with every logits row written out."""
    ids = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    # seq 0: prompt 0 1, completion 2 1.  seq 1: prompt 2, completion 2 0, then a pad (0) not scored.
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    logits = torch.tensor([
        [[0.0, 0.0, 0.0],      # predicts ids[0,1]=1: a prompt token, not scored
         [1.0, 0.0, 0.0],      # predicts ids[0,2]=2: scored
         [0.0, 2.0, 0.0],      # predicts ids[0,3]=1: scored
         [100.0, -100.0, 0.0]],  # after the last token: never used
        [[0.0, 0.0, 1.0],      # predicts ids[1,1]=2: scored
         [0.0, 0.0, 0.0],      # predicts ids[1,2]=0: scored
         [5.0, 0.0, 0.0],      # predicts ids[1,3]=0: padding, not scored
         [-7.0, 3.0, 9.0]],    # never used
    ])
    e = math.e
    expected = [
        (0.0 - math.log(e + 2)) + (2.0 - math.log(e**2 + 2)),
        (1.0 - math.log(2 + e)) + (0.0 - math.log(3)),
    ]
    return logits, ids, mask, expected


def test_sequence_logprobs_shift_and_mask_by_hand():
    logits, ids, mask, expected = _seq_case()
    total, count = sequence_logprobs(logits, ids, mask)
    assert total.tolist() == approx(expected)
    assert count.tolist() == [2, 2] and count.dtype == torch.int64
    # mask[:, 0] has no prediction: setting it changes nothing.
    mask0 = mask.clone()
    mask0[:, 0] = 1
    assert sequence_logprobs(logits, ids, mask0)[0].tolist() == approx(expected)
    # An unscored position whose target has probability 0 (-inf log-prob) must not poison the sum.
    poisoned = logits.clone()
    poisoned[1, 2, 0] = float("-inf")
    total, _ = sequence_logprobs(poisoned, ids, mask)
    assert torch.isfinite(total).all() and total.tolist() == approx(expected)


@pytest.mark.parametrize("chunk_elements", [1 << 24, 7])  # one chunk; several (7 // V = 1 position each)
def test_sequence_logprobs_value_and_gradient_match_the_full_log_softmax(monkeypatch, chunk_elements):
    """Only the scored positions are normalised, in chunks, with a hand-written backward: the
    sums and the gradient equal those of log_softmax over every position, masked."""
    import alignment.losses as losses

    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", chunk_elements)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5, (3, 6), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    logits = torch.randn(3, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    full = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    expected = torch.where(mask[:, 1:].bool(), full, full.new_zeros(())).sum(1)
    weights = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
    total, count = sequence_logprobs(logits, ids, mask)
    (grad,) = torch.autograd.grad((total * weights).sum(), logits)
    torch.testing.assert_close(total.double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-6)
    assert count.tolist() == [3, 5, 0] and total[2].item() == 0.0
    # bf16 logits: computed in fp32, the gradient comes back in bf16.
    half = logits.detach().to(torch.bfloat16).requires_grad_()
    sequence_logprobs(half, ids, mask)[0].sum().backward()
    assert half.grad.dtype == torch.bfloat16 and half.grad[:, -1].abs().sum() == 0


def test_sequence_logprobs_rejects_misaligned_shapes():
    logits, ids, mask, _ = _seq_case()
    with pytest.raises(ValueError):
        sequence_logprobs(logits[:, :-1], ids, mask)
    with pytest.raises(ValueError):
        sequence_logprobs(logits, ids, mask[:, :-1])


def test_sft_loss_sum_by_hand():
    logits, ids, mask, expected = _seq_case()
    loss_sum, n = sft_loss_sum(logits, ids, mask)
    assert loss_sum.item() == approx(-sum(expected))
    assert n.item() == 4


def _sft_batch(seed=0, B=3, T=9, V=13):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    # different prompt and completion lengths per row, right padding after the completion
    for b, (start, end) in enumerate([(2, 9), (4, 6), (1, 8)][:B]):
        mask[b, start:end] = 1
    return logits, ids, mask


def test_sft_loss_sum_over_count_equals_cross_entropy_with_ignore_index():
    logits, ids, mask = _sft_batch()
    labels = ids.masked_fill(mask == 0, -100)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100)
    loss_sum, n = sft_loss_sum(logits, ids, mask)
    assert n.item() == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(loss_sum / n, ce)
    # same gradient as well
    (g_ours,) = torch.autograd.grad(loss_sum / n, logits)
    (g_ce,) = torch.autograd.grad(ce, logits)
    torch.testing.assert_close(g_ours, g_ce)


def test_sft_sums_normalise_over_the_accumulated_batch():
    logits, ids, mask = _sft_batch()
    labels = ids.masked_fill(mask == 0, -100)
    whole = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                            ignore_index=-100)
    parts = [sft_loss_sum(logits[s], ids[s], mask[s]) for s in (slice(0, 1), slice(1, 3))]
    total = sum(p[0] for p in parts) / sum(p[1] for p in parts)
    torch.testing.assert_close(total, whole)
    # averaging the micro-batch means would be a different (wrong) number here: the token counts differ
    assert parts[0][1] != parts[1][1] / 2
    mean_of_means = sum(p[0] / p[1] for p in parts) / 2
    assert abs(mean_of_means.item() - whole.item()) > 1e-4


# ---------------------------------------------------------------------------
# reward model
# ---------------------------------------------------------------------------

def test_reward_loss_by_hand():
    chosen = torch.tensor([2.0, 0.5])
    rejected = torch.tensor([1.0, 1.5])
    loss, m = reward_loss(chosen, rejected, margin=torch.tensor([0.5, 0.0]), center_coeff=0.01)
    assert loss.tolist() == approx([
        -log_sigmoid(2.0 - 1.0 - 0.5) + 0.01 * (2.0 + 1.0) ** 2,
        -log_sigmoid(0.5 - 1.5 - 0.0) + 0.01 * (0.5 + 1.5) ** 2,
    ])
    assert set(m) == set(METRIC_KEYS)
    assert {k: v.item() for k, v in m.items()} == approx(
        {"pairs": 2.0, "accuracy": 1.0, "chosen": 2.5, "rejected": 2.5, "margin": (2.0 - 1.0) + (0.5 - 1.5)})


def test_reward_loss_defaults_shapes_and_scalar_margin():
    chosen = torch.tensor([[0.3], [-1.0], [2.0]])  # (B, 1) straight from a scalar head
    rejected = torch.tensor([[0.3], [-2.0], [4.0]])
    loss, m = reward_loss(chosen, rejected)
    assert loss.shape == (3,)
    assert loss.tolist() == approx([-log_sigmoid(0.0), -log_sigmoid(1.0), -log_sigmoid(-2.0)])
    assert m["accuracy"].item() == 1.0  # the tie (0.3, 0.3) counts as wrong, as in TRL
    loss, _ = reward_loss(chosen, rejected, margin=0.25)
    assert loss.tolist() == approx([-log_sigmoid(-0.25), -log_sigmoid(0.75), -log_sigmoid(-2.25)])
    with pytest.raises(ValueError):
        reward_loss(chosen, rejected, center_coeff=-1.0)
    with pytest.raises(ValueError):
        reward_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError):
        reward_loss(torch.zeros(3), torch.zeros(3), margin=torch.zeros(2))


# ---------------------------------------------------------------------------
# DPO, by hand
# ---------------------------------------------------------------------------

# Summed log-probs of two pairs. Log-ratios: chosen [1.0, -0.5], rejected [-0.5, 0.0];
# delta = [1.5, -0.5]; with beta = 0.5, beta * delta = [0.75, -0.25].
PC = torch.tensor([-5.0, -8.0])
PR = torch.tensor([-7.0, -6.0])
RC = torch.tensor([-6.0, -7.5])
RR = torch.tensor([-6.5, -6.0])
BETA = 0.5
BD = [0.75, -0.25]


def test_dpo_sigmoid_by_hand():
    loss, cr, rr = dpo_loss(PC, PR, RC, RR, BETA)
    assert loss.tolist() == approx([-log_sigmoid(x) for x in BD])
    assert cr.tolist() == approx([0.5, -0.25]) and rr.tolist() == approx([-0.25, 0.0])


def test_dpo_sigmoid_label_smoothing_is_conservative_dpo():
    eps = 0.1
    loss, _, _ = dpo_loss(PC, PR, RC, RR, BETA, label_smoothing=eps)
    assert loss.tolist() == approx([-(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x) for x in BD])


def test_dpo_robust_by_hand():
    eps = 0.1
    loss, _, _ = dpo_loss(PC, PR, RC, RR, BETA, loss_type="robust", label_smoothing=eps)
    assert loss.tolist() == approx(
        [(-(1 - eps) * log_sigmoid(x) + eps * log_sigmoid(-x)) / (1 - 2 * eps) for x in BD])
    # eps = 0 is plain DPO
    plain, _, _ = dpo_loss(PC, PR, RC, RR, BETA, loss_type="robust")
    assert plain.tolist() == approx([-log_sigmoid(x) for x in BD])


def test_dpo_ipo_divides_each_log_ratio_by_its_length():
    loss, cr, rr = dpo_loss(PC, PR, RC, RR, BETA, loss_type="ipo",
                            chosen_len=torch.tensor([2, 4]), rejected_len=torch.tensor([5, 1]))
    # chosen 1.0/2, -0.5/4; rejected -0.5/5, 0.0/1; target gap 1/(2*0.5) = 1
    assert loss.tolist() == approx([(0.5 - (-0.1) - 1.0) ** 2, (-0.125 - 0.0 - 1.0) ** 2])
    # rewards stay beta * summed log-ratio, as TRL logs them
    assert cr.tolist() == approx([0.5, -0.25]) and rr.tolist() == approx([-0.25, 0.0])
    # an empty completion counts as length 1 (TRL clamps to >= 1)
    loss0, _, _ = dpo_loss(PC, PR, RC, RR, BETA, loss_type="ipo",
                           chosen_len=torch.tensor([0, 4]), rejected_len=torch.tensor([5, 1]))
    assert loss0[0].item() == approx((1.0 - (-0.1) - 1.0) ** 2)


def test_dpo_gradient_and_detached_rewards():
    pc = PC.clone().requires_grad_(True)
    loss, cr, rr = dpo_loss(pc, PR, RC, RR, BETA)
    assert not cr.requires_grad and not rr.requires_grad
    (grad,) = torch.autograd.grad(loss.sum(), pc)
    # d/dpc of -log sigma(beta * delta) = -beta * sigma(-beta * delta)
    assert grad.tolist() == approx([-BETA / (1 + math.exp(x)) for x in BD])


def test_dpo_metrics_are_sums():
    _, cr, rr = dpo_loss(PC, PR, RC, RR, BETA)
    m = dpo_metrics(cr, rr)
    assert set(m) == set(METRIC_KEYS)
    assert all(v.dim() == 0 and v.dtype == torch.float32 and not v.requires_grad for v in m.values())
    # rewards chosen [0.5, -0.25], rejected [-0.25, 0.0]
    assert {k: v.item() for k, v in m.items()} == approx(
        {"pairs": 2.0, "accuracy": 1.0, "chosen": 0.25, "rejected": -0.25, "margin": 0.75 + -0.25})
    # summing two micro-batches' dicts, then dividing by pairs, gives the mean over all pairs
    m2 = dpo_metrics(torch.tensor([1.0]), torch.tensor([3.0]))
    total = {k: m[k] + m2[k] for k in m}
    assert (total["accuracy"] / total["pairs"]).item() == approx(1 / 3)
    assert (total["margin"] / total["pairs"]).item() == approx((0.5 - 2.0) / 3)


def test_dpo_validation():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(PC, PR, RC, RR, BETA, loss_type="hinge")
    for eps in (-0.1, 0.5, 0.7):
        for lt in ("sigmoid", "robust"):
            with pytest.raises(ValueError, match="label_smoothing"):
                dpo_loss(PC, PR, RC, RR, BETA, loss_type=lt, label_smoothing=eps)
    with pytest.raises(ValueError, match="chosen_len"):
        dpo_loss(PC, PR, RC, RR, BETA, loss_type="ipo")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(PC, PR, RC, RR, BETA, loss_type="ipo", label_smoothing=0.1,
                 chosen_len=torch.ones(2), rejected_len=torch.ones(2))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(PC, PR, RC, RR, 0.0)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(PC, PR[:1], RC, RR, BETA)


# ---------------------------------------------------------------------------
# Against TRL 1.16's trainer code
# ---------------------------------------------------------------------------

class _Accelerator:
    """What the two TRL methods use of an Accelerator, on one CPU process."""

    device = torch.device("cpu")

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x

    def autocast(self):
        return contextlib.nullcontext()


def _trainer_namespace(**attrs):
    return SimpleNamespace(
        accelerator=_Accelerator(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        **attrs,
    )


@pytest.mark.parametrize("with_margin", [False, True])
@pytest.mark.parametrize("center", [None, 0.01])
def test_reward_loss_matches_trl_reward_trainer(with_margin, center):
    trl = pytest.importorskip("trl")
    chosen = torch.tensor([1.5, -0.2, 0.7, 2.0])
    rejected = torch.tensor([0.5, 0.3, 0.7, -1.0])
    margin = torch.tensor([0.2, 0.0, 1.0, 0.5])

    class FakeRewardModel(torch.nn.Module):
        def forward(self, **inputs):  # TRL passes the whole batch, margin included
            return SimpleNamespace(logits=torch.cat([chosen, rejected]).unsqueeze(-1))

    model = FakeRewardModel().train()
    inputs = {"input_ids": torch.ones(8, 3, dtype=torch.long), "attention_mask": torch.ones(8, 3, dtype=torch.long)}
    if with_margin:
        inputs["margin"] = margin
    fake = _trainer_namespace(model=model, args=SimpleNamespace(center_rewards_coefficient=center))
    trl_loss = trl.RewardTrainer.compute_loss(fake, model, inputs)

    loss, m = reward_loss(chosen, rejected, margin=margin if with_margin else None, center_coeff=center or 0.0)
    torch.testing.assert_close(loss.mean(), trl_loss)
    logged = fake._metrics["train"]
    assert (m["accuracy"] / m["pairs"]).item() == approx(logged["accuracy"][0])
    assert (m["margin"] / m["pairs"]).item() == approx(logged["margin"][0])


def _tiny_llama(seed):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=23, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).float()


def _dpo_batch():
    """Two pairs as TRL's collator lays them out: rows [chosen..., rejected...], right-padded."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 23, (4, 8), generator=g)
    attention = torch.zeros(4, 8, dtype=torch.long)
    completion = torch.zeros(4, 8, dtype=torch.long)
    # (prompt length, completion length) per row; pairs share the prompt length
    for row, (p, c) in enumerate([(3, 4), (2, 6), (3, 2), (2, 3)]):
        attention[row, : p + c] = 1
        completion[row, p : p + c] = 1
    ids = ids.masked_fill(attention == 0, 0)
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}


# TRL's disable_gradient_checkpointing reads a property transformers 5 deprecates; not ours to fix.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("robust", 0.1), ("robust", 0.3), ("ipo", 0.0)])
def test_dpo_matches_trl_dpo_trainer(loss_type, eps):
    trl = pytest.importorskip("trl")
    from trl.trainer.utils import add_fused_lm_head

    policy, ref = _tiny_llama(0).train(), _tiny_llama(1).eval()
    add_fused_lm_head(policy, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    add_fused_lm_head(ref)
    beta = 0.3
    inputs = _dpo_batch()
    fake = _trainer_namespace(
        model=policy, ref_model=ref, args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=False, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=eps, use_weighting=False,
    )
    trl_loss = trl.DPOTrainer._compute_loss(fake, policy, dict(inputs), return_outputs=False)
    trl_grads = torch.autograd.grad(trl_loss, list(policy.parameters()))

    model_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    logps, count = sequence_logprobs(policy(**model_inputs).logits, inputs["input_ids"], inputs["completion_mask"])
    with torch.no_grad():
        ref_logps, _ = sequence_logprobs(ref(**model_inputs).logits, inputs["input_ids"], inputs["completion_mask"])
    (pc, pr), (rc, rr), (cl, rl) = logps.chunk(2), ref_logps.chunk(2), count.chunk(2)
    loss, cr, rj = dpo_loss(pc, pr, rc, rr, beta, loss_type=loss_type, label_smoothing=eps,
                            chosen_len=cl, rejected_len=rl)
    ours = loss.sum() / loss.numel()
    torch.testing.assert_close(ours, trl_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, list(policy.parameters())), trl_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    logged = fake._metrics["train"]
    m = dpo_metrics(cr, rj)
    for ours_key, trl_key in [("accuracy", "rewards/accuracies"), ("chosen", "rewards/chosen"),
                              ("rejected", "rewards/rejected"), ("margin", "rewards/margins")]:
        assert (m[ours_key] / m["pairs"]).item() == approx(logged[trl_key][0], rel=1e-5, abs=1e-6)
    assert pc.mean().item() == approx(logged["logps/chosen"][0], rel=1e-5)
    assert pr.mean().item() == approx(logged["logps/rejected"][0], rel=1e-5)


def test_trl_1_16_sigmoid_ignores_label_smoothing():
    """Pins the documented divergence: TRL 1.16's "sigmoid" drops label_smoothing; ours applies cDPO.

    Uses precomputed reference log-probs and a fake policy whose per-token log-probs are given.
    """
    trl = pytest.importorskip("trl")
    per_token = torch.tensor([[-1.0, -2.0], [-0.5, -3.0], [-2.0, -1.0], [-1.5, -0.5]])  # rows: chosen x2, rejected x2

    class FakePolicy(torch.nn.Module):
        def forward(self, **kwargs):
            z = torch.zeros_like(per_token)
            return SimpleNamespace(log_probs=per_token, entropy=z, mean_logits=z, is_top1=z.bool())

    policy = FakePolicy().train()
    inputs = {"input_ids": torch.ones(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3, dtype=torch.long),
              "completion_mask": torch.tensor([[0, 1, 1]] * 4),
              "ref_chosen_logps": torch.tensor([-2.0, -4.0]), "ref_rejected_logps": torch.tensor([-3.0, -1.0])}

    def trl_sigmoid(eps):
        fake = _trainer_namespace(
            model=policy, ref_model=None, args=SimpleNamespace(gradient_checkpointing_kwargs=None),
            aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
            loss_types=["sigmoid"], loss_weights=[1.0], beta=0.5, label_smoothing=eps, use_weighting=False,
        )
        return trl.DPOTrainer._compute_loss(fake, policy, dict(inputs), return_outputs=False)

    logps = per_token.sum(1)
    args = (logps[:2], logps[2:], inputs["ref_chosen_logps"], inputs["ref_rejected_logps"], 0.5)
    plain = dpo_loss(*args)[0].mean()
    torch.testing.assert_close(trl_sigmoid(0.0), plain)
    torch.testing.assert_close(trl_sigmoid(0.1), plain)  # TRL: no smoothing
    smoothed = dpo_loss(*args, label_smoothing=0.1)[0]
    assert (smoothed - dpo_loss(*args)[0]).abs().min().item() > 1e-3
