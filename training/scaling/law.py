"""The Chinchilla loss law L(N, D) = E + A / N^alpha + B / D^beta: fit, prediction, the
compute-optimal allocation and isoFLOP minima. Pure numpy/scipy (no torch, no Ray).

Fit (Hoffmann et al. 2022, Approach 3, as replicated by Besiroglu et al. 2024, "Chinchilla
Scaling: A replication attempt"): parameters theta = (a, b, e, alpha, beta) with A = exp(a),
B = exp(b), E = exp(e); the predicted log loss is

    log L(N, D) = LSE(a - alpha log N, b - beta log D, e)

and the objective is the sum over runs of Huber_delta(log L_pred - log L_obs) with
delta = 1e-3, minimised with L-BFGS (scipy's L-BFGS-B, analytic gradient) from every point of
a grid of initialisations; the best optimum is kept. The grid is the paper's: alpha, beta in
{0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}.

The objective is tiny (|r| ~ 1e-3 gives Huber ~ 1e-6 per run), so the stopping tolerances are
set far below scipy's defaults: its relative `ftol` is measured against max(|f|, 1) and would
stop at the first iterations (the premature stop Besiroglu et al. point out in the original).

Compute-optimal allocation under C = 6 N D (Hoffmann et al. eq. 4):
    N_opt(C) = G (C/6)^(beta/(alpha+beta)),  D_opt(C) = G^-1 (C/6)^(alpha/(alpha+beta)),
    G = (alpha A / (beta B))^(1/(alpha+beta)).

IsoFLOP minima (Approach 2): for each FLOP budget, a parabola in log N through the final
losses of the runs at that budget; its vertex is the budget's loss-optimal N.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

HUBER_DELTA = 1e-3
# L-BFGS starts: the grid's best-scoring points (a full-grid run takes minutes and, on the
# tests' and our sweeps' data, ends at the same optimum); None = all 4,500, as the paper.
DEFAULT_STARTS = 100
FLOPS_PER_PARAM_TOKEN = 6.0  # C = 6 N D (forward + backward matmuls)

# Hoffmann et al.'s grid of initialisations, also used by Besiroglu et al.
INIT_GRID: dict[str, tuple[float, ...]] = {
    "a": tuple(np.arange(0, 30, 5.0)),
    "b": tuple(np.arange(0, 30, 5.0)),
    "e": tuple(np.arange(-1, 1.5, 0.5)),
    "alpha": tuple(np.arange(0, 2.5, 0.5)),
    "beta": tuple(np.arange(0, 2.5, 0.5)),
}


@dataclass(frozen=True)
class ScalingLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def compute_optimal(self, flops, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN):
        """(N_opt, D_opt) minimising L(N, D) subject to C = 6 N D (closed form)."""
        c = np.asarray(flops, dtype=float) / flops_per_param_token
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
        n = g * c ** (self.beta / s)
        return n, c / n

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


# Besiroglu et al. 2024, Table 1 (their refit of Chinchilla's Approach 3 data).
BESIROGLU_2024 = ScalingLaw(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
# Hoffmann et al. 2022, eq. 10 (for comparison).
HOFFMANN_2022 = ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


@dataclass
class LawFit:
    law: ScalingLaw
    objective: float  # sum of Huber losses at the optimum
    init: dict[str, float]  # the grid point the best optimum started from
    n_points: int
    n_inits: int
    converged: int  # how many starts scipy reported as converged
    residuals: list[float] = field(default_factory=list)  # log L_pred - log L_obs per point

    def to_dict(self) -> dict:
        return {"law": self.law.to_dict(), "objective": self.objective, "init": self.init,
                "n_points": self.n_points, "n_inits": self.n_inits, "converged": self.converged,
                "rms_log_residual": float(np.sqrt(np.mean(np.square(self.residuals)))) if self.residuals else None}


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
               delta: float) -> tuple[float, np.ndarray]:
    a, b, e, alpha, beta = theta
    z = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = z.max(axis=0)
    ez = np.exp(z - top)
    total = ez.sum(axis=0)
    r = top + np.log(total) - log_l
    w = ez / total  # d LSE / d z
    g = np.clip(r, -delta, delta)  # d Huber / d r
    grad = np.array([(g * w[0]).sum(), (g * w[1]).sum(), (g * w[2]).sum(),
                     -(g * w[0] * log_n).sum(), -(g * w[1] * log_d).sum()])
    return float(huber(r, delta).sum()), grad


def _grid_objective(thetas: np.ndarray, log_n, log_d, log_l, delta: float) -> np.ndarray:
    """The objective at many parameter vectors at once (rows of `thetas`)."""
    a, b, e, alpha, beta = (thetas[:, i:i + 1] for i in range(5))
    z = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e + 0 * log_n))
    r = np.logaddexp.reduce(z, axis=0) - log_l
    return huber(r, delta).sum(axis=1)


def log_loss_pred(theta: Sequence[float], n, d) -> np.ndarray:
    a, b, e, alpha, beta = theta
    log_n, log_d = np.log(np.asarray(n, dtype=float)), np.log(np.asarray(d, dtype=float))
    z = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)))
    return np.logaddexp.reduce(z, axis=0)


def fit_law(n, d, loss, delta: float = HUBER_DELTA, grid: dict[str, Sequence[float]] | None = None,
            starts: int | None = DEFAULT_STARTS, maxiter: int = 2000) -> LawFit:
    """Fit L(N, D) to final losses `loss` of runs with N parameters trained on D tokens.

    `starts`: L-BFGS runs from the `starts` grid points with the lowest objective (the grid is
    scored first, in one vectorised pass); None = from every grid point, as the paper."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    n, d, loss = (np.asarray(x, dtype=float).ravel() for x in (n, d, loss))
    if not (len(n) == len(d) == len(loss)):
        raise ValueError("n, d and loss must have the same length")
    if len(n) < 5:
        raise ValueError(f"{len(n)} runs cannot determine the law's 5 parameters; need at least 5")
    if np.any(n <= 0) or np.any(d <= 0) or np.any(loss <= 0) or not np.all(np.isfinite(loss)):
        raise ValueError("n, d and loss must be positive and finite")
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    grid = grid or INIT_GRID
    names = ("a", "b", "e", "alpha", "beta")
    inits = np.array(list(itertools.product(*(grid[k] for k in names))), dtype=float)
    if starts is not None and starts < len(inits):
        inits = inits[np.argsort(_grid_objective(inits, log_n, log_d, log_l, delta), kind="stable")[:starts]]
    best, best_init, converged = None, None, 0
    # Thousands of 5-variable solves: BLAS threads only add synchronisation (20x slower on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(over="ignore", invalid="ignore"):
        for start in inits:
            res = minimize(_objective, start, args=(log_n, log_d, log_l, delta), jac=True,
                           method="L-BFGS-B", options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12})
            converged += bool(res.success)
            if np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best, best_init = res, start
    if best is None:
        raise RuntimeError("no start of the law fit reached a finite optimum")
    a, b, e, alpha, beta = (float(x) for x in best.x)
    law = ScalingLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)
    residuals = (log_loss_pred(best.x, n, d) - log_l).tolist()
    return LawFit(law=law, objective=float(best.fun), init=dict(zip(names, map(float, best_init))),
                  n_points=len(n), n_inits=len(inits), converged=converged, residuals=residuals)


@dataclass
class IsoFlopMinimum:
    flops: float
    n_opt: float | None  # None: the parabola opens downwards (no minimum)
    loss_opt: float | None
    inside: bool  # the vertex lies within the budget's sampled N range
    coeffs: tuple[float, float, float]  # L = c2 x^2 + c1 x + c0, x = log N
    points: int

    def to_dict(self) -> dict:
        return asdict(self)


def isoflop_minimum(flops: float, n, loss) -> IsoFlopMinimum:
    """The vertex of the parabola L = c2 (log N)^2 + c1 log N + c0 through one budget's runs."""
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if len(np.unique(n)) < 3:
        raise ValueError(f"isoFLOP budget {flops:.3g} has {len(np.unique(n))} model sizes; a parabola needs 3")
    x = np.log(n)
    c2, c1, c0 = np.polyfit(x, loss, 2)
    if c2 <= 0:
        return IsoFlopMinimum(float(flops), None, None, False, (float(c2), float(c1), float(c0)), len(n))
    xv = -c1 / (2 * c2)
    return IsoFlopMinimum(float(flops), float(math.exp(xv)), float(np.polyval([c2, c1, c0], xv)),
                          bool(x.min() <= xv <= x.max()), (float(c2), float(c1), float(c0)), len(n))


def isoflop_minima(flops, n, loss) -> list[IsoFlopMinimum]:
    """One minimum per distinct budget in `flops` with at least 3 model sizes."""
    flops, n, loss = (np.asarray(x, dtype=float) for x in (flops, n, loss))
    out = []
    for c in np.unique(flops[np.isfinite(flops)]):
        sel = flops == c
        if len(np.unique(n[sel])) >= 3:
            out.append(isoflop_minimum(float(c), n[sel], loss[sel]))
    return out


def power_law_exponent(x, y) -> tuple[float, float] | None:
    """(exponent k, prefactor) of y = prefactor * x^k by least squares in log-log; None for < 2 points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(np.unique(x)) < 2:
        return None
    k, c = np.polyfit(np.log(x), np.log(y), 1)
    return float(k), float(math.exp(c))
