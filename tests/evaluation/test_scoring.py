"""evaluation.scoring against the plain definition: one full forward per request."""
from __future__ import annotations

import random

import pytest
import torch

from evaluation.scoring import loglikelihood, rolling_token_logprobs
from training.model import Llama, ModelConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama(ModelConfig(preset="tiny", vocab_size=101, max_seq_len=48, init_std=0.2)).eval()


def _naive(model, context, continuation):
    total = (list(context) + list(continuation))[-(model.cfg.max_seq_len + 1):]
    n = len(continuation)
    with torch.no_grad():
        logits = model(torch.tensor([total[:-1]])).float()[0]
    lp = torch.log_softmax(logits, -1)
    targets = torch.tensor(total[1:])
    token_lp = lp.gather(-1, targets[:, None])[:, 0][-n:]
    greedy = bool((logits.argmax(-1)[-n:] == targets[-n:]).all())
    return float(token_lp.sum()), greedy


def test_shared_contexts_score_like_one_forward_per_request(model):
    rng = random.Random(0)
    contexts = [[rng.randrange(101) for _ in range(rng.randint(1, 30))] for _ in range(7)]
    requests = []
    for c in contexts:  # several continuations per context, of different lengths
        for _ in range(rng.randint(1, 4)):
            requests.append((c, [rng.randrange(101) for _ in range(rng.randint(1, 6))]))
    requests.append(([5] * 45, [1, 2, 3, 4, 5, 6]))  # longer than the window: truncated from the left
    rng.shuffle(requests)
    for batch_tokens in (1, 64, 100000):  # one context per batch ... everything at once
        scores = loglikelihood(model, requests, batch_tokens=batch_tokens)
        for (c, k), s in zip(requests, scores):
            lp, greedy = _naive(model, c, k)
            assert s.logprob == pytest.approx(lp, abs=1e-4) and s.tokens == len(k)
            assert s.greedy == greedy


def test_greedy_continuation_is_flagged(model):
    ctx = [3, 14, 15]
    with torch.no_grad():
        nxt = int(model(torch.tensor([ctx]))[0, -1].argmax())
    assert loglikelihood(model, [(ctx, [nxt])])[0].greedy
    assert not loglikelihood(model, [(ctx, [(nxt + 1) % 101])])[0].greedy


@pytest.mark.parametrize("stride", [None, 16])
def test_rolling_scores_every_token_once(model, stride):
    rng = random.Random(1)
    ids = [rng.randrange(101) for _ in range(130)]
    lp = rolling_token_logprobs(model, ids, stride=stride)
    assert lp.shape == (129,)
    # The first window equals a plain forward over it.
    with torch.no_grad():
        first = torch.log_softmax(model(torch.tensor([ids[:48]])).float()[0], -1)
    expected = first.gather(-1, torch.tensor(ids[1:49])[:, None])[:, 0]
    assert torch.allclose(lp[:48], expected, atol=1e-5)
    # A later token is scored in its window (`stride` new tokens each), seeing the window's
    # tokens before it: for token 100 with stride 16 the window scores 97..112 from 64 on.
    if stride:
        t, begin = 100, 113 - 1 - 48
        with torch.no_grad():
            ref = torch.log_softmax(model(torch.tensor([ids[begin:t]])).float()[0, -1], -1)[ids[t]]
        assert lp[t - 1] == pytest.approx(float(ref), abs=1e-4)


def test_a_short_continuation_beside_a_long_one_near_the_window(model):
    """Rows share the continuation width: the padding after a long context's one-token
    continuation runs past the window and must not index past the rotary table."""
    requests = [([7] * 46, [1]), ([3] * 10, list(range(1, 31)))]
    for (c, k), s in zip(requests, loglikelihood(model, requests, batch_tokens=100000)):
        assert s.logprob == pytest.approx(_naive(model, c, k)[0], abs=1e-4)
