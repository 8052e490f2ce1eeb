"""LogLossBC: the exact NTP solver, population fits, sample fits, save/load."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from agents import LogLossBC, load_policy
from agents.logistic import fit_logistic
from agents.logloss_bc import fit_linear_softmax, target_counts
from evaluation.methods.finite_state_dp import finite_state_divergences
from ntp_envs import make_task

ENV = "ntp_envs/ARLinear-v0"


def demos(task, n, seed):
    prompts, tokens = task.sample_demonstrations(n, np.random.default_rng(seed))
    return SimpleNamespace(prompts=prompts, tokens=tokens)


def test_tabular_fit_is_empirical_frequencies() -> None:
    # memory 0: one multi-hot input per context, so the MLE is the per-context frequency
    task = make_task(ENV, horizon=6, vocab_size=3, learner_memory=0, expert_memory=2,
                     num_contexts=3)
    data = demos(task, 500, 0)
    policy = LogLossBC(l2=0.0).fit(task, data)
    ctx = data.prompts[:, 0]
    for c in range(3):
        freq = np.bincount(data.tokens[ctx == c].ravel(), minlength=3) / data.tokens[ctx == c].size
        np.testing.assert_allclose(np.exp(policy.finite_state().logp[c, 0, 0]), freq, atol=1e-7)


def test_solver_reaches_stationary_point_with_projection() -> None:
    rng = np.random.default_rng(1)
    active = rng.integers(-1, 6, size=(300, 3))
    targets = rng.integers(0, 5, size=(300, 4)).astype(float)
    projection = rng.normal(size=(7, 6 * 4))
    fit = fit_logistic(active, targets, 6, projection, l2=1e-3)
    assert fit.converged and fit.grad_norm < 1e-7
    # any perturbation increases the objective
    def objective(theta):
        w = (projection.T @ theta).reshape(6, 4)
        pad = np.vstack([w, np.zeros((1, 4))])
        logits = pad[active].sum(axis=1)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -(targets * logp).sum() / targets.sum() + 0.5e-3 * theta @ theta
    base = objective(fit.theta)
    for _ in range(20):
        assert objective(fit.theta + 1e-3 * rng.normal(size=7)) > base


@pytest.mark.parametrize("feature_dim", [None, 5])
def test_population_fit_recovers_well_specified_expert(feature_dim) -> None:
    task = make_task(ENV, horizon=12, misspecification=0.0, feature_dim=feature_dim)
    policy = LogLossBC().fit(task, None)
    expert = task.expert.finite_state()
    lifted = policy.finite_state().lift(expert.memory, expert.num_positions)
    np.testing.assert_allclose(lifted.logp, expert.logp, atol=1e-8)


def test_population_fit_is_the_kl_projection() -> None:
    task = make_task(ENV, horizon=16, misspecification=0.8)
    lc = task.learner_class
    theta, info = fit_linear_softmax(lc, target_counts(task, None), l2=0.0)
    assert info["converged"]
    expert = task.expert.finite_state()
    log_mu = task.prompts.log_probs
    best_kl = finite_state_divergences(expert, lc.tables(theta), log_mu)[1]
    rng = np.random.default_rng(0)
    for _ in range(10):
        other = theta + 0.05 * rng.normal(size=theta.shape)
        assert finite_state_divergences(expert, lc.tables(other), log_mu)[1] > best_kl


def test_sample_fit_converges_to_population_fit() -> None:
    task = make_task(ENV, horizon=16, misspecification=0.5)
    population = LogLossBC().fit(task, None).finite_state()
    log_mu = task.prompts.log_probs
    gaps = []
    for n in (100, 10_000):
        fitted = [LogLossBC().fit(task, demos(task, n, s)).finite_state() for s in range(3)]
        gaps.append(np.mean([finite_state_divergences(population, f, log_mu)[0] for f in fitted]))
    assert gaps[1] < gaps[0] / 10


def test_well_specified_error_shrinks_with_n_and_does_not_grow_with_h() -> None:
    def mean_h2(horizon, n):
        task = make_task(ENV, horizon=horizon, misspecification=0.0)
        expert, log_mu = task.expert.finite_state(), task.prompts.log_probs
        values = [finite_state_divergences(
            expert, LogLossBC().fit(task, demos(task, n, s)).finite_state(), log_mu)[0]
            for s in range(6)]
        return float(np.mean(values))

    assert mean_h2(16, 20_000) < mean_h2(16, 200) / 20
    # horizon independence (Foster et al. 2024): 16x longer sequences, error not larger
    # than a factor 2 (sampling noise over 6 seeds is ~30%)
    assert mean_h2(256, 1000) < 2.0 * mean_h2(16, 1000)


def test_save_load_round_trip_and_tampering(tmp_path) -> None:
    task = make_task(ENV, horizon=8, misspecification=0.3)
    policy = LogLossBC().fit(task, demos(task, 300, 0))
    path = policy.save(tmp_path / "policy.npz")
    loaded = load_policy(path)
    np.testing.assert_array_equal(loaded.finite_state().logp, policy.finite_state().logp)
    assert loaded.task.params == task.params

    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, theta=np.zeros(3))
    with pytest.raises(ValueError, match="metadata"):
        load_policy(tampered)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a valid ntp-gym policy"):
        load_policy(tmp_path / "junk.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError):
        load_policy(truncated)


def test_bad_demonstrations_are_rejected() -> None:
    task = make_task(ENV, horizon=8)
    data = demos(task, 10, 0)
    with pytest.raises(ValueError, match="tokens"):
        LogLossBC().fit(task, SimpleNamespace(prompts=data.prompts, tokens=data.tokens[:, :5]))
    bad = data.tokens.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="tokens"):
        LogLossBC().fit(task, SimpleNamespace(prompts=data.prompts, tokens=bad))
    with pytest.raises(ValueError, match="prompt"):
        LogLossBC().fit(task, SimpleNamespace(prompts=data.prompts + 10, tokens=data.tokens))
