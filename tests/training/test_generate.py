"""KV-cache decoding (training.generate) against recomputing the whole sequence every step, against
each prompt decoded alone, and against Hugging Face `generate` on the exported weights."""
from __future__ import annotations

import pytest
import torch

from training.export import state_dict_for_export, to_hf_config
from training.generate import SamplingParams, generate
from training.model import Llama, ModelConfig

VOCAB = 97


@pytest.fixture(scope="module")
def model() -> Llama:
    torch.manual_seed(0)
    # init_std 0.2: logits O(1), so greedy choices are not near-ties and a wrong position,
    # mask or cache slot changes the tokens.
    return Llama(ModelConfig(preset="tiny", vocab_size=VOCAB, max_seq_len=64, init_std=0.2)).eval()


PROMPTS = [[5, 17, 42, 8, 3, 66, 12], [9], [70, 71, 72, 2]]


def naive(model: Llama, prompt: list[int], params: SamplingParams) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy continuation with a full forward pass over the whole sequence at every step; also
    the logits each step chose from."""
    seq, steps = list(prompt), []
    with torch.no_grad():
        for _ in range(params.max_new_tokens):
            logits = model(torch.tensor([seq]))[0, -1]
            steps.append(logits)
            seq.append(int(logits.argmax()))
            if seq[-1] in params.stop_token_ids:
                break
    return seq[len(prompt):], steps


def test_cached_greedy_equals_recomputing_everything(model):
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    for prompt in PROMPTS:
        [got] = generate(model, [prompt], params)
        want, steps = naive(model, prompt, params)
        assert got.tokens == want
        assert got.finish_reason == "length"
        expected_lp = [float(torch.log_softmax(s, -1)[t]) for s, t in zip(steps, want)]
        assert got.logprobs == pytest.approx(expected_lp, abs=1e-5)


def test_left_padded_batch_decodes_each_row_as_if_alone(model):
    params = SamplingParams(max_new_tokens=16, temperature=0.0)
    batched = generate(model, PROMPTS, params, pad_id=VOCAB - 1)
    for prompt, row in zip(PROMPTS, batched):
        [alone] = generate(model, [prompt], params)
        assert row.tokens == alone.tokens
        assert row.logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_stop_token_ends_only_its_row(model):
    free = generate(model, PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.0))
    stop_id = free[0].tokens[3]  # row 0 emits it at its 4th step
    stopped = generate(model, PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=[stop_id]))
    assert stopped[0].tokens == free[0].tokens[:free[0].tokens.index(stop_id) + 1]
    assert stopped[0].finish_reason == "stop"
    for free_row, row in zip(free[1:], stopped[1:]):
        cut = free_row.tokens.index(stop_id) + 1 if stop_id in free_row.tokens else len(free_row.tokens)
        assert row.tokens == free_row.tokens[:cut]
        assert row.finish_reason == ("stop" if stop_id in free_row.tokens else "length")


def test_matches_hugging_face_greedy_generate(model):
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**to_hf_config(model.cfg))).eval()
    missing, unexpected = hf.load_state_dict(state_dict_for_export(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied: re-tied from the embedding
    hf.tie_weights()
    prompt = PROMPTS[0]
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=24, do_sample=False, pad_token_id=0, eos_token_id=None)
    [ours] = generate(model, [prompt], SamplingParams(max_new_tokens=24, temperature=0.0))
    assert ours.tokens == out[0, len(prompt):].tolist()


def test_sampling_is_seeded_and_respects_top_k_and_top_p(model):
    params = SamplingParams(max_new_tokens=20, temperature=1.0, top_k=3, seed=7)
    a = generate(model, PROMPTS, params)
    assert [g.tokens for g in a] == [g.tokens for g in generate(model, PROMPTS, params)]
    other = generate(model, PROMPTS, params.model_copy(update={"seed": 8}))
    assert [g.tokens for g in a] != [g.tokens for g in other]
    # Every sampled token was among the 3 most likely given the sequence so far, and its log-prob
    # is that of the untruncated distribution.
    for prompt, g in zip(PROMPTS, a):
        seq = list(prompt)
        with torch.no_grad():
            for token, logprob in zip(g.tokens, g.logprobs):
                logits = model(torch.tensor([seq]))[0, -1]
                assert token in logits.topk(3).indices.tolist()
                assert logprob == pytest.approx(float(torch.log_softmax(logits, -1)[token]), abs=1e-5)
                seq.append(token)
    # A nucleus smaller than the top token's mass, or top-k 1, is greedy.
    greedy = [g.tokens for g in generate(model, PROMPTS, SamplingParams(max_new_tokens=20, temperature=0.0))]
    assert [g.tokens for g in generate(model, PROMPTS, SamplingParams(max_new_tokens=20, top_p=1e-6))] == greedy
    assert [g.tokens for g in generate(model, PROMPTS, SamplingParams(max_new_tokens=20, top_k=1))] == greedy


def test_temperature_sampling_follows_the_model_distribution(model):
    """2,000 draws of one next token: frequencies within 4 standard errors of softmax(logits / T)."""
    prompt, temperature, n = PROMPTS[2], 2.0, 2000
    out = generate(model, [prompt] * n, SamplingParams(max_new_tokens=1, temperature=temperature, seed=3))
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([prompt]))[0, -1] / temperature, -1)
    counts = torch.bincount(torch.tensor([g.tokens[0] for g in out]), minlength=VOCAB).double()
    for token in probs.topk(5).indices.tolist():
        p = float(probs[token])
        assert abs(counts[token] / n - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-9, (token, counts[token] / n, p)


def test_too_long_is_refused_naming_the_limit(model):
    with pytest.raises(ValueError, match="max_seq_len 64"):
        generate(model, [list(range(60))], SamplingParams(max_new_tokens=10))
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1], []], SamplingParams())
