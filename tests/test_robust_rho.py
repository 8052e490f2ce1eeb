"""RobustBC and RhoEstimator: mechanics, misuse, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from agents import RhoEstimator, RobustBC, load_policy
from agents.rho_estimator import rho_select, rho_tournament
from agents.smoothing import smoothed
from evaluation import divergence
from experts import collect_demonstrations
from ntp_envs import make_task


def test_tournament_matches_a_direct_double_loop() -> None:
    rng = np.random.default_rng(0)
    loglik = rng.normal(size=(7, 40)) * 3
    weights = rng.integers(1, 4, size=40).astype(float)
    direct = np.array([max(sum(w * np.tanh((loglik[j, i] - loglik[k, i]) / 4)
                               for i, w in enumerate(weights)) for j in range(7))
                       for k in range(7)])
    winner, scores = rho_tournament(loglik, weights)
    np.testing.assert_allclose(scores, direct, rtol=1e-12, atol=1e-12)
    assert winner == int(np.argmin(direct))
    # psi(sqrt(r)) = (sqrt(r) - 1) / (sqrt(r) + 1) = tanh(log(r) / 4)
    r = np.exp(1.3)
    assert np.tanh(1.3 / 4) == pytest.approx((np.sqrt(r) - 1) / (np.sqrt(r) + 1))


def test_tournament_picks_the_generating_law_among_products() -> None:
    task = make_task("ntp_envs/MixtureProduct-v0", horizon=32, weight=0.0)
    demos = collect_demonstrations(task, 2000, 0)
    policy = RhoEstimator().fit(task, demos, np.random.default_rng(0))
    q = 1 / (1 + np.exp(-policy.theta[1]))
    assert q == pytest.approx(0.2, abs=0.01)


def test_smoothing_mixes_with_uniform_and_keeps_exact_structure() -> None:
    task = make_task("ntp_envs/FiniteClassBarrier-v0", horizon=8)
    member = task.learner_class.members[0]
    smooth = smoothed(member, 0.3, task.prompts)
    assert smooth.finite_state() is not None  # still exactly evaluable
    np.testing.assert_allclose(np.exp(smooth.finite_state().logp),
                               0.7 * np.exp(member.finite_state().logp) + 0.1, atol=1e-15)
    assert divergence(task.expert, smooth, task.prompts).method in ("dp", "enumerate")


@pytest.mark.parametrize("env", ["ntp_envs/ARLinear-v0", "ntp_envs/FiniteClassBarrier-v0",
                                 "ntp_envs/MixtureProduct-v0"])
def test_robust_and_rho_save_and_load(tmp_path, env) -> None:
    task = make_task(env, horizon=8)
    demos = collect_demonstrations(task, 300, 0)
    for agent in (RobustBC(), RhoEstimator(grid_size=21)):
        policy = agent.fit(task, demos, np.random.default_rng(0))
        loaded = load_policy(policy.save(tmp_path / f"{agent.name}.npz"))
        np.testing.assert_array_equal(loaded.token_logprobs(demos.prompts, demos.tokens),
                                      policy.token_logprobs(demos.prompts, demos.tokens))
        assert 0.0 <= loaded.info.get("gamma", 0.0) < 1.0


def test_robust_picks_gamma_from_its_grid_on_held_out_sequences() -> None:
    task = make_task("ntp_envs/FiniteClassBarrier-v0", horizon=64)
    policy = RobustBC().fit(task, collect_demonstrations(task, 2000, 1),
                            np.random.default_rng(1))
    assert policy.info["gamma"] in policy.info["gamma_grid"]
    assert policy.info["gamma_grid"] == pytest.approx([s / 64 for s in
                                                      (4, 1, 1 / 4, 1 / 16, 1 / 64, 1 / 256)])


def test_misuse() -> None:
    task = make_task("ntp_envs/MixtureProduct-v0", horizon=16)
    demos = collect_demonstrations(task, 50, 0)
    with pytest.raises(ValueError, match="gamma"):
        RobustBC(gamma_scales=(0.0,)).fit(task, demos)
    with pytest.raises(ValueError, match="gamma"):
        RobustBC(gamma_scales=(32.0,)).fit(task, demos)  # 32 / 16 = 2 is outside (0, 1)
    with pytest.raises(ValueError, match="gamma_scales"):
        RobustBC(gamma_scales=()).fit(task, demos)
    with pytest.raises(ValueError, match="candidate set"):
        rho_select([], demos.prompts, demos.tokens)
    with pytest.raises(ValueError, match="loglik"):
        rho_tournament(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="gamma"):
        smoothed(task.expert, 1.0, task.prompts)
