"""evaluation.win_rate: the raw rate and AlpacaEval's length-controlled GLM on simulated
preferences whose true model term is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.win_rate import length_controlled_win_rate, raw_win_rate


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_raw_rate_and_its_standard_error():
    r = raw_win_rate([1, 1, 0, 0.5])
    assert r.value == 0.625 and r.n == 4
    assert r.stderr == pytest.approx(np.std([1, 1, 0, 0.5], ddof=1) / 2)
    assert raw_win_rate([1]).stderr == 0.0
    for bad in ([], [1.5], [float("nan")]):
        with pytest.raises(ValueError):
            raw_win_rate(bad)


def test_the_glm_recovers_the_model_term_under_a_length_bias():
    """Preferences drawn from logit = theta + phi * tanh(delta / sd): the raw rate is inflated by
    the longer answers, the LC rate is sigmoid(theta) within 3 standard errors."""
    rng = np.random.default_rng(0)
    n, theta, phi = 2000, 0.4, 1.5
    len_b = rng.integers(20, 400, n)
    len_a = rng.integers(20, 400, n) + 120
    delta = len_a - len_b
    p = sigmoid(theta + phi * np.tanh(delta / delta.std(ddof=1)))
    y = (rng.random(n) < p).astype(float)
    fit = length_controlled_win_rate(y, len_a, len_b)
    truth = sigmoid(theta)
    assert fit.converged and fit.length_sd == pytest.approx(delta.std(ddof=1))
    assert raw_win_rate(y).value > truth + 0.08  # the length bias
    assert abs(fit.value - truth) < 3 * fit.stderr and 0.005 < fit.stderr < 0.04
    assert fit.coefficients["theta"] == pytest.approx(theta, abs=0.15)
    assert fit.coefficients["phi"] == pytest.approx(phi, abs=0.3)
    # The delta method agrees with a bootstrap of the same fit.
    boot = length_controlled_win_rate(y, len_a, len_b, bootstrap=40, seed=1)
    assert boot.value == fit.value and boot.stderr == pytest.approx(fit.stderr, rel=0.35)


def test_equal_lengths_give_the_raw_rate():
    y = np.array([1, 1, 1, 0, 0.5, 1, 0, 1.0])
    fit = length_controlled_win_rate(y, [10] * 8, [10] * 8)
    assert "phi" not in fit.coefficients and fit.length_sd == 0.0
    assert fit.value == pytest.approx(y.mean(), abs=1e-9)
    # The sandwich standard error of the mean: the raw one with ddof 0.
    assert fit.stderr == pytest.approx(y.std(ddof=0) / math.sqrt(y.size), rel=1e-6)


def test_an_instruction_difficulty_covariate():
    """With a per-item difficulty gamma, the LC rate is the mean of sigmoid(theta + psi * gamma)."""
    rng = np.random.default_rng(2)
    n = 3000
    gamma = rng.normal(0, 1, n)
    len_a, len_b = rng.integers(20, 400, n), rng.integers(20, 400, n)
    delta = len_a - len_b
    logit = 0.3 + 1.0 * np.tanh(delta / delta.std(ddof=1)) - 1.0 * gamma
    y = (rng.random(n) < sigmoid(logit)).astype(float)
    fit = length_controlled_win_rate(y, len_a, len_b, difficulty=gamma, l2_difficulty=0.0)  # plain MLE
    assert set(fit.coefficients) == {"theta", "phi", "psi"}
    assert fit.coefficients["psi"] == pytest.approx(-1.0, abs=0.2)
    assert fit.value == pytest.approx(sigmoid(0.3 - 1.0 * gamma).mean(), abs=3 * fit.stderr)
    # AlpacaEval's regularisation to the baseline (weight 0.2) shrinks psi towards 0.
    shrunk = length_controlled_win_rate(y, len_a, len_b, difficulty=gamma)
    assert fit.coefficients["psi"] < shrunk.coefficients["psi"] < 0
