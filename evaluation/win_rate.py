"""Win rates from pairwise preferences: the raw rate and AlpacaEval 2.0's length-controlled rate.

    raw_win_rate(preferences)                          -> Rate(value, stderr, n)
    length_controlled_win_rate(preferences, len_a, len_b[, difficulty]) -> LCFit

A preference is model a's share of one comparison: 1 a wins, 0 b wins, 0.5 a tie (values in
between are allowed, e.g. soft judge probabilities). Model a is the one evaluated, model b the
baseline (AlpacaEval's `generator_2` / `generator_1`).

Raw win rate: the mean preference; standard error = sample standard deviation (ddof 1) / sqrt(n),
as AlpacaEval's `standard_error`.

Length-controlled win rate (Dubois et al. 2024, "Length-Controlled AlpacaEval"; AlpacaEval's
`metrics/glm_winrate.py`, GLM "length_controlled_v1"), fitted for one model against its
baseline:

    logit P(a preferred | item i) = theta + phi * tanh(delta_i / sd(delta)) [+ psi * gamma_i]

- delta_i = len(answer_a) - len(answer_b) in characters (Python `len`, AlpacaEval's
  `str.len()`); "standardised" as AlpacaEval does it: divided by the sample standard deviation
  of delta (ddof 1) without centring, so delta = 0 stays 0.
- theta is the model term (AlpacaEval's `not_gamed_baseline` column, a constant 1 on every row
  of a model other than the baseline); there is no other intercept (the formula's `- 1`).
- gamma_i is the optional instruction-difficulty covariate: AlpacaEval takes it from a fit over
  its whole leaderboard; here it is given per item (the `instruction_difficulty` column of the
  answers, e.g. from an earlier fit) or left out. Its coefficient psi is regularised as in
  AlpacaEval's `regularize_to_baseline_lambda` (0.2), as we read it: the rows of the baseline
  against itself (target 0.5, model term 0, length difference 0) are added with weight
  `l2_difficulty` (default 0.2); their logit is psi * gamma_i alone, so they pull psi to 0
  (an L2-like penalty on the instruction term).
- Fit: maximum likelihood of the Bernoulli model with the preference as a soft target
  (cross-entropy, which is what AlpacaEval's duplication of each row into a weighted win and a
  weighted loss amounts to), by `scipy.optimize.minimize` (L-BFGS-B, analytic gradient).
  AlpacaEval uses scikit-learn's `LogisticRegressionCV` (an L2 penalty on every coefficient,
  its strength picked by 5-fold CV); here only the length coefficient phi gets a fixed small L2
  penalty `l2_length * n / 2 * phi**2` (n items; l2_length default 1e-3), enough to keep the fit finite when
  the preferences are perfectly separated by length (a judge that always picks the longer
  answer), and the model term theta is left unpenalised so the rate is not shrunk to 50%.
- LC win rate = mean over items of sigmoid(theta [+ psi * gamma_i]): the predicted preference
  with the length difference set to 0.
- Standard error: the delta method with the sandwich (Huber-White) covariance of the fitted
  coefficients, H^-1 B H^-1 with H the penalised Hessian and B the sum of the per-item score
  outer products, because soft targets and ties are not Bernoulli draws; `bootstrap=K` instead
  refits on K resamples of the items and reports their standard deviation.
- A length difference that is the same for every item (e.g. all zero) carries no information:
  the length term is dropped and the LC rate equals the model term's fit (= the raw rate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

DEFAULT_L2_LENGTH = 1e-3  # per item, on phi only
DEFAULT_L2_DIFFICULTY = 0.2  # AlpacaEval's regularize_to_baseline_lambda


@dataclass(frozen=True)
class Rate:
    value: float
    stderr: float
    n: int


@dataclass
class LCFit:
    """The length-controlled GLM for model a against model b."""
    value: float  # LC win rate: mean predicted preference at length difference 0
    stderr: float
    n: int
    coefficients: dict[str, float]  # theta (model), phi (length), psi (difficulty) when fitted
    length_sd: float  # sd(len_a - len_b) the differences were divided by
    predicted: np.ndarray = field(repr=False)  # per-item fitted preference (with the length term)
    converged: bool = True

    def record(self) -> dict:
        return {"value": self.value, "stderr": self.stderr, "n": self.n, "coefficients": self.coefficients,
                "length_sd": self.length_sd, "converged": self.converged}


def _as_preferences(preferences: Sequence[float]) -> np.ndarray:
    y = np.asarray(preferences, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("need a non-empty 1-d sequence of preferences")
    if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
        raise ValueError("preferences must be finite and in [0, 1]")
    return y


def raw_win_rate(preferences: Sequence[float]) -> Rate:
    """Mean preference and its standard error (ddof 1; 0 for a single item)."""
    y = _as_preferences(preferences)
    se = float(y.std(ddof=1) / math.sqrt(y.size)) if y.size > 1 else 0.0
    return Rate(float(y.mean()), se, int(y.size))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _design(len_a, len_b, difficulty) -> tuple[np.ndarray, list[str], float]:
    delta = np.asarray(len_a, dtype=np.float64) - np.asarray(len_b, dtype=np.float64)
    n = delta.size
    sd = float(delta.std(ddof=1)) if n > 1 else 0.0
    columns, names = [np.ones(n)], ["theta"]
    if sd > 0:
        columns.append(np.tanh(delta / sd))
        names.append("phi")
    if difficulty is not None:
        gamma = np.asarray(difficulty, dtype=np.float64)
        if gamma.shape != (n,) or not np.all(np.isfinite(gamma)):
            raise ValueError("difficulty must be one finite value per item")
        columns.append(gamma)
        names.append("psi")
    return np.stack(columns, 1), names, sd


class _Objective:
    """Penalised cross-entropy and its derivatives for X @ beta (no other intercept)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, names: list[str], l2_length: float, l2_difficulty: float):
        self.X, self.y, self.names = X, y, names
        n = y.size
        self.ridge = np.zeros(len(names))
        if "phi" in names:
            self.ridge[names.index("phi")] = l2_length * n
        # Regularise-to-baseline rows: the baseline against itself on every item, target 0.5,
        # only the difficulty term in the logit, weight l2_difficulty.
        self.psi = names.index("psi") if "psi" in names else None
        self.w_base = l2_difficulty

    def value_grad(self, beta: np.ndarray) -> tuple[float, np.ndarray]:
        z = self.X @ beta
        loss = float(np.sum(_softplus(z) - self.y * z)) + 0.5 * float(np.sum(self.ridge * beta ** 2))
        grad = self.X.T @ (_sigmoid(z) - self.y) + self.ridge * beta
        if self.psi is not None and self.w_base:
            g = self.X[:, self.psi]
            zb = beta[self.psi] * g
            loss += self.w_base * float(np.sum(_softplus(zb) - 0.5 * zb))
            grad[self.psi] += self.w_base * float(g @ (_sigmoid(zb) - 0.5))
        return loss, grad

    def hessian(self, beta: np.ndarray) -> np.ndarray:
        p = _sigmoid(self.X @ beta)
        H = (self.X * (p * (1 - p))[:, None]).T @ self.X + np.diag(self.ridge)
        if self.psi is not None and self.w_base:
            g = self.X[:, self.psi]
            pb = _sigmoid(beta[self.psi] * g)
            H[self.psi, self.psi] += self.w_base * float(np.sum(pb * (1 - pb) * g * g))
        return H


def _fit(X, y, names, l2_length, l2_difficulty) -> tuple[np.ndarray, _Objective, bool]:
    from scipy.optimize import minimize

    obj = _Objective(X, y, names, l2_length, l2_difficulty)
    res = minimize(obj.value_grad, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-14})
    beta = res.x
    # A few Newton steps polish the optimum (the objective is convex and smooth).
    for _ in range(20):
        _, g = obj.value_grad(beta)
        if np.max(np.abs(g)) < 1e-10:
            break
        step = np.linalg.lstsq(obj.hessian(beta), g, rcond=None)[0]
        beta = beta - step
    _, g = obj.value_grad(beta)
    return beta, obj, bool(np.max(np.abs(g)) < 1e-6 * max(1.0, y.size))


def _lc_value(beta: np.ndarray, X: np.ndarray, names: list[str]) -> tuple[float, np.ndarray]:
    """Mean predicted preference with the length term at 0, and its gradient in beta."""
    X0 = X.copy()
    if "phi" in names:
        X0[:, names.index("phi")] = 0.0
    p0 = _sigmoid(X0 @ beta)
    return float(p0.mean()), (X0 * (p0 * (1 - p0))[:, None]).mean(0)


def length_controlled_win_rate(preferences: Sequence[float], len_a: Sequence[float], len_b: Sequence[float],
                               difficulty: Sequence[float] | None = None, l2_length: float = DEFAULT_L2_LENGTH,
                               l2_difficulty: float = DEFAULT_L2_DIFFICULTY, bootstrap: int = 0,
                               seed: int = 0) -> LCFit:
    """Fit the GLM above and predict at length difference 0 (see the module docstring)."""
    y = _as_preferences(preferences)
    if len(len_a) != y.size or len(len_b) != y.size:
        raise ValueError(f"{y.size} preferences but {len(len_a)} / {len(len_b)} lengths")
    X, names, sd = _design(len_a, len_b, difficulty)
    beta, obj, converged = _fit(X, y, names, l2_length, l2_difficulty)
    value, grad = _lc_value(beta, X, names)
    if bootstrap:
        rng = np.random.default_rng(seed)
        values = []
        for _ in range(bootstrap):
            idx = rng.integers(0, y.size, y.size)
            la, lb = np.asarray(len_a, float)[idx], np.asarray(len_b, float)[idx]
            Xb, nb, _ = _design(la, lb, None if difficulty is None else np.asarray(difficulty, float)[idx])
            bb, _, _ = _fit(Xb, y[idx], nb, l2_length, l2_difficulty)
            values.append(_lc_value(bb, Xb, nb)[0])
        stderr = float(np.std(values, ddof=1))
    else:
        H = obj.hessian(beta)
        scores = X * (_sigmoid(X @ beta) - y)[:, None]
        B = scores.T @ scores
        Hinv = np.linalg.pinv(H)
        cov = Hinv @ B @ Hinv
        stderr = float(math.sqrt(max(float(grad @ cov @ grad), 0.0)))
    return LCFit(value=value, stderr=stderr, n=int(y.size), coefficients=dict(zip(names, map(float, beta))),
                 length_sd=sd, predicted=_sigmoid(X @ beta), converged=converged)
