"""Weighted multinomial logistic regression on multi-hot inputs: the suite's NTP solver.

Rows ``r`` carry a multi-hot input ``z_r`` (given by its active indices, ``-1`` = none) and
target weights ``Y[r, a] >= 0`` (counts, or expected counts for population fits). Logits are
``z_r W`` with ``W = reshape(P^T theta, (num_inputs, V))`` (``P`` = identity when absent), so
``<theta, P (z ⊗ e_a)>`` is the linear-softmax score. The objective

``f(theta) = -(1 / sum Y) sum_{r,a} Y[r, a] log softmax(z_r W)[a] + (l2 / 2) |theta|^2``

is convex. Two solvers reach its minimiser, both stopped on the gradient's max-norm (function
values alone cannot certify that precision: they stop changing in float64 first, so both
line searches fall back on the gradient when the values are flat):

* ``newton``: Newton's method with backtracking, each step solving the explicit Hessian
  (small problems) or CG on exact Hessian-vector products (many outputs, e.g. chunk
  vocabularies); converges to machine precision in a handful of iterations.
* ``lbfgs``: L-BFGS on exact gradients, for wide multi-hot rows (the one-hot of a whole
  CoT prefix): there the explicit Hessian costs ``R (K V)^2`` per step for ``K`` active
  inputs per row while a gradient costs ``R K V``, and the ill-conditioned Hessian
  (``l2`` small against the data curvature) needs hundreds of CG products per Newton step.

``solver="auto"`` takes ``lbfgs`` when the rows are wide (:data:`LBFGS_MIN_ACTIVE` active
inputs per row on average), there is no projection, and the explicit Hessian would cost
more than :data:`LBFGS_MIN_HESSIAN_COST`; ``newton`` otherwise (tabular and chunk fits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import LinearOperator, cg
from scipy.special import log_softmax

from ntp_envs.type_aliases import FloatArray, IntArray

DENSE_HESSIAN_MAX_DIM = 2048
"""Up to this many parameters Newton steps solve the explicit Hessian; above, CG."""

BLOCK_PRECONDITIONER_COST = 2**27
"""Largest cost (``V I^3 + R I^2 V`` flops) of the block preconditioner; above, diagonal."""

LBFGS_MIN_ACTIVE = 8
"""Mean active inputs per row from which ``solver="auto"`` may take L-BFGS."""

LBFGS_MIN_HESSIAN_COST = 2**24
"""Explicit-Hessian cost (``R (K V)^2`` for ``R`` rows of ``K`` active inputs) from which
``solver="auto"`` takes L-BFGS for wide rows."""

LBFGS_MEMORY = 100
"""Curvature pairs kept by L-BFGS (more pairs, fewer iterations on these problems)."""

LBFGS_MAX_ITER = 20000
"""Cap on L-BFGS iterations."""

SOLVERS = ("auto", "newton", "lbfgs")

CG_MAX_ITER = 2000
"""Cap on conjugate-gradient iterations per Newton step (an inexact step is still a descent
direction; near the optimum CG cannot reach its relative tolerance in float64)."""


@dataclass(frozen=True)
class LogisticFit:
    """Solution and diagnostics of :func:`fit_logistic`."""

    theta: FloatArray
    log_loss: float
    grad_norm: float
    iterations: int
    converged: bool
    solver: str = "newton"


class _Problem:
    def __init__(
        self,
        active: IntArray,
        targets: FloatArray,
        num_inputs: int,
        projection: FloatArray | None,
        l2: float,
    ) -> None:
        mask = active >= 0
        rows = np.broadcast_to(np.arange(active.shape[0])[:, None], active.shape)
        # the multi-hot inputs as a sparse (R, num_inputs) matrix: gather and scatter are
        # sparse products, vectorised over the V outputs (V can be a chunk vocabulary V^K)
        self.design = csr_matrix(
            (np.ones(int(mask.sum())), (rows[mask], active[mask])),
            shape=(active.shape[0], num_inputs),
        )
        self.design_t = self.design.T.tocsr()
        self.total = float(targets.sum())
        self.targets = targets / self.total
        self.targets_t = np.ascontiguousarray(self.targets.T)
        self.row_weight = self.targets.sum(axis=1)
        self.num_inputs = num_inputs
        self.vocab = targets.shape[1]
        self.projection = projection
        self.l2 = l2

    def weights(self, theta: FloatArray) -> FloatArray:
        full = theta if self.projection is None else self.projection.T @ theta
        return full.reshape(self.num_inputs, self.vocab)

    def gather(self, weights: FloatArray) -> FloatArray:
        return np.asarray(self.design @ weights)

    def scatter(self, resid: FloatArray) -> FloatArray:
        full = np.asarray(self.design_t @ resid).ravel()
        return full if self.projection is None else self.projection @ full

    def logp(self, theta: FloatArray) -> FloatArray:
        return log_softmax(self.gather(self.weights(theta)), axis=1)

    def value_grad(self, theta: FloatArray) -> tuple[float, FloatArray]:
        # outputs-major (V, R) layout: the per-row max and sum run along contiguous memory
        # (a reduction over a short last axis of V is ~100x slower); one exp per entry
        shifted = np.ascontiguousarray(self.weights(theta).T @ self.design_t)
        shifted -= shifted.max(axis=0)
        probs = np.exp(shifted)
        norm = probs.sum(axis=0)
        # -sum Y log softmax = -sum Y (shifted - log norm)
        value = (float(self.row_weight @ np.log(norm)) - float(np.vdot(self.targets_t, shifted))
                 + 0.5 * self.l2 * float(theta @ theta))
        probs *= self.row_weight / norm
        probs -= self.targets_t
        full = np.asarray(probs @ self.design).T.ravel()
        grad = full if self.projection is None else self.projection @ full
        return value, grad + self.l2 * theta

    def hessian_cost(self) -> float:
        """Flops-like cost ``R (K V)^2`` of building the explicit Hessian (sparse products)."""
        rows = self.design.shape[0]
        return rows * (self.design.nnz / max(rows, 1) * self.vocab) ** 2

    def smoothed_value_grad(self, theta: FloatArray, gamma: float) -> tuple[float, FloatArray]:
        """Log loss of ``(1 - gamma) softmax + gamma / V`` and its gradient (non-convex)."""
        logp = self.logp(theta)
        with np.errstate(divide="ignore"):
            smooth = np.logaddexp(np.log1p(-gamma) + logp, np.log(gamma / self.vocab))
        value = -float((self.targets * smooth).sum()) + 0.5 * self.l2 * float(theta @ theta)
        resp = self.targets * np.exp(np.log1p(-gamma) + logp - smooth)  # Y_a (1-g) p_a / p~_a
        resid = np.exp(logp) * resp.sum(axis=1, keepdims=True) - resp
        return value, self.scatter(resid) + self.l2 * theta

    def dense_hessian(self, theta: FloatArray) -> FloatArray:
        """The explicit Hessian (for small dimensions): sparse design, one pass."""
        probs = np.exp(self.logp(theta))
        weighted = self.row_weight[:, None] * probs
        vocab, size = self.vocab, self.num_inputs * self.vocab
        # H = sum_r (z_r z_r^T) ⊗ (diag(w_r) - w_r p_r^T): sparse products over all outputs
        # at once (no loop over the V outputs, which can be a chunk vocabulary V^K)
        coo = self.design.tocoo()
        rows = np.repeat(coo.row, vocab)
        cols = (coo.col[:, None] * vocab + np.arange(vocab)).ravel()
        outs = np.tile(np.arange(vocab), coo.nnz)
        z = np.repeat(coo.data, vocab)
        lifted = csr_matrix((z, (rows * vocab + outs, cols)),
                            shape=(self.design.shape[0] * vocab, size))  # rows (r, a)
        diagonal = lifted.T @ lifted.multiply(weighted.ravel()[:, None])
        w_rows = csr_matrix((z * weighted[rows, outs], (rows, cols)),
                            shape=(self.design.shape[0], size))
        p_rows = csr_matrix((z * probs[rows, outs], (rows, cols)),
                            shape=(self.design.shape[0], size))
        full = (diagonal - w_rows.T @ p_rows).toarray()
        if self.projection is not None:
            full = self.projection @ full @ self.projection.T
        return full + self.l2 * np.eye(full.shape[0])

    def preconditioner(self, theta: FloatArray) -> LinearOperator | None:
        """CG preconditioner (``None`` with a projection): the inverse of the Hessian's
        per-output blocks ``B_a = sum_r w_ra z_r z_r^T + l2 I`` (``num_inputs`` square), or of
        its diagonal where those blocks cost too much.

        The Hessian is ``blockdiag(B_a)`` minus a rank-``R`` term (one per row), so with the
        blocks CG needs at most ``R + 1`` iterations; either form rescales each output by its
        probability, which spans many orders of magnitude over a chunk vocabulary.
        """
        if self.projection is not None:
            return None
        probs = np.exp(self.logp(theta))
        weighted = self.row_weight[:, None] * probs
        n_in, vocab = self.num_inputs, self.vocab
        if vocab * n_in**3 + self.design.shape[0] * n_in**2 * vocab <= BLOCK_PRECONDITIONER_COST:
            z = self.design.toarray()
            blocks = np.einsum("ri,rj,ra->aij", z, z, weighted)  # (V, I, I)
            scale = np.maximum(np.einsum("aii->a", blocks) / n_in, 1e-300)
            blocks += (self.l2 + 1e-12 * scale)[:, None, None] * np.eye(n_in)
            inverse = np.linalg.inv(blocks)

            def apply(vec: FloatArray) -> FloatArray:
                per_output = vec.reshape(n_in, vocab).T[:, :, None]  # (V, I, 1)
                return (inverse @ per_output)[:, :, 0].T.ravel()
        else:
            curv = weighted * (1.0 - probs)
            diag = np.asarray(self.design_t.multiply(self.design_t) @ curv).ravel() + self.l2
            diagonal_inverse = 1.0 / np.maximum(diag, 1e-300)

            def apply(vec: FloatArray) -> FloatArray:
                return diagonal_inverse * vec

        size = n_in * vocab
        return LinearOperator((size, size), dtype=np.float64, matvec=apply)

    def hessian(self, theta: FloatArray) -> LinearOperator:
        """The Hessian at ``theta`` as an operator (probabilities computed once)."""
        probs = np.exp(self.logp(theta))
        weighted = self.row_weight[:, None] * probs

        def matvec(vec: FloatArray) -> FloatArray:
            u = self.gather(self.weights(vec))
            s = weighted * (u - (probs * u).sum(axis=1, keepdims=True))
            return self.scatter(s) + self.l2 * vec

        return LinearOperator((theta.size, theta.size), dtype=np.float64, matvec=matvec)


def fit_logistic(
    active: IntArray,
    targets: FloatArray,
    num_inputs: int,
    projection: FloatArray | None = None,
    *,
    l2: float = 1e-8,
    theta0: FloatArray | None = None,
    max_iter: int | None = None,
    gtol: float = 1e-11,
    dense_max_dim: int = DENSE_HESSIAN_MAX_DIM,
    solver: str = "auto",
) -> LogisticFit:
    """Minimise the weighted log loss above; returns ``theta`` of length ``dim``.

    ``solver`` is ``newton``, ``lbfgs`` or ``auto`` (module doc); both stop once the
    gradient's max-norm is at most ``gtol``. Newton steps solve the explicit Hessian up to
    ``dim <= dense_max_dim`` parameters, above by preconditioned CG (cheaper when the
    outputs are many, e.g. chunk outcomes). ``max_iter`` caps the chosen solver's iterations
    (default 200 Newton steps, :data:`LBFGS_MAX_ITER` L-BFGS steps).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
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
    theta = np.zeros(dim) if theta0 is None else np.asarray(theta0, dtype=np.float64).copy()
    if solver == "auto":
        wide = problem.design.nnz >= LBFGS_MIN_ACTIVE * problem.design.shape[0]
        solver = ("lbfgs" if projection is None and wide
                  and problem.hessian_cost() > LBFGS_MIN_HESSIAN_COST else "newton")
    if solver == "lbfgs":
        theta, iterations = _lbfgs(problem, theta, max_iter or LBFGS_MAX_ITER, gtol)
    else:
        theta, iterations = _newton(problem, theta, max_iter or 200, gtol, dense_max_dim)
    _, grad = problem.value_grad(theta)
    log_loss = -float((problem.targets * problem.logp(theta)).sum())
    grad_norm = float(np.abs(grad).max())
    return LogisticFit(theta, log_loss, grad_norm, iterations, grad_norm <= gtol, solver)


def fit_smoothed_logistic(
    active: IntArray,
    targets: FloatArray,
    num_inputs: int,
    projection: FloatArray | None,
    gamma: float,
    theta0: FloatArray,
    *,
    l2: float = 0.0,
) -> LogisticFit:
    """Minimise the log loss of the smoothed model ``(1 - gamma) pi_theta + gamma Unif``.

    Not convex: L-BFGS from ``theta0`` (RobustBC starts from the plain NTP solution).
    """
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
    problem = _Problem(np.asarray(active, dtype=np.int64), np.asarray(targets, dtype=np.float64),
                       num_inputs, projection, l2)
    result = minimize(problem.smoothed_value_grad, np.asarray(theta0, dtype=np.float64),
                      args=(gamma,), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    value, grad = problem.smoothed_value_grad(result.x, gamma)
    grad_norm = float(np.abs(grad).max())
    return LogisticFit(result.x, value - 0.5 * l2 * float(result.x @ result.x), grad_norm,
                       int(result.nit), grad_norm <= 1e-7)


def _newton(problem: _Problem, theta: FloatArray, max_iter: int, gtol: float,
            dense_max_dim: int = DENSE_HESSIAN_MAX_DIM) -> tuple[FloatArray, int]:
    value, grad = problem.value_grad(theta)
    for iteration in range(max_iter):
        if np.abs(grad).max() <= gtol:
            return theta, iteration
        if theta.size <= dense_max_dim:  # minimum-norm Newton step, exact
            direction = np.linalg.lstsq(problem.dense_hessian(theta), -grad, rcond=1e-13)[0]
        else:
            # a residual below gtol / 10 already gives a next gradient below gtol
            direction, _ = cg(problem.hessian(theta), -grad, rtol=1e-12, atol=0.1 * gtol,
                              maxiter=min(10 * theta.size, CG_MAX_ITER),
                              M=problem.preconditioner(theta))
        if not np.isfinite(direction).all() or direction @ grad >= 0:
            direction = -grad
        step, accepted = 1.0, False
        while step > 1e-12:
            new_theta = theta + step * direction
            new_value, new_grad = problem.value_grad(new_theta)
            if _accept(value, grad, new_value, new_grad, float(direction @ grad), step):
                accepted = True
                break
            step *= 0.5
        if not accepted:
            return theta, iteration
        theta, value, grad = new_theta, new_value, new_grad
    return theta, max_iter


def _accept(value: float, grad: FloatArray, new_value: float, new_grad: FloatArray,
            slope: float, step: float) -> bool:
    """Armijo's sufficient decrease, or, where float64 values are flat, a smaller gradient."""
    if new_value <= value + 1e-4 * step * slope:
        return True
    flat = abs(new_value - value) <= 1e-15 * max(1.0, abs(value))
    return flat and float(new_grad @ new_grad) < float(grad @ grad)


def _lbfgs(problem: _Problem, theta: FloatArray, max_iter: int, gtol: float,
           memory: int = LBFGS_MEMORY) -> tuple[FloatArray, int]:
    """L-BFGS (two-loop recursion, backtracking from the unit step) until max|grad| <= gtol."""
    value, grad = problem.value_grad(theta)
    steps: list[FloatArray] = []
    changes: list[FloatArray] = []
    for iteration in range(max_iter):
        if np.abs(grad).max() <= gtol:
            return theta, iteration
        direction = -grad
        alphas = []
        for s, y in zip(reversed(steps), reversed(changes), strict=True):
            alpha = float(s @ direction) / float(y @ s)
            alphas.append(alpha)
            direction = direction - alpha * y
        if steps:  # the usual initial inverse Hessian scale s.y / y.y
            direction = direction * (float(steps[-1] @ changes[-1])
                                     / float(changes[-1] @ changes[-1]))
        else:  # first step: at most unit length in the max-norm
            direction = direction / max(1.0, float(np.abs(grad).max()))
        for s, y, alpha in zip(steps, changes, reversed(alphas), strict=True):
            direction = direction + (alpha - float(y @ direction) / float(y @ s)) * s
        slope = float(direction @ grad)
        if not slope < 0:  # lost curvature information: restart from steepest descent
            steps.clear()
            changes.clear()
            direction, slope = -grad, -float(grad @ grad)
        step = 1.0
        while True:
            new_theta = theta + step * direction
            new_value, new_grad = problem.value_grad(new_theta)
            if _accept(value, grad, new_value, new_grad, slope, step):
                break
            step *= 0.5
            if step < 1e-12:
                return theta, iteration
        s, y = new_theta - theta, new_grad - grad
        if float(s @ y) > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(y)):
            steps.append(s)
            changes.append(y)
            if len(steps) > memory:
                steps.pop(0)
                changes.pop(0)
        theta, value, grad = new_theta, new_value, new_grad
    return theta, max_iter
