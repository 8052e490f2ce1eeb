"""The oracle's scalable path: adjoint gradient, batched L-BFGS, and agreement with autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

import evaluation.oracle.bhattacharyya_grad as adjoint
from evaluation.methods.finite_state_dp import finite_state_divergences, log_bhattacharyya
from evaluation.oracle import best_in_class
from evaluation.oracle.batched_minimize import minimize_batch
from evaluation.oracle.bhattacharyya_grad import log_bhattacharyya_value_grad
from ntp_envs import make_task

ENV = "ntp_envs/ARLinear-v0"


def random_case(seed, batch, contexts, vocab, mem_p, mem_q, t_p, t_q, scale=1.5):
    rng = np.random.default_rng(seed)
    lp = log_softmax(scale * rng.normal(size=(batch, contexts, t_p, vocab**mem_p, vocab)), -1)
    lq = log_softmax(scale * rng.normal(size=(contexts, t_q, vocab**mem_q, vocab)), -1)
    mu = np.log(rng.dirichlet(np.ones(contexts)))
    return torch.tensor(lp), torch.tensor(lq), torch.tensor(mu)


def autograd_reference(lp, lq, mu, horizon):
    """Value and gradient by torch autograd through the log-space recursion (lifted tables)."""
    vocab = lp.shape[-1]
    memory = max(round(np.log(lp.shape[-2]) / np.log(vocab)),
                 round(np.log(lq.shape[-2]) / np.log(vocab)))
    states = torch.arange(vocab**memory)
    x = lp.clone().requires_grad_(True)
    lifted_p = x[:, :, :, states % lp.shape[-2]]
    lifted_q = lq[:, :, states % lq.shape[-2]]
    value = log_bhattacharyya(lifted_p, lifted_q.expand(lp.shape[0], *lifted_q.shape), mu,
                              horizon, tail="loop")
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


CASES = [  # (batch, contexts, vocab, mem_p, mem_q, t_p, t_q, horizon)
    (3, 2, 2, 0, 1, 1, 2, 16),  # factored, learner memoryless
    (3, 2, 3, 1, 2, 2, 3, 10),  # factored
    (2, 3, 2, 2, 2, 3, 3, 12),  # learner and expert share the window: the general step
    (2, 1, 3, 0, 0, 1, 1, 7),  # both memoryless
    (2, 2, 2, 1, 3, 2, 4, 2),  # horizon shorter than the tables
    (2, 2, 4, 2, 3, 3, 4, 90),  # the ARLinear shape
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("store_bytes", [adjoint.STORE_BYTES, 600])
def test_adjoint_matches_autograd(case, store_bytes, monkeypatch) -> None:
    """Value and gradient equal torch autograd's, with every forward message kept or with
    checkpoints and recomputed chunks (a tiny memory budget)."""
    monkeypatch.setattr(adjoint, "STORE_BYTES", store_bytes)
    *shape, horizon = case
    lp, lq, mu = random_case(sum(case), *shape)
    value, grad = log_bhattacharyya_value_grad(lp, lq, mu, horizon)
    ref_value, ref_grad = autograd_reference(lp, lq, mu, horizon)
    assert torch.allclose(value, ref_value, rtol=1e-12, atol=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_adjoint_gradient_matches_finite_differences() -> None:
    lp, lq, mu = random_case(7, 1, 2, 3, 1, 2, 2, 3)
    horizon = 40
    _, grad = log_bhattacharyya_value_grad(lp, lq, mu, horizon)
    rng = np.random.default_rng(0)
    for _ in range(5):
        direction = torch.tensor(rng.normal(size=lp.shape))
        eps = 1e-5
        plus = log_bhattacharyya_value_grad(lp + eps * direction, lq, mu, horizon)[0]
        minus = log_bhattacharyya_value_grad(lp - eps * direction, lq, mu, horizon)[0]
        numeric = float((plus - minus)[0]) / (2 * eps)
        assert float((grad * direction).sum()) == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_adjoint_rejects_bad_tables() -> None:
    lp, lq, mu = random_case(0, 1, 2, 2, 2, 1, 1, 1)
    with pytest.raises(ValueError, match="learner's <= the expert's"):
        log_bhattacharyya_value_grad(lp, lq, mu, 4)
    with pytest.raises(ValueError, match="horizon"):
        log_bhattacharyya_value_grad(lq[None], lq, mu, 0)


def test_batched_lbfgs_finds_the_planted_minimum_from_every_start() -> None:
    """Rosenbrock (minimum at (1, 1)) and an ill-conditioned quadratic with a planted centre;
    rows stop at different iterations, and each ends at the minimum."""

    def rosenbrock(x):
        f = (1 - x[:, 0]) ** 2 + 100 * (x[:, 1] - x[:, 0] ** 2) ** 2
        g0 = -2 * (1 - x[:, 0]) - 400 * x[:, 0] * (x[:, 1] - x[:, 0] ** 2)
        g1 = 200 * (x[:, 1] - x[:, 0] ** 2)
        return f, torch.stack([g0, g1], dim=1)

    x0 = torch.tensor([[-1.2, 1.0], [3.0, -2.0], [1.0, 1.0 + 1e-3]], dtype=torch.float64)
    result = minimize_batch(rosenbrock, x0, gtol=1e-10)
    assert torch.allclose(result.x, torch.ones(3, 2, dtype=torch.float64), atol=1e-7)
    assert len(set(result.iterations.tolist())) > 1 and (result.iterations > 0).all()

    rng = np.random.default_rng(1)
    m = rng.normal(size=(6, 6))
    hess = torch.tensor(m @ m.T + np.diag(np.geomspace(1e-3, 10, 6)))
    centre = torch.tensor(rng.normal(size=6))

    def quadratic(x):
        d = x - centre
        return 0.5 * ((d @ hess) * d).sum(dim=1), d @ hess

    result = minimize_batch(quadratic, torch.tensor(rng.normal(size=(4, 6))), gtol=1e-11)
    assert torch.allclose(result.x, centre.expand(4, 6), atol=1e-7)


@pytest.mark.parametrize(("vocab", "horizon", "knob", "seed"),
                         [(2, 24, 0.6, 0), (3, 12, 0.8, 1), (2, 40, 1.0, 2)])
def test_adjoint_search_agrees_with_autograd_search(vocab, horizon, knob, seed) -> None:
    """The new path and today's path reach the same optimum: value and tables."""
    task = make_task(ENV, horizon=horizon, vocab_size=vocab, learner_memory=1,
                     expert_memory=2, misspecification=knob, task_seed=seed)
    new = best_in_class(task, num_random_starts=6, seed=seed)
    old = best_in_class(task, num_random_starts=6, seed=seed, gradient="autograd")
    assert new.hellinger2 == pytest.approx(old.hellinger2, rel=1e-9, abs=1e-12)
    lc = task.learner_class
    new_p, old_p = np.exp(lc.tables(new.theta).logp), np.exp(lc.tables(old.theta).logp)
    assert np.abs(new_p - old_p).max() < 1e-5
    assert new.agreement == old.agreement


def test_large_problem_takes_the_bounded_memory_path(monkeypatch) -> None:
    """H = 512 with a memory budget forcing checkpoints and recomputed chunks: the search
    returns a parameter whose exact divergence (log-space DP) is what it reports, and which
    beats the KL projection it started from."""
    monkeypatch.setattr(adjoint, "STORE_BYTES", 2**15)
    task = make_task(ENV, horizon=512, vocab_size=4, learner_memory=1, expert_memory=3,
                     num_contexts=2, misspecification=0.5)
    result = best_in_class(task, num_random_starts=1, adam_steps=5, refine=1)
    expert, log_mu = task.expert.finite_state(), task.prompts.log_probs
    attained = finite_state_divergences(expert, task.learner_class.tables(result.theta),
                                        log_mu)[0]
    assert attained == pytest.approx(result.hellinger2, rel=1e-9)
    from agents import LogLossBC
    kl_projection = LogLossBC().fit(task, None)
    h2_kl = finite_state_divergences(expert, kl_projection.finite_state(), log_mu)[0]
    assert result.hellinger2 < h2_kl - 1e-6


def test_polish_preconditioner_whitens_the_autograd_hessian() -> None:
    """At the search's optimum (H below the preconditioner's horizon, so the same objective),
    ``M^T H M`` for the Hessian ``H`` by double autograd has eigenvalues 1 (whitened) or 0
    (the softmax's flat directions)."""
    from evaluation.oracle.search import _LinearClassObjective, _preconditioner

    task = make_task(ENV, horizon=10, vocab_size=3, learner_memory=1, expert_memory=2,
                     misspecification=0.7, task_seed=4)
    centre = torch.tensor(best_in_class(task, num_random_starts=4, seed=0).theta)
    transform, _ = _preconditioner(_LinearClassObjective(task), centre)
    reference = _LinearClassObjective(task, gradient="autograd")
    hess = torch.autograd.functional.hessian(lambda t: reference(t[None])[0], centre)
    eig = torch.linalg.eigvalsh(transform.T @ hess @ transform)
    assert torch.minimum((eig - 1).abs(), eig.abs()).max() < 1e-3
    assert (eig - 1).abs().lt(1e-3).sum() >= task.learner_class.dim // 2
