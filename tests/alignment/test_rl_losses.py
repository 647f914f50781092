"""Online RL losses and rewards against hand-computed values; the accumulation invariance."""
from __future__ import annotations

import math

import pytest
import torch

from alignment.pg_losses import (aggregate, clipped_policy_loss, clipped_value_loss, gae, group_advantages,
                                 kl_estimate, whiten)
from alignment.rewards import RewardScorer, final_answer, load_reward_function, math_reward, reference_answer
from llmforge.common.errors import UserError


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert torch.allclose(kl_estimate(logp, ref, "k1"), torch.tensor([0.5, -1.0]))
    r = ref - logp  # log(ref/policy)
    assert torch.allclose(kl_estimate(logp, ref, "k3"), r.exp() - r - 1)
    assert (kl_estimate(logp, ref, "k3") >= 0).all()  # k3 is never negative; k1 can be
    assert kl_estimate(logp, logp, "k3").abs().max() == 0
    with pytest.raises(ValueError, match="k2"):
        kl_estimate(logp, ref, "k2")


def test_group_advantages_std_mean_only_and_unscored():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, float("nan"), 1.0, 0.5])
    adv, constant = group_advantages(r, 4, "std", eps=0.0)
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()  # unbiased, as torch / TRL
    assert torch.allclose(adv[:4], (torch.tensor([1.0, 0, 0, 1]) - 0.5) / std)
    assert constant.tolist() == [False, True, False]
    assert adv[4:8].abs().sum() == 0  # a group with one reward carries nothing
    # the unscored sample is left out of its group's mean (0.5) and std (0.5), and gets 0
    assert torch.allclose(adv[8:], torch.tensor([-1.0, 0.0, 1.0, 0.0]))
    dr, _ = group_advantages(r, 4, "none")
    assert torch.allclose(dr[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)


def test_gae_matches_the_recursion_and_stops_at_padding():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0, 0.1, 1.0, 7.0], [0.5, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.3, 0.4, 9.0], [0.1, 0.6, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for row, n in ((0, 3), (1, 2)):
        a, expected = 0.0, [0.0] * n
        for t in reversed(range(n)):
            nv = values[row, t + 1].item() if t + 1 < n else 0.0  # terminal after the last token
            delta = rewards[row, t].item() + gamma * nv - values[row, t].item()
            a = delta + gamma * lam * a
            expected[t] = a
        assert adv[row, :n].tolist() == pytest.approx(expected, abs=1e-6)
        assert ret[row, :n].tolist() == pytest.approx([e + v for e, v in zip(expected, values[row, :n].tolist())],
                                                      abs=1e-6)
        assert adv[row, n:].abs().sum() == 0 and ret[row, n:].abs().sum() == 0


def test_whiten_over_the_mask_only():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    w = whiten(x, mask)
    kept = w[mask.bool()]
    assert kept.mean().abs() < 1e-6 and kept.std().item() == pytest.approx(1.0, abs=1e-4)
    assert w[:, 2].abs().sum() == 0


def test_clipped_policy_loss_takes_the_pessimistic_term_with_asymmetric_clip():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))  # ratios
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss, metrics = clipped_policy_loss(logp, old, adv, torch.ones(1, 4), eps_low=0.2, eps_high=0.28)
    # +A: min(r, clip(r)) -> 1.28 for r=1.5, 1.1 for r=1.1;  -A: -max(r, clip(r)) -> 0.8 for r=0.5, 0.8 for 0.7
    assert (-loss)[0].tolist() == pytest.approx([1.28, -0.8, 1.1, -0.8], abs=1e-6)
    assert metrics["clipped"].item() == 3 and metrics["tokens"].item() == 4
    logp.requires_grad_(True)
    loss, _ = clipped_policy_loss(logp, old, adv, torch.ones(1, 4), 0.2, 0.28)
    loss.sum().backward()
    assert (logp.grad[0, [0, 1, 3]] == 0).all() and logp.grad[0, 2] != 0  # clipped tokens pass no gradient


def test_clipped_value_loss_by_hand():
    values, old, ret = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0]), torch.tensor([0.0, 1.0])
    loss, clipped = clipped_value_loss(values, old, ret, clip=0.2)
    # row 0: (1-0)^2 = 1 vs (0.7-0)^2 = 0.49 -> 0.5; row 1: (0-1)^2 both -> 0.5
    assert loss.tolist() == pytest.approx([0.5, 0.5])
    assert clipped.tolist() == [0.0, 0.0]
    loss, clipped = clipped_value_loss(torch.tensor([0.0]), torch.tensor([0.5]), torch.tensor([0.0]), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.3 ** 2) and clipped.item() == 1.0


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "dr-grpo"])
def test_accumulated_micro_batches_give_the_gradient_of_one_big_batch(mode):
    """The trainer's rule: every micro-batch's numerator over the whole step's denominator."""
    torch.manual_seed(0)
    lengths = [1, 7, 2, 8, 3, 5]
    mask = torch.zeros(6, 8)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    features = torch.randn(6, 8, 4)
    adv = torch.randn(6)
    w = torch.randn(4, requires_grad=True)

    def per_token(rows):
        logp = torch.nn.functional.logsigmoid(features[rows] @ w)
        return clipped_policy_loss(logp, logp.detach(), adv[rows], mask[rows])[0]

    def gradient(splits, per_micro_mean=False):
        w.grad = None
        total_den = sum(aggregate(torch.zeros(len(r), 8), mask[r], mode, 8)[1] for r in splits)
        for rows in splits:
            num, den = aggregate(per_token(rows), mask[rows], mode, 8)
            (num / (den * len(splits)) if per_micro_mean else num / total_den).backward()
        return w.grad.clone()

    whole = gradient([list(range(6))])
    split = [[0, 1], [2, 3], [4, 5]]
    assert torch.allclose(gradient(split), whole, atol=1e-6)
    assert torch.allclose(gradient([[5], [0, 2, 4], [1, 3]]), whole, atol=1e-6)
    if mode != "dr-grpo":  # averaging per micro-batch (the bug) changes the gradient
        assert not torch.allclose(gradient([[0], [1, 2, 3, 4, 5]], per_micro_mean=True), whole, atol=1e-4)


def test_aggregations_by_hand():
    per_token = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert [float(x) for x in aggregate(per_token, mask, "token-mean")] == [6.0, 3.0]
    assert [float(x) for x in aggregate(per_token, mask, "seq-mean-token-mean")] == [4.0, 2.0]  # 2 + 2
    assert [float(x) for x in aggregate(per_token, mask, "dr-grpo", 16)] == [6.0, 32.0]


# ------------------------------------------------------------------------------ rewards


def test_math_reward_gates_correctness_on_the_format():
    row = {"answer": "1,234"}
    assert math_reward("so the total is\n#### 1234", row) == 1.0
    assert math_reward("#### 1,234 ", row) == 1.0
    assert math_reward("#### 1235", row) == pytest.approx(0.1)  # the format, not the answer
    assert math_reward("the answer is 1234", row) == 0.0  # right number, no checkable final answer
    assert math_reward("#### 1234 and more text", row) == 0.0  # the marker must end the completion
    assert math_reward("#### -7", {"answer": -7}) == 1.0
    gsm8k_solution = {"answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 18"}
    assert reference_answer(gsm8k_solution) == 18.0
    assert final_answer("#### 2.5") == 2.5 and final_answer("no answer") is None
    with pytest.raises(ValueError, match="'answer' field"):
        math_reward("#### 1", {"question": "?"})


def test_reward_functions_by_import_path_and_their_failures():
    assert load_reward_function("math") is math_reward
    assert load_reward_function("alignment.rewards:exact_match")("#### 3", {"answer": 3}) is True
    for spec, message in (("nonsense", "expected 'math' or MODULE:FUNCTION"),
                          ("alignment.rewards:missing", "cannot import"), ("no_such_mod:f", "cannot import")):
        with pytest.raises(UserError, match=message):
            load_reward_function(spec)
    scorer = RewardScorer(function="tests.alignment.test_rl_losses:flaky_reward")
    scored = scorer.score(["p"] * 4, ["ok", "raise", "nan", "ok"], [{}] * 4)
    assert scored.rewards == [1.0, None, None, 1.0]
    assert sum(scored.errors.values()) == 2 and scored.first_error == "RuntimeError: boom"
    with pytest.raises(UserError, match="exactly one"):
        RewardScorer()


def flaky_reward(completion: str, row: dict) -> float:
    if completion == "raise":
        raise RuntimeError("boom")
    return math.nan if completion == "nan" else 1.0


def test_policy_logprobs_at_completion_positions_equal_the_full_softmax():
    """The LM head only where a completion token is predicted: the same log-probs and gradient
    as log_softmax over every position's logits."""
    from alignment.rl_workers import policy_logprobs
    from training.model import Llama, ModelConfig

    torch.manual_seed(0)
    model = Llama(ModelConfig(preset="tiny", vocab_size=97, max_seq_len=32))
    ids = torch.randint(0, 97, (3, 9))
    mask = torch.zeros(3, 9, dtype=torch.long)
    mask[0, 4:9], mask[1, 2:5], mask[2, 7:8] = 1, 1, 1  # completions after prompts, right padding
    mine, logits = policy_logprobs(model, ids, mask, temperature=0.7)
    assert logits.shape == (5 + 3 + 1, 97)
    full = torch.log_softmax(model(ids)[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    expected = full * mask[:, 1:]
    assert torch.allclose(mine, expected, atol=1e-5)
    g_mine = torch.autograd.grad(mine.sum(), model.lm_head.weight)[0]
    full = torch.log_softmax(model(ids)[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    g_full = torch.autograd.grad((full * mask[:, 1:]).sum(), model.lm_head.weight)[0]
    assert torch.allclose(g_mine, g_full, atol=1e-5)


def test_trainer_update_one_big_batch_equals_accumulated_micro_batches(tmp_path):
    """The policy trainer itself (DeepSpeed ZeRO-2, one rank): 24 sequences of uneven lengths
    as one micro-batch, or as 4 accumulated micro-batches of at most 6 — the same global grad
    norm and the same weights after the step (per-micro-batch averaging changes both)."""
    import numpy as np

    from alignment.rl_driver import Slots, config_class
    from alignment.rl_workers import PolicyTrainer
    from llmforge.common.config import load_config
    from tests.support.tiny_checkpoint import tiny_checkpoint
    from training.loop import launcher_env_restored
    from training.sources import resolve_model

    ckpt, _, _ = tiny_checkpoint(tmp_path / "m")
    rng = np.random.default_rng(0)
    n, width = 24, 20
    lengths = rng.integers(6, width + 1, n)
    ids = rng.integers(0, 300, (n, width))
    mask = np.zeros((n, width), dtype=np.int64)
    for i, length in enumerate(lengths):
        ids[i, length:] = 0
        mask[i, 4:length] = 1  # a 4-token prompt, then the completion
    adv = rng.normal(size=n).astype(np.float32)
    arrays = {"ids": ids, "mask": mask, "advantages": adv[:, None] * mask[:, 1:].astype(np.float32)}
    results = {}
    for micro, stage in ((24, 2), (6, 2), (24, 0)):
        cfg = load_config(config_class("grpo"), None, {
            "model": str(ckpt), "data.path": "unused.jsonl", "reward.function": "math", "group_size": 4,
            "train.prompts_per_step": 6, "train.micro_batch_size": micro, "train.zero_stage": stage, "optim.lr": 0.1,
            "optim.eps": 1.0})  # Adam's eps >> |g|: the step is ~lr x g, so weights compare like gradients
        worker = PolicyTrainer("grpo", cfg.model_dump(mode="json"), 0, 1, 1, {})
        with launcher_env_restored():
            worker.setup(*worker.address(), None)
        assert worker.accum == 24 // micro
        slots = Slots(lengths.tolist(), 1, worker.accum, micro)
        metrics = worker.update(slots.split(arrays)[0], float(mask[:, 1:].sum()))
        results[micro, stage] = (metrics["grad_norm"], worker.weights())
    (norm_one, w_one), (norm_acc, w_acc) = results[24, 2], results[6, 2]
    assert np.isfinite(norm_one) and norm_one > 0
    assert norm_acc == pytest.approx(norm_one, rel=1e-5)
    # ZeRO-0 in fp32: DeepSpeed clips without keeping the norm; engine_step reports the same one
    norm_zero0, w_zero0 = results[24, 0]
    assert norm_zero0 == pytest.approx(norm_one, rel=1e-5)
    for key in w_one:
        assert torch.allclose(w_one[key], w_zero0[key], rtol=0, atol=1e-6), key
    start = resolve_model(ckpt).state_dict()
    assert any(not torch.equal(w_one[k], start[k]) for k in w_one)
    for key in w_one:
        assert torch.allclose(w_one[key], w_acc[key], rtol=0, atol=1e-7), key
