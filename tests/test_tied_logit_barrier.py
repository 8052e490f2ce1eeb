"""TiedLogitBarrier-v0: closed forms, the env API, population NTP and rho on the theta grid."""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
from brute_force import enumerated_divergences
from gymnasium.utils.env_checker import check_env
from scipy.special import expit, log_expit

from agents import LogLossBC, RhoEstimator, make_agent
from agents.rho_estimator import is_bernoulli_class
from evaluation import divergence
from ntp_envs import make_task
from ntp_envs.tied_logit_barrier import tied_closed_forms, tied_kl_projection

TIED = "ntp_envs/TiedLogitBarrier-v0"


def enumerate_tied(theta: float, horizon: int, rho: float, beta: float, event_logit: float,
                   expert_normal_logit: float) -> dict[str, float]:
    """``D_H^2`` and KL by summing over all ``2 * 2**H`` (context, sequence) pairs, with every
    probability written from the env's description (sigmoid logits), not from the package."""
    tokens = np.array(list(itertools.product((0, 1), repeat=horizon)))
    ones = tokens.sum(axis=1)
    tie = event_logit / beta
    hellinger2 = kl = 0.0
    for weight, expert_logit, model_logit in ((1 - rho, expert_normal_logit, theta),
                                              (rho, -event_logit, tie * theta)):
        log_p = ones * log_expit(expert_logit) + (horizon - ones) * log_expit(-expert_logit)
        log_q = ones * log_expit(model_logit) + (horizon - ones) * log_expit(-model_logit)
        hellinger2 += weight * ((np.exp(0.5 * log_p) - np.exp(0.5 * log_q)) ** 2).sum()
        kl += weight * (np.exp(log_p) * (log_p - log_q)).sum()
    return {"hellinger2": hellinger2, "kl": kl}


CASES = [  # theta, rho, beta, event_logit, normal_logit, misspecification
    (0.0, 1e-3, 0.3, 20.0, 0.0, 1.0),
    (-0.3, 1e-3, 0.3, 20.0, 0.0, 1.0),
    (-0.02, 0.05, 0.1, 20.0, 0.0, 1.0),
    (0.4, 0.2, 1.0, 3.0, 0.3, 1.0),
    (-0.1, 0.01, 0.5, 5.0, 0.2, 0.4),
    (1e-7, 0.3, 0.01, 20.0, 0.0, 1.0),
]


@pytest.mark.parametrize("horizon", [1, 3, 8])
@pytest.mark.parametrize("case", CASES)
def test_closed_forms_match_enumeration(horizon: int, case: tuple) -> None:
    theta, rho, beta, event_logit, normal_logit, eps = case
    forms = tied_closed_forms(theta, horizon, rho, beta, event_logit, eps, normal_logit)
    truth = enumerate_tied(theta, horizon, rho, beta, event_logit,
                           eps * normal_logit - (1 - eps) * beta)
    for key in ("hellinger2", "kl"):
        assert abs(float(forms[key]) - truth[key]) <= 1e-12 + 1e-9 * truth[key], key
    assert abs(math.exp(float(forms["log_bc"])) - (1 - truth["hellinger2"] / 2)) < 1e-12
    # the task's expert and member give the same numbers (wiring of contexts and projection)
    task = make_task(TIED, horizon=horizon, event_prob=rho, beta=beta, event_logit=event_logit,
                     normal_logit=normal_logit, misspecification=eps)
    member = task.learner_class.model(np.array([theta]))
    brute = enumerated_divergences(task.expert, member, task.prompts)
    for key in ("hellinger2", "kl"):
        assert abs(brute[key] - truth[key]) <= 1e-12 + 1e-9 * truth[key], key


@pytest.mark.parametrize("horizon", [64, 1000, 4096])
def test_closed_forms_match_exact_divergences(horizon: int) -> None:
    task = make_task(TIED, horizon=horizon, event_prob=1e-4, beta=0.01)
    for theta in (0.0, -0.01, -0.003, 0.2, -2.0, 1e-9):
        forms = tied_closed_forms(theta, horizon, 1e-4, 0.01)
        member = task.learner_class.model(np.array([theta]))
        # stats: the member's count law keeps only log P(1) (CountLaw.product), so past an
        # event logit of ~37 its log P(0) rounds to -inf (KL inf); dp reads both table columns
        for method in ("dp", "stats") if abs(theta) * 2000 < 30 else ("dp",):
            result = divergence(task.expert, member, task.prompts, method=method)
            for key in ("hellinger2", "kl"):
                truth = float(forms[key])
                rel = 1e-9 if method == "dp" else 1e-7  # stats: log-space sums over H + 1
                assert abs(getattr(result, key) - truth) <= 1e-13 + rel * truth, \
                    (theta, method, key, getattr(result, key), truth)


def test_tied_features_and_expert() -> None:
    task = make_task(TIED, horizon=5, event_prob=0.01, beta=0.25, event_logit=20.0)
    tie = 20.0 / 0.25
    assert task.extras["tie"] == tie and task.prompt_vocab_size == 2
    np.testing.assert_allclose(np.exp(task.prompts.log_probs), [0.99, 0.01], rtol=1e-15)
    for theta in (0.3, -0.25, -1.7):
        probs = np.exp(task.learner_class.tables(np.array([theta])).logp[:, 0, 0, 1])
        np.testing.assert_allclose(probs, expit([theta, tie * theta]), rtol=1e-12, atol=1e-300)
    expert = np.exp(task.expert.finite_state().logp[:, 0, 0, 1])
    np.testing.assert_allclose(expert, [0.5, expit(-20.0)], rtol=1e-14)
    assert task.expert.count_law() is not None  # exact evaluation by counts of ones
    assert is_bernoulli_class(task.learner_class)


def test_population_logloss_is_the_kl_argmin() -> None:
    for kwargs in ({}, {"event_prob": 0.02, "beta": 0.05, "horizon": 100},
                   {"event_prob": 1e-4, "beta": 0.01, "normal_logit": 0.5, "horizon": 20}):
        task = make_task(TIED, **kwargs)
        p = task.params
        fit = LogLossBC().fit(task, None)
        # independent: a fine scan of the closed-form KL, then a finer one around its minimum
        grid = np.linspace(-1.0, 1.0, 200_001)
        for _ in range(2):
            kl = tied_closed_forms(grid, p["horizon"], p["event_prob"], p["beta"],
                                   p["event_logit"], p["misspecification"], p["normal_logit"])
            best = grid[int(np.argmin(kl["kl"]))]
            step = grid[1] - grid[0]
            grid = np.linspace(best - step, best + step, 20_001)
        assert abs(fit.theta[0] - best) < 1e-7, (kwargs, fit.theta, best)
        assert abs(task.extras["member_thetas"]["kl_projection"] - best) < 1e-7
        assert abs(tied_kl_projection(p["event_prob"], p["beta"], p["event_logit"],
                                      p["misspecification"], p["normal_logit"]) - best) < 1e-7


def test_ntp_amplifies_with_horizon_and_not_when_well_specified() -> None:
    c_apx = []
    for horizon in (16, 64, 256):
        task = make_task(TIED, horizon=horizon, event_prob=1e-3, beta=0.3)
        fit = LogLossBC().fit(task, None)
        grid = np.linspace(-0.5, 0.5, 400_001)
        best = tied_closed_forms(grid, horizon, 1e-3, 0.3)["hellinger2"].min()
        c_apx.append(divergence(task.expert, fit, task.prompts).hellinger2 / best)
    assert 1.05 < c_apx[0] < c_apx[1] < c_apx[2] and c_apx[2] > 8  # 1.10, 2.85, 8.48
    task = make_task(TIED, horizon=256, misspecification=0.0)
    np.testing.assert_array_equal(task.well_specified_theta, [-1.0])
    member = task.learner_class.model(task.well_specified_theta)
    assert divergence(task.expert, member, task.prompts).hellinger2 < 1e-14
    fit = LogLossBC().fit(task, None)
    assert abs(fit.theta[0] + 1.0) < 1e-8
    assert divergence(task.expert, fit, task.prompts).hellinger2 < 1e-12


def test_rho_runs_on_the_theta_grid() -> None:
    task = make_task(TIED, horizon=64, event_prob=6.3e-5, beta=0.1)
    fit = RhoEstimator().fit(task, None)
    assert fit.info["tournament"] == "exact"
    assert fit.info["candidates"] == 3 * 201  # the coarse grid and two refinements
    grid = np.linspace(-12.0, 12.0, 201)
    assert np.isclose(fit.theta[0], grid, atol=1.0).any() and fit.theta.shape == (1,)
    fine = np.linspace(-0.5, 0.5, 400_001)
    best = tied_closed_forms(fine, 64, 6.3e-5, 0.1)["hellinger2"].min()
    rho_c = divergence(task.expert, fit, task.prompts).hellinger2 / best
    ntp = LogLossBC().fit(task, None)
    ntp_c = divergence(task.expert, ntp, task.prompts).hellinger2 / best
    assert rho_c < 2.5 < ntp_c  # 2.18 vs 2.99 on this instance
    chunk = make_agent("chunk-rho:4").fit(task, None)
    assert chunk.info["tournament"] == "exact" and chunk.theta.shape == (1,)


def test_gymnasium_api_and_rewards() -> None:
    env = gym.make(TIED, horizon=4, event_prob=0.2)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    context = int(obs[0])
    expert_logit = 0.0 if context == 0 else -20.0
    for _ in range(4):
        obs, reward, terminated, truncated, _ = env.step(1)
        assert abs(reward - float(log_expit(expert_logit))) < 1e-12 and not truncated
    assert terminated
    assert env.observation_space.nvec.tolist() == [2, 5, 3, 3, 3, 3]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"event_prob": 0.0}, "event_prob"),
        ({"event_prob": 1.0}, "event_prob"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"event_logit": 0.0}, "event_logit"),
        ({"event_logit": float("nan")}, "event_logit"),
        ({"normal_logit": 51.0}, "normal_logit"),
        ({"misspecification": 1.5}, "misspecification"),
        ({"tie": 3.0}, "tie"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name) as err:
        gym.make(TIED, **kwargs)
    assert "\n" not in str(err.value)


# ------------------------------------------------------- chunk-hellinger:K on the tied class


def chunk_objective(theta: float, horizon: int, k: int, rho: float, beta: float,
                    normal_logit: float) -> float:
    """``sum over chunks E_x D_H^2(chunk)`` of the tied member ``theta``, from sigmoids: every
    chunk law is an i.i.d. Bernoulli product, so a chunk of ``L`` tokens has ``BC = bc^L``."""
    lengths = [min(k, horizon - s) for s in range(0, horizon, k)]
    total = 0.0
    for weight, expert_logit, model_logit in ((1 - rho, normal_logit, theta),
                                              (rho, -20.0, 20.0 / beta * theta)):
        q, p = expit(expert_logit), expit(model_logit)
        bc = math.sqrt(q * p) + math.sqrt((1 - q) * (1 - p))
        total += weight * sum(2.0 * (1.0 - bc**length) for length in lengths)
    return total


@pytest.mark.parametrize(("horizon", "k"), [(7, 3), (12, 4), (5, 5), (9, 1)])
def test_chunk_hellinger_objective_matches_products(horizon: int, k: int) -> None:
    from agents.chunk_hellinger import ChunkHellingerObjective, _groups

    task = make_task(TIED, horizon=horizon, event_prob=0.05, beta=0.5, normal_logit=0.2)
    thetas = np.array([[0.0], [-0.5], [0.2], [-0.03], [1.5]])
    for counts in (False, True):
        groups = _groups(task, k, None, counts)
        assert all(g.by_count == counts for g in groups)
        values = ChunkHellingerObjective(task.learner_class, groups).values(thetas)
        truth = [chunk_objective(t, horizon, k, 0.05, 0.5, 0.2) for t in thetas[:, 0]]
        np.testing.assert_allclose(values, truth, rtol=1e-12, atol=1e-15)


def scan_best(horizon: int, **kwargs: float) -> tuple[float, float]:
    """``(argmin, min)`` of the closed-form ``D_H^2`` by a fine scan, then a finer one."""
    grid = np.linspace(-0.5, 0.5, 100_001)
    for _ in range(2):
        values = tied_closed_forms(grid, horizon, **kwargs)["hellinger2"]
        i = int(np.argmin(values))
        grid = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 2_001)
    return float(grid[1000]), float(values[i])


def test_chunk_hellinger_fits_the_best_member_at_horizon_k() -> None:
    kwargs = {"event_prob": 0.0025, "beta": 0.1, "normal_logit": 0.1}
    task = make_task(TIED, horizon=64, **kwargs)
    best = scan_best(64, **kwargs)[1]
    c_apx = {}
    for k in (1, 4, 8, 64 // 4):
        fit = make_agent(f"chunk-hellinger:{k}").fit(task, None)
        assert abs(fit.theta[0] - scan_best(k, **kwargs)[0]) < 1e-6, k  # (H / K) D^2 at K
        assert fit.info["statistics"] == "counts of ones"
        c_apx[k] = divergence(task.expert, fit, task.prompts).hellinger2 / best
    assert c_apx[1] > 10 and c_apx[4] > 10 and abs(c_apx[8] - 1) < 1e-6  # 11.5, 11.4, 1
    full = make_agent("chunk-hellinger:16").fit(make_task(TIED, horizon=16, **kwargs), None)
    assert abs(full.theta[0] - scan_best(16, **kwargs)[0]) < 1e-6  # K = H: the best member


def test_chunk_hellinger_from_demonstrations_and_on_a_larger_class() -> None:
    from experts.demonstrations import collect_demonstrations

    task = make_task(TIED, horizon=12, event_prob=0.3, beta=0.5, normal_logit=0.4)
    population = make_agent("chunk-hellinger:3").fit(task, None)
    sampled = make_agent("chunk-hellinger:3").fit(task, collect_demonstrations(task, 20_000, 0))
    assert sampled.info["statistics"] == "outcomes"  # empirical chunk laws: not exchangeable
    assert abs(sampled.theta[0] - population.theta[0]) < 0.05
    ar = make_task("ntp_envs/ARLinear-v0", horizon=6, num_contexts=2)
    from agents.chunk_hellinger import ChunkHellinger, ChunkHellingerObjective, _groups

    fit = ChunkHellinger(chunk_size=2, num_random_starts=2).fit(ar, None)

    objective = ChunkHellingerObjective(ar.learner_class, _groups(ar, 2, None, True))
    ntp = LogLossBC().fit(ar, None)
    assert fit.theta.shape == (ar.learner_class.dim,)
    assert objective.values(fit.theta[None])[0] <= objective.values(ntp.theta[None])[0]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("chunk-hellinger:0", {}, "chunk_size"),
        ("chunk-hellinger:17", {"horizon": 32}, "chunk_size"),
        ("chunk-hellinger:9", {"horizon": 8}, "chunk_size"),
    ],
)
def test_chunk_hellinger_bad_arguments(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        make_agent(name).fit(make_task(TIED, **kwargs), None)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="linear-softmax"):
        make_agent("chunk-hellinger:1").fit(make_task("ntp_envs/FiniteClassBarrier-v0"), None)
