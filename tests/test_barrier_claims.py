"""What the barrier tasks must show, on exact quantities (docs/theory.md, R3).

* MixtureProduct: population NTP's C_apx grows with H; the rho-estimator's stays bounded.
* FiniteClassBarrier: NTP's C_apx exceeds 100 at H = 64; RobustBC stays within
  ``ROBUST_C * H log H``; the rho-estimator stays below 5.
* Well-specified controls (knob 0): every agent matches the best in class.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammaln

from agents import make_agent
from evaluation import divergence
from evaluation.bench.analysis import growth_exponent
from evaluation.bench.sweep import approximation_ratio
from evaluation.oracle import best_in_class
from experts import collect_demonstrations
from ntp_envs import make_task

ROBUST_C = 1.0  # documented constant of the RobustBC claim C_apx <= ROBUST_C * H log H


def c_apx(task, agent: str, n: int | None, seed: int = 0) -> float:
    demos = None if n is None else collect_demonstrations(task, n, seed)
    policy = make_agent(agent).fit(task, demos, np.random.default_rng(seed))
    result = divergence(task.expert, policy, task.prompts)
    assert result.hellinger2_stderr == 0.0  # exact
    return approximation_ratio(result.hellinger2, best_in_class(task).hellinger2)


def test_mixture_product_ntp_amplifies_and_rho_does_not() -> None:
    import pandas as pd

    horizons = [16, 64, 256, 1024]
    rows = []
    for h in horizons:
        task = make_task("ntp_envs/MixtureProduct-v0", horizon=h)
        rows.append({"env_id": "m", "env_kwargs": "{}", "agent": "logloss", "n_train": 0,
                     "horizon": h, "c_apx_mean": c_apx(task, "logloss", None)})
        rho = c_apx(task, "rho", 5000)
        assert rho <= 5.0, f"rho C_apx {rho:.2f} at H={h}"
    slope = growth_exponent(pd.DataFrame(rows))["slope"].iloc[0]
    assert slope > 0.4
    assert rows[-1]["c_apx_mean"] > 4 * rho


def smoothed_barrier_forms(horizon: int, gamma: float, event_prob: float = 1e-4,
                           bias: float = 0.05, min_prob: float = 1e-30
                           ) -> tuple[dict[str, tuple], np.ndarray]:
    """Each FiniteClassBarrier member smoothed as ``(1 - gamma) member + gamma Unif(3)``:
    ``{name: (D_H^2, KL(P* || it), log-likelihoods of P*'s atoms)}`` and the atoms' P*
    weights, derived here from the env's definition. P* puts ``event_prob`` on the all-event
    sequence and spreads the rest evenly over the coin sequences; a member's likelihood of a
    coin sequence depends only on its number k of ones after the first token, so the atoms
    are the event sequence and k = 0..H-1 (``2 C(H-1, k)`` sequences each)."""
    rho, n, g = event_prob, horizon - 1, gamma
    k = np.arange(n + 1)
    log_binom = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    weights = np.concatenate([[rho], np.exp(np.log1p(-rho) + log_binom - n * np.log(2))])
    log_p = np.concatenate([[np.log(rho)], np.full(n + 1, np.log((1 - rho) / 2) - n * np.log(2))])
    def mix(p: float) -> float:
        return (1 - g) * p + g / 3
    forms = {}
    for name, (zero, one, repeat) in {"rare_event": (0.5, 0.5, min_prob),
                                      "biased": (0.5 - bias, 0.5 + bias, 1.0)}.items():
        log_q = np.concatenate([[np.log(mix(rho)) + n * np.log(mix(repeat))],
                                np.log(mix((1 - rho) / 2)) + k * np.log(mix(one))
                                + (n - k) * np.log(mix(zero))])
        count = np.concatenate([[1.0], 2 * np.exp(log_binom)])  # sequences per atom
        bhattacharyya = np.sum(count * np.exp((log_p + log_q) / 2))
        forms[name] = (2 - 2 * bhattacharyya, np.sum(weights * (log_p - log_q)), log_q)
    return forms, weights


def robust_population_choice(horizon: int) -> tuple[float, np.ndarray, list[float]]:
    """RobustBC's population fit redone on the closed forms: on each gamma of its grid the
    smoothed member of least KL, then the exact sequence-level rho tournament
    (``max_j E_P*[tanh((log P_j - log P_i) / 4)]``) over P*'s atoms. Returns the winning
    gamma, every candidate's tournament score and every candidate's D_H^2."""
    grid = [min(4.0**j / horizon, 0.25) for j in range(1, -7, -1)]
    loglik, hellinger = [], []
    for gamma in grid:
        forms, weights = smoothed_barrier_forms(horizon, gamma)
        chosen = forms[min(forms, key=lambda m: forms[m][1])]
        loglik.append(chosen[2])
        hellinger.append(chosen[0])
    scores = np.array([max(np.sum(weights * np.tanh((lj - li) / 4)) for lj in loglik)
                       for li in loglik])
    return grid[int(np.argmin(scores))], scores, hellinger


@pytest.mark.parametrize("n", [None, 5000])
def test_finite_class_barrier(n) -> None:
    """NTP's population C_apx is its closed form (760 at H = 64). RobustBC keeps the
    rare-event member NTP misses, smoothed with its gamma, and its C_apx is that member's
    closed form: the population fit's gamma is the tournament winner redone here, and from
    5000 demonstrations it stays at least 10 times below NTP's C_apx (and within the claim
    ``ROBUST_C H log H``). The rho-estimator stays below 5."""
    h = 64
    task = make_task("ntp_envs/FiniteClassBarrier-v0", horizon=h)
    forms = barrier_closed_forms(h, 1.0)
    best, ntp = forms["rare_event"][0], forms["biased"][0] / forms["rare_event"][0]
    assert ntp > 100
    if n is None:  # the barrier is a population statement: NTP's choice is its KL projection
        assert c_apx(task, "logloss", None) == pytest.approx(ntp, rel=1e-9)
    demos = None if n is None else collect_demonstrations(task, n, 0)
    robust = make_agent("robust-rho").fit(task, demos, np.random.default_rng(0))
    assert robust.info["member"] == "rare_event"
    smoothed = smoothed_barrier_forms(h, robust.gamma)[0]["rare_event"][0]
    robust_c_apx = divergence(task.expert, robust, task.prompts).hellinger2 / best
    assert robust_c_apx == pytest.approx(smoothed / best, rel=1e-9)
    if n is None:
        gamma, scores, hellinger = robust_population_choice(h)
        assert robust.gamma == gamma
        np.testing.assert_allclose(robust.info["tournament_scores"], scores, rtol=1e-9,
                                   atol=1e-12)
        assert robust_c_apx == pytest.approx(hellinger[scores.argmin()] / best, rel=1e-9)
    assert robust_c_apx <= ntp / 10
    assert robust_c_apx <= ROBUST_C * h * np.log(h)
    assert c_apx(task, "rho", n) < 5


def test_finite_class_barrier_ntp_grows_with_h() -> None:
    values = [c_apx(make_task("ntp_envs/FiniteClassBarrier-v0", horizon=h), "logloss", None)
              for h in (16, 64, 256)]
    assert values[0] < values[1] < values[2]
    assert values[2] / values[0] > 8  # at least linear over a factor 16 in H (minus saturation)


def barrier_closed_forms(horizon: int, misspecification: float, event_prob: float = 1e-4,
                         bias: float = 0.05, min_prob: float = 1e-30) -> dict[str, tuple]:
    """``(D_H^2, KL(P* || member))`` of both FiniteClassBarrier members, derived here from the
    env's definition: they differ from the expert only after an event (``rare_event``: the
    event repeats with ``delta``) or after a coin token (``biased``: ``1/2 -+ bias``)."""
    rho, n, delta = event_prob, horizon - 1, min_prob**misspecification
    b = np.sqrt(0.5 * (0.5 - bias)) + np.sqrt(0.5 * (0.5 + bias))  # per-token BC, coin rows
    return {"rare_event": (-2 * rho * np.expm1(0.5 * n * np.log(delta)),
                           rho * n * -np.log(delta)),
            "biased": (-2 * (1 - rho) * np.expm1(n * np.log(b)),
                       (1 - rho) * n * -0.5 * np.log1p(-4 * bias**2))}


@pytest.mark.parametrize("knob", [0.0, 0.5, 1.0])
def test_finite_class_barrier_ntp_fits_the_kl_closest_member(knob) -> None:
    """Population NTP is the member of least KL (closed form); its D_H^2 and the best in
    class are the closed forms of that member and of the member of least D_H^2. At knob 0
    the rare-event member is the expert (both 0); at 0.5 it is still NTP's choice (C_apx 1
    with D_H^2 > 0); at 1 NTP switches to the biased member."""
    task = make_task("ntp_envs/FiniteClassBarrier-v0", horizon=64, misspecification=knob)
    forms = barrier_closed_forms(64, knob)
    policy = make_agent("logloss").fit(task, None, np.random.default_rng(0))
    assert policy.info["member"] == min(forms, key=lambda m: forms[m][1])
    fitted, best = forms[policy.info["member"]][0], min(h2 for h2, _ in forms.values())
    assert divergence(task.expert, policy, task.prompts).hellinger2 == pytest.approx(
        fitted, rel=1e-9, abs=1e-15)
    assert best_in_class(task).hellinger2 == pytest.approx(best, rel=1e-9, abs=1e-15)
    assert (fitted == best) == (knob < 1.0)


@pytest.mark.parametrize("weight", [0.0, 0.05])
def test_mixture_product_ntp_fits_the_token_mean(weight) -> None:
    """Population NTP fits Bern(q)^H with q the token mean (1 - w) p0 + w p1; its D_H^2 is
    the sum over the count k of ones of binom(H, k) (sqrt(P*_k) - sqrt(q^k (1 - q)^(H - k)))^2,
    0 at w = 0, where the expert Bern(p0)^H is the best member."""
    h, p0, p1 = 64, 0.2, 0.8
    task = make_task("ntp_envs/MixtureProduct-v0", horizon=h, weight=weight)
    policy = make_agent("logloss").fit(task, None, np.random.default_rng(0))
    q = 1 / (1 + np.exp(policy.theta[0] - policy.theta[1]))
    assert q == pytest.approx((1 - weight) * p0 + weight * p1, rel=1e-12)
    k = np.arange(h + 1)
    log_binom = gammaln(h + 1) - gammaln(k + 1) - gammaln(h - k + 1)
    def log_product(p: float) -> np.ndarray:
        return k * np.log(p) + (h - k) * np.log1p(-p)
    with np.errstate(divide="ignore"):  # log 0 at w = 0
        log_expert = np.logaddexp(np.log1p(-weight) + log_product(p0),
                                  np.log(weight) + log_product(p1))
    closed = (np.exp(log_binom) * (np.exp(log_expert / 2) - np.exp(log_product(q) / 2))**2).sum()
    assert divergence(task.expert, policy, task.prompts).hellinger2 == pytest.approx(
        closed, rel=1e-9, abs=1e-13)  # abs: the count-law sum's round-off at w = 0
    if weight == 0.0:
        assert closed < 1e-15 and best_in_class(task).hellinger2 < 1e-12


@pytest.mark.parametrize("env, knob", [
    ("ntp_envs/MixtureProduct-v0", {"weight": 0.0}),
    ("ntp_envs/FiniteClassBarrier-v0", {"misspecification": 0.0}),
])
def test_well_specified_controls(env, knob) -> None:
    task = make_task(env, horizon=64, **knob)
    # population NTP attains the expert: see the two tests above. The tournaments are exact,
    # but rho's candidates are a grid (MixtureProduct) and RobustBC smooths: both are within
    # grid / smoothing error of the expert, so C_apx = x / 0 is undefined
    for agent in ("robust-rho", "rho"):  # robust: tests/test_robust.py
        policy = make_agent(agent).fit(task, None, np.random.default_rng(0))
        assert policy.info["tournament"] == "exact"
        assert divergence(task.expert, policy, task.prompts).hellinger2 < 0.01
