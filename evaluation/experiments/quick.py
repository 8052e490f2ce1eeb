"""The headline: NTP's error amplification on MixtureProduct and the two ways around it.

One instance, as a picture; the rates are checked over a MixtureProduct family by claim R2
(:mod:`evaluation.experiments.barrier`), which compares the sweep's exact population C_apx of
LogLossBC with the closed form derived here, independently of
:mod:`evaluation.oracle.search`: the population NTP fit of the i.i.d.
Bernoulli class to a mixture of products is the marginal mean ``m = (1 - w) p0 + w p1``;
``BC(mixture, Bern(q)^H) = sum_k C(H, k) sqrt(M(k) q^k (1 - q)^(H - k))`` over the count of
ones ``k`` (``M(k)`` the mixture's probability of one sequence with ``k`` ones); the best in
class maximises it over ``q``: a fine grid in ``logit q`` then golden section.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln, logsumexp

from evaluation.bench.sweep import SweepConfig
from evaluation.experiments.base import Experiment

ENV = "ntp_envs/MixtureProduct-v0"
MIXTURE = {"weight": 0.05, "p0": 0.2, "p1": 0.8}  # the env's defaults, spelled out
AGENTS = ("logloss", "robust", "rho")
HORIZONS = (8, 16, 32, 64, 128, 256, 512, 1024)
CHECKED_HORIZONS = (64, 1024)
RELATIVE_TOLERANCE = 1e-6
MIN_GROWTH = 0.3
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _log_bc(horizon: int, weight: float, p0: float, p1: float, q: np.ndarray) -> np.ndarray:
    """``log BC`` between the mixture of products and ``Bern(q)^H`` for each ``q`` (a sum
    over the count of ones)."""
    k = np.arange(horizon + 1, dtype=float)
    log_binom = gammaln(horizon + 1.0) - gammaln(k + 1.0) - gammaln(horizon - k + 1.0)
    log_mix = np.logaddexp(math.log1p(-weight) + k * math.log(p0) + (horizon - k) * math.log1p(-p0),
                           math.log(weight) + k * math.log(p1) + (horizon - k) * math.log1p(-p1))
    q = np.asarray(q, dtype=float)[..., None]
    log_q = k * np.log(q) + (horizon - k) * np.log1p(-q)
    return logsumexp(log_binom + 0.5 * (log_mix + log_q), axis=-1)


def _hellinger2(log_bc: float) -> float:
    return -2.0 * math.expm1(min(float(log_bc), 0.0))


def mixture_ntp_c_apx(horizon: int, weight: float, p0: float, p1: float,
                      grid_points: int = 4001) -> tuple[float, float, float]:
    """``(C_apx, D_H^2 of the NTP fit, best-in-class D_H^2)`` of population NTP on
    MixtureProduct, in closed form (module doc)."""
    mean = (1.0 - weight) * p0 + weight * p1

    def log_bc(logit: float) -> float:
        return float(_log_bc(horizon, weight, p0, p1, 1.0 / (1.0 + math.exp(-logit))))

    grid = np.linspace(-15.0, 15.0, grid_points)
    values = _log_bc(horizon, weight, p0, p1, 1.0 / (1.0 + np.exp(-grid)))
    i = int(np.argmax(values))
    low, high = grid[max(i - 1, 0)], grid[min(i + 1, grid_points - 1)]
    a, b = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
    fa, fb = log_bc(a), log_bc(b)
    for _ in range(80):  # golden section on the bracket around the grid's best point
        if fa > fb:
            high, b, fb = b, a, fa
            a = high - GOLDEN * (high - low)
            fa = log_bc(a)
        else:
            low, a, fa = a, b, fb
            b = low + GOLDEN * (high - low)
            fb = log_bc(b)
    best = _hellinger2(max(fa, fb, values[i]))
    fit = _hellinger2(_log_bc(horizon, weight, p0, p1, mean))
    return fit / best, fit, best


_CONFIGS = [
    SweepConfig(ENV, dict(MIXTURE), AGENTS, HORIZONS, seeds=1, population=True),
    SweepConfig(ENV, dict(MIXTURE), AGENTS, HORIZONS, seeds=2, n_train=5000),
]

EXPERIMENT = Experiment(
    name="quick",
    title="The headline: NTP amplifies misspecification on MixtureProduct",
    about="MixtureProduct-v0 (a 95/5 mixture of two i.i.d. Bernoulli laws; class: i.i.d. "
          "Bernoulli laws): logloss, robust and rho at H = 8..1024, from the exact expert law "
          "and from 5,000 demonstrations (2 seeds), scored exactly.",
    profiles={"cpu": _CONFIGS, "full": _CONFIGS},
    rank=0,
)
