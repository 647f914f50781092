"""Learning-rate schedules: warmup, cosine, warmup-stable-decay, constant."""
from __future__ import annotations

import math

import pytest

from training.config import OptimConfig
from training.schedule import lr_factor


def test_warmup_then_cosine_to_the_floor():
    o = OptimConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(s, 110, o) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, 110, o) == pytest.approx(1.0)
    assert lr_factor(60, 110, o) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(110, 110, o) == pytest.approx(0.1) and lr_factor(500, 110, o) == pytest.approx(0.1)
    values = [lr_factor(s, 110, o) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_wsd_is_flat_then_decays_linearly_over_the_last_fraction():
    o = OptimConfig(warmup_steps=5, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0)
    assert lr_factor(4, 100, o) == pytest.approx(1.0)
    assert all(lr_factor(s, 100, o) == 1.0 for s in range(5, 81))
    assert lr_factor(90, 100, o) == pytest.approx(0.5)
    assert lr_factor(100, 100, o) == pytest.approx(0.0)


def test_constant_and_no_warmup():
    o = OptimConfig(warmup_steps=0, schedule="constant")
    assert {lr_factor(s, 50, o) for s in range(60)} == {1.0}
