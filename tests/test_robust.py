"""``robust`` (RobustBC): NTP over the smoothed class with gamma chosen by token log loss.

Population fits select on the exact expected log loss, sample fits on the held-out token
log loss; every expected value here is recomputed from the env's definition (enumeration,
explicit per-token probabilities), not from the agent's own formulas. The sequence-level
hybrid ``robust-rho`` is tested in tests/test_robust_rho.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents import RobustBC, RobustRho, agent_names, make_agent
from agents.robust_bc import DEFAULT_GAMMAS, fit_smoothed
from agents.smoothing import smooth_logprobs
from evaluation import divergence
from evaluation.methods.enumeration import sequences_at
from evaluation.oracle import best_in_class
from experts import collect_demonstrations
from ntp_envs import make_task

BARRIER = "ntp_envs/FiniteClassBarrier-v0"


def barrier_token_probs(member: str, gamma: float, tokens: np.ndarray, event_prob: float,
                        bias: float, min_prob: float) -> np.ndarray:
    """``(B, H)`` probabilities of each token under a FiniteClassBarrier member (or the
    expert, ``member="expert"``) smoothed with ``gamma``, written out from the env's
    definition: first token ``((1 - rho) / 2, (1 - rho) / 2, rho)``; after a coin token the
    coin row, after an event the event row."""
    rho, delta = event_prob, min_prob
    coin = {"expert": (0.5, 0.5, 0.0), "rare_event": (0.5, 0.5, 0.0),
            "biased": (0.5 - bias, 0.5 + bias, 0.0)}[member]
    event = {"expert": (0.0, 0.0, 1.0), "rare_event": ((1 - delta) / 2, (1 - delta) / 2, delta),
             "biased": (0.0, 0.0, 1.0)}[member]
    first = np.array([(1 - rho) / 2, (1 - rho) / 2, rho])
    rows = np.array([coin, coin, event])  # indexed by the previous token
    probs = np.empty(tokens.shape)
    probs[:, 0] = first[tokens[:, 0]]
    probs[:, 1:] = rows[tokens[:, :-1], tokens[:, 1:]]
    return (1 - gamma) * probs + gamma / 3


@pytest.mark.parametrize(("event_prob", "bias", "winner"), [
    (1e-2, 0.2, "rare_event"),  # the rare member, smoothed with a gamma inside the grid
    (1e-3, 0.05, "biased"),  # the biased member: smoothing only costs, gamma at the floor
])
def test_population_robust_is_the_joint_argmin_of_the_enumerated_kl(event_prob, bias,
                                                                    winner) -> None:
    """All 3^5 sequences enumerated: ``KL(P* || smoothed member)`` for every (member, gamma)
    of the grid; the population fit is their joint argmin and reports the same losses."""
    h, min_prob = 5, 1e-30
    task = make_task(BARRIER, horizon=h, event_prob=event_prob, bias=bias, min_prob=min_prob)
    every = np.array(list(itertools.product(range(3), repeat=h)))
    p_star = barrier_token_probs("expert", 0.0, every, event_prob, bias, min_prob).prod(axis=1)
    seen = p_star > 0
    assert p_star.sum() == pytest.approx(1.0, abs=1e-12)
    members = ("rare_event", "biased")
    kl = np.array([[np.sum(p_star[seen] * (np.log(p_star[seen]) - np.log(
        barrier_token_probs(m, g, every[seen], event_prob, bias, min_prob)).sum(axis=1)))
        for m in members] for g in DEFAULT_GAMMAS])
    g_best, m_best = np.unravel_index(np.argmin(kl), kl.shape)
    assert members[m_best] == winner
    policy = make_agent("robust").fit(task, None)
    assert policy.info["selection"] == "exact expected log loss"
    assert (policy.gamma, policy.info["member"]) == (DEFAULT_GAMMAS[g_best], members[m_best])
    np.testing.assert_allclose(policy.info["selection_losses"], kl.min(axis=1) / h, rtol=1e-9)
    np.testing.assert_allclose(policy.info["log_losses"], kl[g_best], rtol=1e-9)
    if winner == "rare_event":
        assert 0 < g_best < len(DEFAULT_GAMMAS) - 1  # an interior gamma: the grid decided


def test_sample_fit_picks_the_gamma_of_least_held_out_token_log_loss() -> None:
    """The split redone (the held-out fifth of a permutation), then by hand for every gamma:
    the member of least log loss on the fitting part, its mean held-out token log loss, the
    argmin; the policy is that gamma's member refitted on all the data."""
    h, rho, beta, mp, n = 6, 0.05, 0.4, 1e-30, 200
    task = make_task(BARRIER, horizon=h, event_prob=rho, bias=beta, min_prob=mp)
    demos = collect_demonstrations(task, n, 0)
    tokens = np.asarray(demos.tokens)
    policy = RobustBC().fit(task, demos, np.random.default_rng(3))
    order = np.random.default_rng(3).permutation(n)
    held, fitting = tokens[order[:40]], tokens[order[40:]]
    assert policy.info["selection"] == "held-out token log loss, n=40"
    members = ("rare_event", "biased")

    def member_of_least_loss(rows: np.ndarray, gamma: float) -> str:
        losses = [-np.log(barrier_token_probs(m, gamma, rows, rho, beta, mp)).sum()
                  for m in members]
        return members[int(np.argmin(losses))]

    held_losses = [-np.log(barrier_token_probs(member_of_least_loss(fitting, g), g, held, rho,
                                               beta, mp)).mean() for g in DEFAULT_GAMMAS]
    best = int(np.argmin(held_losses))
    assert 0 < best < len(DEFAULT_GAMMAS) - 1  # planted: neither end of the grid
    assert policy.gamma == DEFAULT_GAMMAS[best]
    np.testing.assert_allclose(policy.info["selection_losses"], held_losses, rtol=1e-10)
    assert policy.info["member"] == member_of_least_loss(tokens, DEFAULT_GAMMAS[best])


def test_linear_class_population_selects_on_the_enumerated_expected_log_loss() -> None:
    """ARLinear, every sequence enumerated: each gamma's population fit scored by its exact
    expected token log loss ``E_P*[-sum_h log pi(a_h | ...)] / H``; the reported losses
    differ from those by one constant (the expert's entropy rate) and share the argmin."""
    task = make_task("ntp_envs/ARLinear-v0", horizon=4, num_contexts=2)
    grid = (0.25, 0.1, 0.03, 0.01, 1e-3, 1e-6, 1e-12)
    policy = RobustBC(gamma_grid=grid).fit(task, None)
    every = sequences_at(np.arange(2**4), 2, 4)
    expected = []
    for gamma in grid:
        fit = fit_smoothed(task, None, gamma)
        total = 0.0
        for c, prompt in enumerate(task.prompts.contexts):
            prompts = np.repeat(prompt[None, :], len(every), axis=0)
            weight = np.exp(task.prompts.log_probs[c] + task.expert.sequence_logprob(prompts,
                                                                                    every))
            total -= weight @ fit.token_logprobs(prompts, every).sum(axis=1)
        expected.append(total / 4)
    shift = np.array(policy.info["selection_losses"]) - expected
    np.testing.assert_allclose(shift, shift[0], rtol=0, atol=1e-9)
    assert policy.gamma == grid[int(np.argmin(expected))]


def test_grid_reaches_below_rare_events() -> None:
    """H = 64, event_prob 1e-9: a grid floored at 1/(4096 H) (robust-rho's) smooths the rare
    member with gamma ~ 4e-6 and pays ~gamma H / (6 event_prob) (C_apx > 100 H); the
    default grid goes down to 1e-15 and stays within 10 H."""
    task = make_task(BARRIER, horizon=64, event_prob=1e-9, bias=1e-4)
    best = best_in_class(task).hellinger2

    def c_apx(agent: RobustBC) -> float:
        return divergence(task.expert, agent.fit(task, None), task.prompts).hellinger2 / best

    assert c_apx(RobustBC()) <= 10 * 64
    floored = RobustBC(gamma_grid=tuple(4.0**j / 64 for j in range(0, -7, -1)))
    assert c_apx(floored) > 100 * 64


def test_bounded_in_delta_where_ntp_is_not() -> None:
    """H = 64, event_prob 1e-5, bias 0.03: as delta = min_prob goes from 1e-30 to 1e-300,
    NTP switches to the biased member (C_apx x >= 8) while robust's D_H^2 moves <= 10%."""
    def fit(agent: str, min_prob: float) -> tuple[float, float]:
        task = make_task(BARRIER, horizon=64, event_prob=1e-5, bias=0.03, min_prob=min_prob)
        d2 = divergence(task.expert, make_agent(agent).fit(task, None), task.prompts).hellinger2
        return d2, d2 / best_in_class(task).hellinger2

    robust = [fit("robust", m)[0] for m in (1e-30, 1e-300)]
    assert abs(robust[1] / robust[0] - 1) <= 0.1
    ntp = [fit("logloss", m)[1] for m in (1e-30, 1e-300)]
    assert ntp[1] >= 8 * ntp[0]


def test_log_space_at_gamma_1e_15_and_delta_1e_300() -> None:
    delta, gamma = 1e-300, 1e-15
    logp = np.log([(1 - delta) / 2, (1 - delta) / 2, delta])
    smooth = smooth_logprobs(logp, gamma)
    want = np.log((1 - gamma) * np.array([0.5, 0.5, delta]) + gamma / 3)
    np.testing.assert_allclose(smooth, want, rtol=1e-12)
    task = make_task(BARRIER, horizon=64, event_prob=1e-9, bias=1e-4, min_prob=1e-300)
    policy = make_agent("robust").fit(task, None)
    assert np.isfinite(policy.info["selection_losses"]).all()
    assert np.isfinite(policy.token_logprobs(np.zeros((1, 1), np.int64),
                                             np.full((1, 64), 2))).all()


def test_default_grid_and_names() -> None:
    grid = np.array(DEFAULT_GAMMAS)
    assert len(grid) == 60 and grid[0] == 0.25 and grid[-1] == pytest.approx(1e-15, rel=1e-12)
    assert (grid > 0).all() and (np.diff(np.log10(grid)) < -0.2).all()  # >= 4 per decade
    assert np.diff(np.log10(grid)).min() > -0.26
    assert {"robust", "robust-rho"} <= set(agent_names())
    assert type(make_agent("robust")) is RobustBC and make_agent("robust").name == "robust"
    assert type(make_agent("robust-rho")) is RobustRho
    assert make_agent("robust-rho").name == "robust-rho"


@pytest.mark.parametrize("env, kwargs", [(BARRIER, {"misspecification": 0.0}),
                                         ("ntp_envs/MixtureProduct-v0", {"weight": 0.0})])
def test_well_specified_control(env, kwargs) -> None:
    task = make_task(env, horizon=64, **kwargs)
    policy = make_agent("robust").fit(task, None)
    assert divergence(task.expert, policy, task.prompts).hellinger2 < 1e-6


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gamma_grid": (0.0,)}, r"gamma_grid values must lie in \(0, 1\), got \[0.0\]"),
    ({"gamma_grid": (0.1, 1.0)}, r"gamma_grid values must lie in \(0, 1\), got \[1.0\]"),
    ({"gamma_grid": (-1e-3,)}, r"gamma_grid values must lie in \(0, 1\)"),
    ({"gamma_grid": (float("nan"),)}, r"gamma_grid values must lie in \(0, 1\)"),
    ({"gamma_grid": ()}, "gamma_grid must not be empty"),
    ({"gamma_grid": ("a",)}, "gamma_grid must be a list of numbers"),
    ({"holdout_fraction": 0.0}, r"holdout_fraction must lie in \(0, 1\), got 0.0"),
    ({"holdout_fraction": 1.0}, r"holdout_fraction must lie in \(0, 1\), got 1.0"),
    ({"holdout_fraction": -0.5}, r"holdout_fraction must lie in \(0, 1\)"),
])
def test_bad_settings_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        RobustBC(**kwargs)
    assert "\n" not in str(err.value)
    agent = RobustBC()
    for key, value in kwargs.items():
        setattr(agent, key, value)  # set after construction: fit checks again
    task = make_task(BARRIER, horizon=4)
    with pytest.raises(ValueError, match=message):
        agent.fit(task, collect_demonstrations(task, 10, 0))


def test_bad_holdout_fraction_of_robust_rho_and_too_few_demonstrations() -> None:
    task = make_task(BARRIER, horizon=4)
    demos = collect_demonstrations(task, 10, 0)
    with pytest.raises(ValueError, match=r"holdout_fraction must lie in \(0, 1\), got 1.5"):
        RobustRho(holdout_fraction=1.5).fit(task, demos)
    for agent, who in ((RobustBC(), "RobustBC"), (RobustRho(), "RobustRho")):
        with pytest.raises(ValueError, match=f"{who} needs at least 2 demonstrations"):
            agent.fit(task, demos.subset(np.array([0])))
