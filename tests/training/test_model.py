"""The Llama decoder: shapes, parameter and FLOP counts, causality, config checks."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from training.model import Llama, ModelConfig, count_parameters, flops_per_token


@pytest.mark.parametrize("tied,kv", [(True, 2), (False, 4), (True, None)])
def test_parameter_count_matches_the_module(tied, kv):
    cfg = ModelConfig(preset="tiny", vocab_size=300, tie_embeddings=tied, n_kv_heads=kv)
    model = Llama(cfg)
    assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())
    assert count_parameters(cfg, include_embedding=False) == count_parameters(cfg) - (300 * 64 if not tied else 0)


def test_presets_and_overrides():
    c = ModelConfig(preset="124m", n_layers=2)
    assert (c.dim, c.n_layers, c.n_heads, c.hidden_dim) == (768, 2, 12, 2048)
    one_b = ModelConfig(preset="1b", vocab_size=128256)
    assert 1.23e9 < count_parameters(one_b) < 1.24e9  # Llama-3.2-1B: 1.24B
    assert (one_b.kv_heads, one_b.head_dim) == (8, 64)


def test_flops_per_token_is_6n_plus_attention():
    c = ModelConfig(preset="124m", vocab_size=32000)
    n = count_parameters(c, include_embedding=False)
    assert flops_per_token(c, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert flops_per_token(c, 2048) - flops_per_token(c, 1024) == 12 * 12 * 12 * 64 * 1024


def test_causal_and_loss():
    torch.manual_seed(0)
    model = Llama(ModelConfig(preset="tiny", vocab_size=100)).eval()
    ids = torch.randint(0, 100, (2, 20))
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 100
    with torch.no_grad():
        a, b = model(ids), model(changed)
        assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6) and not torch.allclose(a[:, 10:], b[:, 10:])
        logits, loss = model(ids, ids)
        expected = torch.nn.functional.cross_entropy(logits.view(-1, 100), ids.view(-1))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        _, other = model(ids, torch.randint(0, 100, (2, 20)))
        assert other.item() == pytest.approx(torch.log(torch.tensor(100.0)).item(), rel=0.1)  # ~uniform at init


def test_gqa_equals_full_attention_with_repeated_kv_heads():
    torch.manual_seed(1)
    gqa = Llama(ModelConfig(preset="tiny", vocab_size=50, n_kv_heads=2)).eval()
    mha = Llama(ModelConfig(preset="tiny", vocab_size=50, n_kv_heads=4)).eval()
    state = gqa.state_dict()
    for name, tensor in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):  # (kv_heads * head_dim, dim)
            state[name] = tensor.view(2, 16, 64).repeat_interleave(2, dim=0).reshape(64, 64)
    mha.load_state_dict(state)
    ids = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        assert torch.allclose(gqa(ids), mha(ids), atol=1e-5)


def test_too_long_input_and_bad_shapes_are_refused():
    model = Llama(ModelConfig(preset="tiny", vocab_size=10, max_seq_len=8))
    with pytest.raises(ValueError, match="longer than model.max_seq_len 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValidationError, match="not divisible by n_heads"):
        ModelConfig(dim=100, n_heads=3)
    with pytest.raises(ValidationError, match="multiple of n_kv_heads"):
        ModelConfig(preset="tiny", n_kv_heads=3)
    with pytest.raises(ValidationError, match="preset"):
        ModelConfig(preset="7b")


def test_packed_segments_see_only_themselves():
    """Packed examples with segment ids give each example the logits it has alone (positions
    restart, attention stays inside the segment); without segments they would see each other."""
    torch.manual_seed(0)
    model = Llama(ModelConfig(preset="tiny", vocab_size=97, init_std=0.2)).eval()
    a, b = torch.randint(0, 97, (1, 7)), torch.randint(0, 97, (1, 5))
    packed = torch.cat([a, b], 1)
    segments = torch.tensor([[0] * 7 + [1] * 5])
    with torch.no_grad():
        together = model(packed, segments=segments)
        alone = torch.cat([model(a), model(b)], 1)
        plain = model(packed)
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(plain[:, 7:], alone[:, 7:], atol=1e-3)
