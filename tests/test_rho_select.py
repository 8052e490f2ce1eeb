"""``rho-select:a+b+c``: the tournament against brute-force enumeration, the split, bad specs,
and its C_apx against the best listed agent over the barrier family (population fits)."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agents import make_agent
from agents.base import Agent
from agents.logloss_bc import LogLossBC
from agents.policies import LinearSoftmaxPolicy
from agents.robust_bc import RobustBC
from evaluation.divergences import divergence
from evaluation.oracle import best_in_class
from experts import collect_demonstrations
from ntp_envs import make_task

HERE = Path(__file__).resolve()


@dataclass
class ScaledLogLoss(Agent):
    """The population LogLossBC parameter times ``scale`` (a deterministic candidate)."""

    scale: float = 1.0
    name: str = "scaled"

    def fit(self, task, demonstrations, rng=None):  # noqa: ANN001, ANN201
        theta = LogLossBC().fit(task, None).theta
        return LinearSoftmaxPolicy(task, self.scale * theta, info={"scale": self.scale})


def brute_force_scores(task, policies) -> np.ndarray:  # noqa: ANN001
    """``max_j E_{P*}[tanh((log P_j - log P_i) / 4)]`` for each candidate ``i``, enumerated."""
    seqs = np.array(list(itertools.product(range(task.vocab_size), repeat=task.horizon)))
    cross = np.zeros((len(policies), len(policies)))
    for context, log_mu in zip(task.prompts.contexts, task.prompts.log_probs, strict=True):
        x = np.repeat(context[None], len(seqs), axis=0)
        weight = np.exp(log_mu + task.expert.sequence_logprob(x, seqs))
        loglik = np.stack([p.sequence_logprob(x, seqs) for p in policies])
        cross += (np.tanh((loglik[None, :, :] - loglik[:, None, :]) / 4) * weight).sum(axis=2)
    return cross.max(axis=1)


def test_population_tournament_is_exact() -> None:
    task = make_task("ntp_envs/ARLinear-v0", horizon=5, misspecification=1.0)
    scales = (3.0, 0.5, 1.0, 0.0)
    spec = "rho-select:" + "+".join(f"{HERE}:ScaledLogLoss?scale={s}" for s in scales)
    policy = make_agent(spec).fit(task, None)
    candidates = [ScaledLogLoss(s).fit(task, None) for s in scales]
    expected = brute_force_scores(task, candidates)
    assert policy.info["tournament"] == "exact"
    np.testing.assert_allclose(list(policy.info["scores"].values()), expected, rtol=1e-9,
                               atol=1e-12)
    assert policy.info["selected"].endswith(f"scale={scales[int(np.argmin(expected))]}")
    assert np.allclose(policy.theta, candidates[int(np.argmin(expected))].theta)


def test_split_of_demonstrations(monkeypatch) -> None:
    """The candidates fit on 151 of the 301 sequences and the tournament scores the other
    150: the two parts partition the demonstrations (no held-out sequence reaches a fit),
    and the scores are the tournament redone here on the sequences no fit saw."""
    seen: dict[str, list] = {}
    for cls in (LogLossBC, RobustBC):
        def recording(self, task, demonstrations, rng=None, _fit=cls.fit):  # noqa: ANN001, ANN202
            policy = _fit(self, task, demonstrations, rng)
            seen.setdefault(type(self).__name__, []).append((demonstrations, policy))
            return policy
        monkeypatch.setattr(cls, "fit", recording)
    task = make_task("ntp_envs/ARLinear-v0", horizon=6)
    demos = collect_demonstrations(task, 301, np.random.default_rng(0))
    policy = make_agent("rho-select:logloss+robust").fit(task, demos, np.random.default_rng(1))
    info = policy.info
    assert info["split"] == {"fit": 151, "held_out": 150}
    assert info["tournament"] == "demonstrations, n=150"
    assert sorted(seen) == ["LogLossBC", "RobustBC"] and all(len(v) == 1 for v in seen.values())
    [(fit_on, logloss)], [(robust_on, robust)] = seen["LogLossBC"], seen["RobustBC"]

    def rows(d) -> Counter:  # noqa: ANN001 - the sequences of a dataset, as a multiset
        return Counter(map(tuple, np.hstack([np.asarray(d.prompts), np.asarray(d.tokens)])))

    everything, fitted = rows(demos), rows(fit_on)
    assert rows(robust_on) == fitted and fitted.total() == 151
    held = everything - fitted
    assert held.total() == 150 and fitted + held == everything  # a partition of the 301
    held_rows = np.array(list(held.elements()))
    length = task.prompts.prompt_length
    prompts, tokens = held_rows[:, :length], held_rows[:, length:]
    loglik = [p.sequence_logprob(prompts, tokens) for p in (logloss, robust)]
    expected = [max(np.tanh((loglik[j] - loglik[i]) / 4).sum() for j in range(2))
                for i in range(2)]
    np.testing.assert_allclose([info["scores"]["logloss"], info["scores"]["robust"]], expected,
                               rtol=1e-9, atol=1e-12)
    assert info["selected"] == min(info["scores"], key=info["scores"].get)
    assert policy is (logloss, robust)[["logloss", "robust"].index(info["selected"])]
    assert info["winner_info"]["agent"] == info["selected"]


@pytest.mark.parametrize(("spec", "message"), [
    ("rho-select:", "needs at least one agent"),
    ("rho-select:logloss+nope", "unknown agent 'nope'"),
    ("rho-select:logloss+rho-select:robust", "cannot list another rho-select: agent"),
])
def test_bad_rho_select_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_agent(spec, "--agents")


def barrier_factors(horizon: int, num_bias: int) -> tuple[float, float]:
    """``(worst-case factor, largest per-instance factor)`` of
    ``rho-select:logloss+robust+chunk-rho:4`` against the best of the three, population fits,
    FiniteClassBarrier family (event_prob 1e-3, log-spaced bias in [1e-3, 0.25])."""
    names = ["logloss", "robust", "chunk-rho:4"]
    select = "rho-select:" + "+".join(names)
    c_apx: dict[str, list[float]] = {n: [] for n in [*names, select]}
    for bias in np.geomspace(1e-3, 0.25, num_bias):
        task = make_task("ntp_envs/FiniteClassBarrier-v0", horizon=horizon, event_prob=1e-3,
                         bias=float(bias))
        best = best_in_class(task).hellinger2
        for name in c_apx:
            policy = make_agent(name).fit(task, None, np.random.default_rng(0))
            c_apx[name].append(divergence(task.expert, policy, task.prompts).hellinger2 / best)
    worst = {name: max(values) for name, values in c_apx.items()}
    per_instance = np.array(c_apx[select]) / np.min([c_apx[n] for n in names], axis=0)
    return worst[select] / min(worst[n] for n in names), float(per_instance.max())


def test_rho_select_against_best_listed_on_barrier_family() -> None:
    """Measured (exact population tournaments): worst-case factor 1.00 at H = 32; the largest
    per-instance factor is 1.6501 (bias 0.25: the tournament prefers robust's smoothed member
    to the exact best member, which puts no mass on the rare event) at every H measured, so
    the worst-case factor reaches 1.65 on grids where the candidates' own worst case is
    small (H = 16, 8 biases)."""
    worst, per_instance = barrier_factors(horizon=32, num_bias=8)
    assert worst <= 1.5
    assert per_instance <= 1.66


@pytest.mark.slow
def test_rho_select_within_1_5x_on_barrier_family_long() -> None:
    worst, _ = barrier_factors(horizon=128, num_bias=12)
    assert worst <= 1.5
