"""The best-in-class oracle: ``min_{pi in Pi} D_H^2(P^pi, P*)``, the denominator of C_apx.

For a linear-softmax class the objective is non-convex in ``theta``, so one local search is
not trusted. The search is global-then-local:

1. starts: the KL projection (population LogLossBC), ``theta = 0``, any caller-supplied
   parameters, and ``num_random_starts`` Gaussian draws at scales 0.5, 1, 2 and 4; for a
   one-parameter class also the local minima of a grid scan (:func:`scan_starts`) over the
   logit range of every feature scale (a tied feature ``M theta`` with a large ``M`` has
   basins of width ~1/M that random draws miss), which skip step 2;
2. all starts descend together (batched Adam on ``-log BC``, exact gradients through the
   finite-state recursion);
3. the ``refine`` best distinct end points are polished to tight tolerance.

By default values and gradients come from the adjoint (forward-backward) recursion of
:mod:`evaluation.oracle.bhattacharyya_grad`: all starts as one batch, memory bounded in ``H``; the
polish runs the refined points together by L-BFGS (:mod:`evaluation.oracle.batched_minimize`),
preconditioned by the Hessian at the best end point of the same objective at a shorter
horizon ``H'`` (finite differences of the exact gradient; ``H' = min(H, max(16, 2**14 / d))``,
so its ``d`` gradients cost about ``2**14`` row-positions). The objective at
horizon ``H`` is close to ``H / H'`` times the one at ``H'``, so its curvature has nearly the
same shape, and the preconditioned search needs tens of iterations where plain L-BFGS on an
ill-conditioned class needs hundreds. The preconditioner changes the path, not the optimum.
``gradient="autograd"`` keeps the reference path: torch autograd through
:func:`log_bhattacharyya`, one scipy L-BFGS-B per refined point.

The result reports what was done and how many refined searches agree with the best value,
so a landscape with many basins is visible instead of silently inflating C_apx.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy.optimize import minimize

from agents.logloss_bc import fit_linear_softmax, target_counts
from agents.policies import linear_class
from evaluation.divergences import divergence
from evaluation.methods.finite_state_dp import log_bhattacharyya
from evaluation.methods.sufficient_stats import log_bhattacharyya_counts
from evaluation.oracle.batched_minimize import minimize_batch
from evaluation.oracle.bhattacharyya_grad import log_bhattacharyya_value_grad
from ntp_envs.finite_class import FiniteClass
from ntp_envs.sequence_model import FinitePrompts
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray


@dataclass(frozen=True)
class OracleResult:
    """Best-in-class squared Hellinger and a record of the search that found it."""

    hellinger2: float
    theta: FloatArray | None
    method: str
    num_starts: int
    num_refined: int
    agreement: float
    local_optima: list[float] = field(default_factory=list)
    seconds: float = 0.0


Gradient = Literal["adjoint", "autograd"]

PRECONDITION_ROW_STEPS = 2**14
"""Budget, in parameter rows x positions, of the preconditioner's finite-difference Hessian."""

HESSIAN_BATCH = 64
"""Shifted points per gradient call when differencing the preconditioner's Hessian."""


class _LinearClassObjective:
    """``theta (B, d) -> -log BC(P^theta, P*)`` in torch, batched over parameters.

    Exact through the finite-state recursion when the expert is finite-state, or through
    the count-of-ones sum when the expert has a count law and the class is i.i.d. binary.
    ``gradient``: ``"adjoint"`` (value and gradient by the forward-backward recursion of
    :mod:`evaluation.oracle.bhattacharyya_grad`) or ``"autograd"`` (torch autograd through
    :func:`log_bhattacharyya`, the reference path).
    """

    def __init__(self, task: SequenceTask, gradient: Gradient = "adjoint") -> None:
        if gradient not in ("adjoint", "autograd"):
            raise ValueError(f"gradient must be 'adjoint' or 'autograd', got {gradient!r}")
        lc = linear_class(task)
        if not isinstance(task.prompts, FinitePrompts):
            raise ValueError(f"{task.env_id}: the oracle needs a finite prompt law")
        expert = task.expert.finite_state()
        law = task.expert.count_law()
        self.lc = lc
        self.log_mu = torch.from_numpy(task.prompts.log_probs)
        self.horizon = task.horizon
        self.active = torch.from_numpy(lc.active_inputs(*lc.all_rows()))
        self.projection = None if lc.projection is None else torch.from_numpy(lc.projection)
        if expert is not None:
            memory = max(lc.memory, expert.memory)
            self.expert_logp = torch.from_numpy(expert.lift(memory).logp)
            self.state_map = torch.from_numpy(np.arange(lc.vocab_size**memory) % lc.num_states)
            self.counts = None
        elif law is not None and lc.memory == 0 and lc.vocab_size == 2:
            self.expert_log_seq = torch.from_numpy(law.log_seq)
            self.counts = torch.arange(task.horizon + 1, dtype=torch.float64)
        else:
            raise ValueError(f"{task.env_id}: the oracle needs a finite-state expert, or a "
                             "count-law expert with an i.i.d. binary class")
        self.gradient = gradient if expert is not None else "autograd"

    def learner_logp(self, theta: torch.Tensor) -> torch.Tensor:
        lc = self.lc
        full = theta if self.projection is None else theta @ self.projection
        weights = full.reshape(theta.shape[0], lc.num_inputs, lc.vocab_size)
        padded = torch.cat([weights, torch.zeros_like(weights[:, :1])], dim=1)  # -1 -> zeros
        logits = padded[:, self.active].sum(dim=2)
        logits = logits.reshape(theta.shape[0], lc.num_contexts, lc.num_positions,
                                lc.num_states, lc.vocab_size)
        return torch.log_softmax(logits, dim=-1)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        logp = self.learner_logp(theta)
        if self.counts is not None:  # i.i.d. binary: log P(seq with k ones) per context
            log_p0, log_p1 = logp[:, :, 0, 0, :1], logp[:, :, 0, 0, 1:]
            log_seq = self.counts * log_p1 + (self.horizon - self.counts) * log_p0
            return -log_bhattacharyya_counts(log_seq, self.expert_log_seq, self.log_mu)
        logp = logp[:, :, :, self.state_map]
        expert = self.expert_logp.expand(theta.shape[0], *self.expert_logp.shape)
        return -log_bhattacharyya(logp, expert, self.log_mu, self.horizon)

    def value_grad(self, theta: torch.Tensor,
                   horizon: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``(B,)`` and gradients ``(B, d)`` at parameters ``(B, d)``; ``horizon``
        (adjoint path only) replaces the task's."""
        x = theta.detach().requires_grad_(True)
        if self.gradient == "autograd":
            value = self(x)
            (grad,) = torch.autograd.grad(value.sum(), x)
            return value.detach(), grad
        logp = self.learner_logp(x)
        log_bc, grad_logp = log_bhattacharyya_value_grad(
            logp.detach(), self.expert_logp, self.log_mu, horizon or self.horizon)
        (grad,) = torch.autograd.grad(logp, x, grad_outputs=-grad_logp)
        return -log_bc, grad

    def values(self, theta: torch.Tensor) -> torch.Tensor:
        """Values ``(B,)`` at parameters ``(B, d)``, without a gradient."""
        if self.gradient == "adjoint":
            return self.value_grad(theta)[0]
        with torch.no_grad():
            return self(theta.detach())

    def numpy_value_grad(self, theta: FloatArray) -> tuple[float, FloatArray]:
        value, grad = self.value_grad(torch.tensor(theta[None, :], dtype=torch.float64))
        return float(value[0]), grad[0].numpy().astype(np.float64)


def _finite_class_minimum(task: SequenceTask) -> OracleResult:
    start = time.perf_counter()
    members = task.learner_class
    values = [divergence(task.expert, m, task.prompts) for m in members.members]
    if any(v.hellinger2_stderr > 0 for v in values):
        raise ValueError(f"{task.env_id}: the finite-class minimum needs exact divergences")
    h2 = np.array([v.hellinger2 for v in values])
    best = int(np.argmin(h2))
    return OracleResult(
        hellinger2=float(h2[best]), theta=None,
        method=f"exhaustive({len(members)} members, {values[best].method}; "
               f"best {members.names[best]})",
        num_starts=len(members), num_refined=0, agreement=1.0,
        local_optima=sorted(float(f"{v:.10g}") for v in h2),
        seconds=time.perf_counter() - start)


def _adam(objective: _LinearClassObjective, theta: torch.Tensor, steps: int, lr: float) -> None:
    """Plain Adam on every start at once (in place; torch.optim would import torch._dynamo)."""
    first, second = torch.zeros_like(theta), torch.zeros_like(theta)
    beta1, beta2 = 0.9, 0.999
    for step in range(1, steps + 1):
        _, grad = objective.value_grad(theta)
        first.mul_(beta1).add_(grad, alpha=1 - beta1)
        second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = (first / (1 - beta1**step)) / ((second / (1 - beta2**step)).sqrt() + 1e-8)
        with torch.no_grad():
            theta.sub_(lr * update)


def _preconditioner(objective: _LinearClassObjective,
                    centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, sqrt(|lambda|))``: ``theta = centre + M y`` whitens the short-horizon Hessian at
    ``centre`` (eigenvalues by absolute value, floored at ``1e-10`` of the largest)."""
    dim, eps = centre.shape[0], 1e-6
    horizon = min(objective.horizon, max(16, PRECONDITION_ROW_STEPS // dim))
    _, g0 = objective.value_grad(centre[None], horizon)
    shifted = centre + eps * torch.eye(dim, dtype=centre.dtype)
    g_shift = torch.cat([objective.value_grad(shifted[i:i + HESSIAN_BATCH], horizon)[1]
                         for i in range(0, dim, HESSIAN_BATCH)])
    hess = (g_shift - g0) / eps
    lam, vec = torch.linalg.eigh(0.5 * (hess + hess.T))
    size = lam.abs()
    root = torch.clamp(size, min=1e-10 * float(size.max()) + 1e-300).sqrt()
    return vec / root, root


def _polish(objective: _LinearClassObjective, ends: FloatArray) -> list[tuple[float, FloatArray]]:
    """Local minima (value, theta) from each end point (the first is the best), to tight
    tolerance."""
    if objective.gradient == "adjoint":
        x = torch.from_numpy(ends)
        centre = x[0]
        transform, root = _preconditioner(objective, centre)

        def whitened(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            value, grad = objective.value_grad(centre + y @ transform.T)
            return value, grad @ transform

        y0 = ((x - centre) @ (transform * root**2))  # M^{-1} (x - centre), M^{-1} = root V^T
        result = minimize_batch(whitened, y0, max_iter=2000, gtol=1e-12, ftol=1e-15)
        thetas = centre + result.x @ transform.T
        return [(float(v), t.numpy()) for v, t in zip(result.value, thetas, strict=True)]
    refined = []
    for end in ends:
        result = minimize(objective.numpy_value_grad, end, jac=True, method="L-BFGS-B",
                          options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
        refined.append((float(result.fun), result.x))
    return refined


SCAN_LOGIT_RANGE = 12.0
SCAN_POINTS = 401
SCAN_KEEP = 4


def scan_starts(objective: _LinearClassObjective, keep: int = SCAN_KEEP) -> list[FloatArray]:
    """The ``keep`` best points of a grid over a one-parameter class (empty for ``d > 1``):
    for each distinct scale ``c`` of the projection's entries, ``theta = u / c`` for
    ``SCAN_POINTS`` values of ``u`` in ``[-SCAN_LOGIT_RANGE, SCAN_LOGIT_RANGE]``, each local
    minimum of the scanned values a candidate."""
    lc = objective.lc
    if lc.dim != 1:
        return []
    weights = np.ones(1) if lc.projection is None else np.abs(np.asarray(lc.projection))
    scales = np.unique(weights[weights > 0])
    u = np.linspace(-SCAN_LOGIT_RANGE, SCAN_LOGIT_RANGE, SCAN_POINTS)
    grid = np.unique(np.concatenate([u / c for c in scales]))
    values = objective.values(torch.tensor(grid[:, None], dtype=torch.float64)).numpy()
    inner = (values[1:-1] <= values[:-2]) & (values[1:-1] <= values[2:])
    minima = np.concatenate([[0] if values[0] <= values[1] else [], 1 + np.flatnonzero(inner),
                             [len(grid) - 1] if values[-1] <= values[-2] else []]).astype(int)
    best = minima[np.argsort(values[minima])[:keep]]
    return [np.array([grid[i]]) for i in best]


def _to_hellinger2(neg_log_bc: float) -> float:
    return float(-2.0 * np.expm1(-neg_log_bc))


def best_in_class(
    task: SequenceTask,
    *,
    num_random_starts: int = 16,
    extra_starts: list[FloatArray] | None = None,
    adam_steps: int = 60,
    refine: int = 4,
    seed: int = 0,
    gradient: Gradient = "adjoint",
) -> OracleResult:
    """The Hellinger projection of the expert onto the class: an exact minimum over a finite
    class, a global-then-local search over a linear-softmax class.

    ``gradient="adjoint"`` (default) takes values and gradients from the forward-backward
    recursion and polishes the chosen end points together (batched, preconditioned L-BFGS);
    ``"autograd"`` is the reference path (torch autograd, one scipy L-BFGS-B per point).
    """
    if isinstance(task.learner_class, FiniteClass):
        return _finite_class_minimum(task)
    if num_random_starts < 0 or refine < 1 or adam_steps < 0:
        raise ValueError("num_random_starts >= 0, refine >= 1 and adam_steps >= 0 required")
    start_time = time.perf_counter()
    objective = _LinearClassObjective(task, gradient)
    lc = objective.lc
    rng = np.random.default_rng(seed)
    kl_projection, _ = fit_linear_softmax(lc, target_counts(task, None), l2=1e-8)
    starts = [kl_projection, np.zeros(lc.dim)]
    if task.well_specified_theta is not None:
        starts.append(np.asarray(task.well_specified_theta, dtype=np.float64))
    starts += [np.asarray(s, dtype=np.float64) for s in extra_starts or []]
    scales = np.array([0.5, 1.0, 2.0, 4.0])
    starts += [rng.normal(0.0, scales[i % 4], lc.dim) for i in range(num_random_starts)]

    theta = torch.tensor(np.stack(starts), dtype=torch.float64, requires_grad=True)
    _adam(objective, theta, adam_steps, lr=0.1)
    descended = objective.values(theta).numpy()
    ends = theta.detach().numpy()
    scanned = scan_starts(objective)
    if scanned:  # grid minima go to the polish as they are: Adam's steps would leave them
        grid = np.stack(scanned)
        ends = np.concatenate([ends, grid])
        descended = np.concatenate([descended, objective.values(
            torch.tensor(grid, dtype=torch.float64)).numpy()])
        starts += scanned
    # polish the best distinct end points (distinct by objective value)
    order = np.argsort(descended)
    chosen: list[int] = []
    for i in order:
        if all(abs(descended[i] - descended[j]) > 1e-9 * max(1.0, abs(descended[j]))
               for j in chosen):
            chosen.append(int(i))
        if len(chosen) == refine:
            break
    refined = _polish(objective, ends[chosen])
    refined.sort(key=lambda item: item[0])
    best_value, best_theta = refined[0]
    values = np.array([_to_hellinger2(v) for v, _ in refined])
    best = float(values[0])
    agree = float(np.mean(values <= best + max(1e-10, 1e-6 * best)))
    optima = sorted({float(f"{v:.10g}") for v in values})
    return OracleResult(
        hellinger2=_to_hellinger2(best_value),
        theta=best_theta,
        method=f"multistart({len(starts)} starts, adam {adam_steps}, lbfgs x{len(chosen)})",
        num_starts=len(starts),
        num_refined=len(chosen),
        agreement=agree,
        local_optima=optima,
        seconds=time.perf_counter() - start_time,
    )
