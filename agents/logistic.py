"""Weighted multinomial logistic regression on multi-hot inputs: the suite's NTP solver.

Rows ``r`` carry a multi-hot input ``z_r`` (given by its active indices, ``-1`` = none) and
target weights ``Y[r, a] >= 0`` (counts, or expected counts for population fits). Logits are
``z_r W`` with ``W = reshape(P^T theta, (num_inputs, V))`` (``P`` = identity when absent), so
``<theta, P (z ⊗ e_a)>`` is the linear-softmax score. The objective

``f(theta) = -(1 / sum Y) sum_{r,a} Y[r, a] log softmax(z_r W)[a] + (l2 / 2) |theta|^2``

is convex; it is minimised by Newton's method with exact Hessian-vector products
(trust-region Krylov), which converges to machine precision in a few dozen iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from ntp_envs.type_aliases import FloatArray, IntArray


@dataclass(frozen=True)
class LogisticFit:
    """Solution and diagnostics of :func:`fit_logistic`."""

    theta: FloatArray
    log_loss: float
    grad_norm: float
    iterations: int
    converged: bool


class _Problem:
    def __init__(
        self,
        active: IntArray,
        targets: FloatArray,
        num_inputs: int,
        projection: FloatArray | None,
        l2: float,
    ) -> None:
        self.active = active
        self.mask = active >= 0
        self.index = np.where(self.mask, active, 0)
        self.total = float(targets.sum())
        self.targets = targets / self.total
        self.row_weight = self.targets.sum(axis=1)
        self.num_inputs = num_inputs
        self.vocab = targets.shape[1]
        self.projection = projection
        self.l2 = l2

    def weights(self, theta: FloatArray) -> FloatArray:
        full = theta if self.projection is None else self.projection.T @ theta
        return full.reshape(self.num_inputs, self.vocab)

    def gather(self, weights: FloatArray) -> FloatArray:
        out = np.zeros((self.active.shape[0], self.vocab))
        for k in range(self.active.shape[1]):
            out += weights[self.index[:, k]] * self.mask[:, k, None]
        return out

    def scatter(self, resid: FloatArray) -> FloatArray:
        grad = np.zeros((self.num_inputs, self.vocab))
        for k in range(self.active.shape[1]):
            idx, m = self.index[:, k], self.mask[:, k]
            for a in range(self.vocab):
                grad[:, a] += np.bincount(idx[m], weights=resid[m, a], minlength=self.num_inputs)
        full = grad.ravel()
        return full if self.projection is None else self.projection @ full

    def logp(self, theta: FloatArray) -> FloatArray:
        return log_softmax(self.gather(self.weights(theta)), axis=1)

    def value_grad(self, theta: FloatArray) -> tuple[float, FloatArray]:
        logp = self.logp(theta)
        value = -float((self.targets * logp).sum()) + 0.5 * self.l2 * float(theta @ theta)
        resid = self.row_weight[:, None] * np.exp(logp) - self.targets
        return value, self.scatter(resid) + self.l2 * theta

    def hessp(self, theta: FloatArray, vec: FloatArray) -> FloatArray:
        probs = np.exp(self.logp(theta))
        u = self.gather(self.weights(vec))
        s = self.row_weight[:, None] * probs * (u - (probs * u).sum(axis=1, keepdims=True))
        return self.scatter(s) + self.l2 * vec


def fit_logistic(
    active: IntArray,
    targets: FloatArray,
    num_inputs: int,
    projection: FloatArray | None = None,
    *,
    l2: float = 1e-8,
    theta0: FloatArray | None = None,
    max_iter: int = 500,
    gtol: float = 1e-10,
) -> LogisticFit:
    """Minimise the weighted log loss above; returns ``theta`` of length ``dim``."""
    active = np.asarray(active, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.float64)
    if active.ndim != 2 or targets.ndim != 2 or active.shape[0] != targets.shape[0]:
        raise ValueError(
            f"active (R, K) and targets (R, V) must share R, got {active.shape}, {targets.shape}"
        )
    if targets.shape[0] == 0 or not np.isfinite(targets).all() or (targets < 0).any():
        raise ValueError("targets must be a non-empty array of finite non-negative weights")
    if targets.sum() <= 0:
        raise ValueError("targets must have positive total weight")
    if active.size and (active.max() >= num_inputs or active.min() < -1):
        raise ValueError(f"active indices must lie in [-1, {num_inputs - 1}]")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    problem = _Problem(active, targets, num_inputs, projection, l2)
    dim = num_inputs * targets.shape[1] if projection is None else projection.shape[0]
    x0 = np.zeros(dim) if theta0 is None else np.asarray(theta0, dtype=np.float64).copy()
    with np.errstate(invalid="ignore"):  # degenerate trust-region subproblems near separability
        result = minimize(
            problem.value_grad, x0, jac=True, hessp=problem.hessp, method="trust-krylov",
            options={"maxiter": max_iter, "gtol": gtol},
        )
    theta = result.x
    _, grad = problem.value_grad(theta)
    log_loss = -float((problem.targets * problem.logp(theta)).sum())
    grad_norm = float(np.abs(grad).max())
    return LogisticFit(theta, log_loss, grad_norm, int(result.nit), grad_norm <= max(gtol, 1e-7))
