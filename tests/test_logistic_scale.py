"""The L-BFGS path of the NTP solver (wide one-hot rows) against the Newton path and
independent references: scipy's trust-region Newton on an objective written here from
dense arrays, and scikit-learn's multinomial LogisticRegression."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax
from threadpoolctl import threadpool_limits

from agents.linear_ar import LinearAR, position_threads
from agents.logistic import LBFGS_MIN_ACTIVE, fit_logistic
from experts import collect_demonstrations
from ntp_envs import make_task


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small problems: oversubscribed BLAS threads on a shared machine only slow them down."""
    with threadpool_limits(limits=1):
        yield


def _slot_rows(rng: np.random.Generator, rows: int, slots: int, values: int) -> np.ndarray:
    """Multi-hot rows with one active input per slot (a one-hot context), ``-1`` = empty."""
    active = rng.integers(values, size=(rows, slots)) + values * np.arange(slots)
    active[rng.random(active.shape) < 0.1] = -1
    return active


def _dense_objective(active: np.ndarray, targets: np.ndarray, num_inputs: int, l2: float):
    """The solver's objective and gradient from a dense design (written independently)."""
    z = np.zeros((active.shape[0], num_inputs))
    for k in range(active.shape[1]):
        on = active[:, k] >= 0
        z[np.flatnonzero(on), active[on, k]] += 1.0
    y = targets / targets.sum()
    vocab = targets.shape[1]

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta.reshape(num_inputs, vocab)
        logp = log_softmax(z @ w, axis=1)
        value = -(y * logp).sum() + 0.5 * l2 * theta @ theta
        grad = z.T @ (y.sum(axis=1, keepdims=True) * np.exp(logp) - y)
        return value, grad.ravel() + l2 * theta

    def hess(theta: np.ndarray) -> np.ndarray:
        p = np.exp(log_softmax(z @ theta.reshape(num_inputs, vocab), axis=1))
        curv = y.sum(axis=1)[:, None, None] * (np.einsum("ra,ab->rab", p, np.eye(vocab))
                                              - p[:, :, None] * p[:, None, :])
        full = np.einsum("ri,rj,rab->iajb", z, z, curv).reshape(theta.size, theta.size)
        return full + l2 * np.eye(theta.size)

    return fun, hess


def _problem(seed: int, separable: bool) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    slots, values, vocab = 10, 3, 4
    active = _slot_rows(rng, 80, slots, values)
    if separable:  # deterministic targets of a planted linear rule: the data are separable
        planted = rng.normal(size=(slots * values, vocab)) * 3
        logits = np.where(active[:, :, None] >= 0, planted[np.maximum(active, 0)], 0).sum(1)
        targets = np.eye(vocab)[logits.argmax(axis=1)] * rng.integers(1, 4, size=(80, 1))
    else:
        targets = rng.integers(0, 3, size=(80, vocab)).astype(float)
        targets[targets.sum(axis=1) == 0, 0] = 1.0
    return active, targets, slots * values


@pytest.mark.parametrize(("seed", "separable", "l2"),
                         [(0, False, 1e-3), (1, False, 1e-6), (2, True, 1e-3), (3, True, 1e-4)])
def test_lbfgs_and_newton_reach_the_reference_optimum(seed: int, separable: bool,
                                                      l2: float) -> None:
    active, targets, num_inputs = _problem(seed, separable)
    newton = fit_logistic(active, targets, num_inputs, l2=l2, solver="newton")
    lbfgs = fit_logistic(active, targets, num_inputs, l2=l2, solver="lbfgs")
    fun, hess = _dense_objective(active, targets, num_inputs, l2)
    ref = minimize(fun, np.zeros(newton.theta.size), jac=True, hess=hess, method="trust-exact",
                   options={"gtol": 1e-10, "maxiter": 500}).x
    for _ in range(3):  # polish by plain Newton steps on the dense Hessian
        ref = ref - np.linalg.solve(hess(ref), fun(ref)[1])
    ref_grad = np.linalg.norm(fun(ref)[1])
    assert ref_grad <= 1e-13
    assert (newton.solver, lbfgs.solver) == ("newton", "lbfgs")
    assert newton.converged and lbfgs.converged and lbfgs.grad_norm <= 1e-11
    for fit in (newton, lbfgs):
        # strong convexity (modulus l2): |theta - theta*| <= |grad|_2 / l2, gradients
        # evaluated by the dense objective above
        tol = (np.linalg.norm(fun(fit.theta)[1]) + ref_grad) / l2
        assert np.abs(fit.theta - ref).max() <= tol
        assert abs(fit.log_loss - (fun(ref)[0] - 0.5 * l2 * ref @ ref)) <= 1e-9
    if separable:  # the weights are large but finite: the l2 term is what bounds them
        assert np.abs(ref).max() > 1.0


def test_wide_rows_take_lbfgs_and_match_scikit_learn() -> None:
    """A one-hot context of 30 slots x 4 values, 3000 rows, 6 outputs: ``auto`` takes L-BFGS
    (the explicit Hessian would cost R (K V)^2 = 9.7e7); scikit-learn's multinomial
    LogisticRegression (lbfgs, C = 1 / (l2 * total weight)) finds the same weights."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(7)
    slots, values, vocab, rows, l2 = 30, 4, 6, 3000, 1e-3
    active = _slot_rows(rng, rows, slots, values)
    planted = rng.normal(size=(slots * values, vocab))
    logits = np.where(active[:, :, None] >= 0, planted[np.maximum(active, 0)], 0).sum(1)
    labels = (logits + rng.gumbel(size=logits.shape)).argmax(axis=1)
    targets = np.eye(vocab)[labels]
    assert (active >= 0).sum(axis=1).mean() >= LBFGS_MIN_ACTIVE
    fit = fit_logistic(active, targets, slots * values, l2=l2)
    assert fit.solver == "lbfgs" and fit.converged
    z = np.zeros((rows, slots * values))
    for k in range(slots):
        on = active[:, k] >= 0
        z[np.flatnonzero(on), active[on, k]] = 1.0
    with threadpool_limits(limits=1):
        ref = sklearn.LogisticRegression(C=1.0 / (l2 * rows), fit_intercept=False, tol=1e-12,
                                         max_iter=10_000).fit(z, labels)
    ref_weights = ref.coef_.T  # (inputs, outputs), every output seen
    fun, _ = _dense_objective(active, targets, slots * values, l2)
    # strong convexity: both within |grad|_2 / l2 of the optimum (scikit-learn stops earlier)
    tol = (np.linalg.norm(fun(ref_weights.ravel())[1]) + np.linalg.norm(fun(fit.theta)[1])) / l2
    assert np.abs(fit.theta - ref_weights.ravel()).max() <= min(tol, 1e-5)
    ref_loss = -log_softmax(z @ ref_weights, axis=1)[np.arange(rows), labels].mean()
    assert abs(fit.log_loss - ref_loss) <= 1e-7


def test_solver_and_max_iter_are_checked() -> None:
    active, targets, num_inputs = _problem(0, False)
    with pytest.raises(ValueError, match="solver must be one of"):
        fit_logistic(active, targets, num_inputs, solver="bfgs")
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        fit_logistic(active, targets, num_inputs, max_iter=0)
    with pytest.raises(ValueError, match="solver must be one of"):
        LinearAR(solver="cg").fit(make_task("ntp_envs/ParityCoT-v0", num_bits=4,
                                            subset_size=2, cot="count"), None)


def test_linear_ar_threads_give_the_same_fit_and_obey_the_worker_limit() -> None:
    task = make_task("ntp_envs/ParityCoT-v0", num_bits=8, subset_size=4, cot="count")
    demos = collect_demonstrations(task, 300, 0)
    one = LinearAR(num_threads=1).fit(task, demos)
    two = LinearAR(num_threads=2).fit(task, demos)
    for w1, w2 in zip(one.weights, two.weights, strict=True):
        assert np.array_equal(w1, w2)  # independent positions: bit-identical
    old = LinearAR(solver="newton").fit(task, demos)
    assert abs(one.info["log_loss_per_token"] - old.info["log_loss_per_token"]) <= 1e-9
    with threadpool_limits(limits=1):  # what a sweep worker runs under
        assert position_threads(None, task.horizon) == 1
        assert position_threads(4, task.horizon) == 1
