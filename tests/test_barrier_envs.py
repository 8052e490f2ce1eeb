"""MixtureProduct-v0, FiniteClassBarrier-v0 and the sufficient-statistics divergences."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.special import expit, logsumexp
from scipy.stats import chisquare

from evaluation import divergence
from evaluation.methods.sufficient_stats import count_law_divergences, log_bhattacharyya_counts
from ntp_envs import make_task
from ntp_envs.finite_class_barrier import barrier_closed_forms
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.mixture_product import MixtureOfProducts
from ntp_envs.sequence_model import CountLaw, FinitePrompts, SequenceModel
from ntp_envs.task import REWARD_FLOOR

MIXTURE = "ntp_envs/MixtureProduct-v0"
BARRIER = "ntp_envs/FiniteClassBarrier-v0"


def two_contexts() -> FinitePrompts:
    return FinitePrompts(np.array([[0], [1]]), np.log([0.3, 0.7]))


def product(prompts: FinitePrompts, q: list[float], horizon: int) -> SequenceModel:
    """i.i.d. Bernoulli(q[c]) per context, as a member of the memory-0 linear class."""
    lc = LinearSoftmaxClass(prompts, 2, 0, horizon)
    theta = np.stack([np.zeros(len(q)), np.log(q) - np.log1p(-np.asarray(q))], axis=1)
    return lc.model(theta.ravel())


# ------------------------------------------------------- stats vs enumeration and MC


@pytest.mark.parametrize("horizon", [1, 4, 10])
def test_stats_match_enumeration(horizon: int) -> None:
    prompts = two_contexts()
    mixtures = [MixtureOfProducts(prompts, horizon, w, p0, p1)
                for w, p0, p1 in [(0.3, 0.2, 0.7), (0.6, 0.9, 0.4), (0.0, 0.35, 0.5),
                                  (1.0, 0.1, 0.8)]]
    products = [product(prompts, [0.25, 0.6], horizon), product(prompts, [0.8, 0.1], horizon)]
    pairs = [(m, q) for m in mixtures for q in products]  # product vs mixture, both ways
    pairs += [(q, m) for m in mixtures[:2] for q in products]
    pairs += [(a, b) for a in mixtures for b in mixtures]  # mixture vs mixture
    for p, q in pairs:
        exact = divergence(p, q, prompts, method="enumerate")
        stats = divergence(p, q, prompts, method="stats")
        assert stats.method == "stats" and stats.hellinger2_stderr == 0.0
        assert abs(stats.hellinger2 - exact.hellinger2) < 1e-10
        assert abs(stats.kl - exact.kl) < 1e-10
        assert abs(stats.tv - exact.tv) < 1e-10
    assert divergence(mixtures[0], products[0], prompts, method="stats").hellinger2 > 0.01


def test_stats_match_monte_carlo_at_horizon_512() -> None:
    prompts = two_contexts()
    expert = MixtureOfProducts(prompts, 512, 0.1, 0.3, 0.34)
    for learner in (product(prompts, [0.31, 0.295], 512),
                    MixtureOfProducts(prompts, 512, 0.4, 0.31, 0.35)):
        exact = divergence(expert, learner, prompts)
        assert exact.method == "stats"  # auto: V**H too large to enumerate, no tables
        mc = divergence(expert, learner, prompts, method="monte_carlo", n_samples=20_000, rng=1)
        for name in ("hellinger2", "kl", "tv"):
            est, se, truth = getattr(mc, name), getattr(mc, f"{name}_stderr"), getattr(exact, name)
            assert 0 < se < 0.05 and abs(est - truth) < 4 * se, (name, est, se, truth)
        assert 0.02 < exact.hellinger2 < 1.5


def test_extreme_probabilities_at_horizon_4096() -> None:
    prompts = FinitePrompts(np.zeros((1, 1), dtype=np.int64), np.zeros(1))
    horizon, tiny = 4096, 1e-6
    sharp = MixtureOfProducts(prompts, horizon, 0.3, tiny, 1 - tiny)
    law = sharp.count_law()
    assert np.isfinite(law.log_seq).all()
    assert abs(logsumexp(law.log_count_probs())) < 1e-12
    near = product(prompts, [tiny], horizon)
    result = divergence(sharp, near, prompts)
    assert result.method == "stats"
    for value in (result.hellinger2, result.kl, result.tv):
        assert math.isfinite(value)
    # the components are disjoint at this H: BC = sqrt(0.7), TV = 0.3
    assert abs(result.hellinger2 - 2 * (1 - math.sqrt(0.7))) < 1e-12
    assert abs(result.tv - 0.3) < 1e-12
    # sharp = 0.7 A + 0.3 B with A = Bern(tiny)^H, B = Bern(1 - tiny)^H, disjoint at this H
    # (BC(A, B) = (2 sqrt(tiny (1 - tiny)))^H = 0): against Bern(1/2)^H (BC 0.7^(H/2) = 0
    # with each part), B alone and A alone, D_H^2 and TV have closed forms
    closed = [(2.0, 1.0), (2 - 2 * math.sqrt(0.3), 0.7), (2 - 2 * math.sqrt(0.7), 0.3)]
    others = (product(prompts, [0.5], horizon),
              MixtureOfProducts(prompts, horizon, 0.0, 1 - tiny, 0.5),
              MixtureOfProducts(prompts, horizon, 1.0, 0.5, tiny))
    for other, (hellinger2, tv) in zip(others, closed, strict=True):
        for p, q in ((sharp, other), (other, sharp)):
            r = divergence(p, q, prompts, method="stats")
            assert abs(r.hellinger2 - hellinger2) < 1e-12 and abs(r.tv - tv) < 1e-12
            assert math.isfinite(r.kl) and r.kl >= r.hellinger2 - 1e-12
    # the differentiable form agrees and has finite gradients
    logits = torch.tensor([-13.0, 0.0, 13.0], dtype=torch.float64, requires_grad=True)
    k = torch.arange(horizon + 1, dtype=torch.float64)
    log_q = (k * torch.nn.functional.logsigmoid(logits[:, None])
             + (horizon - k) * torch.nn.functional.logsigmoid(-logits[:, None]))[:, None, :]
    log_bc = log_bhattacharyya_counts(log_q, torch.from_numpy(law.log_seq), torch.zeros(1))
    for i in range(3):  # against the numpy sums of the same laws
        numpy_form = count_law_divergences(CountLaw(log_q[i].detach().numpy()), law, np.zeros(1))
        assert abs(-2 * math.expm1(float(log_bc[i].detach())) - numpy_form.hellinger2) < 1e-12
    (grad,) = torch.autograd.grad(log_bc.sum(), logits)
    assert torch.isfinite(grad).all()


def test_torch_counts_match_numpy_and_gradcheck() -> None:
    prompts = two_contexts()
    expert = MixtureOfProducts(prompts, 30, 0.2, 0.3, 0.7).count_law()
    qs = np.array([[0.2, 0.4], [0.5, 0.5], [0.33, 0.71]])
    laws = [product(prompts, list(q), 30).count_law() for q in qs]
    batch = torch.from_numpy(np.stack([law.log_seq for law in laws]))  # (3, C, H + 1)
    log_mu = torch.from_numpy(prompts.log_probs)
    out = log_bhattacharyya_counts(batch, torch.from_numpy(expert.log_seq), log_mu)
    for i, law in enumerate(laws):
        h2 = count_law_divergences(law, expert, prompts.log_probs).hellinger2
        assert abs(-2 * math.expm1(float(out[i])) - h2) < 1e-12
    logits = torch.tensor(qs[0], dtype=torch.float64, requires_grad=True)
    k = torch.arange(31, dtype=torch.float64)

    def fn(z: torch.Tensor) -> torch.Tensor:
        log_q = (k * torch.nn.functional.logsigmoid(z[:, None])
                 + (30 - k) * torch.nn.functional.logsigmoid(-z[:, None]))
        return log_bhattacharyya_counts(log_q, torch.from_numpy(expert.log_seq), log_mu)

    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-8)


def test_stats_misuse_and_zero_mass() -> None:
    task = make_task(BARRIER, horizon=5)
    with pytest.raises(ValueError, match="count_law"):
        divergence(task.expert, task.learner_class.members[0], task.prompts, method="stats")
    zero = CountLaw.product(np.array([0.0]), 4)  # all ones with probability 1
    half = CountLaw.product(np.log([0.5]), 4)
    assert count_law_divergences(half, zero, np.zeros(1)).kl == math.inf
    assert abs(count_law_divergences(zero, half, np.zeros(1)).kl - 4 * math.log(2)) < 1e-12


# --------------------------------------------------------------------- MixtureProduct


def test_mixture_model_is_consistent() -> None:
    prompts = two_contexts()
    model = MixtureOfProducts(prompts, 12, 0.35, 0.15, 0.75)
    law = model.count_law()
    assert abs(logsumexp(law.log_count_probs(), axis=1)).max() < 1e-12
    rng = np.random.default_rng(0)
    x = prompts.contexts[rng.integers(0, 2, size=300)]
    tokens = rng.integers(0, 2, size=(300, 12))
    seq = model.sequence_logprob(x, tokens)
    np.testing.assert_allclose(seq, law.log_seq[0, tokens.sum(axis=1)], rtol=1e-13)
    fast = model.token_logprobs(x, tokens)
    slow = SequenceModel.token_logprobs(model, x, tokens)  # one next_token_logprobs per h
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fast.sum(axis=1), seq, rtol=1e-12)
    rows = model.next_token_logprobs(x, tokens[:, :5])
    np.testing.assert_allclose(logsumexp(rows, axis=1), 0.0, atol=1e-13)
    with pytest.raises(ValueError, match="prompt"):
        model.next_token_logprobs(np.array([[5]]), np.zeros((1, 2), dtype=np.int64))


@pytest.mark.parametrize("weight", [0.05, 0.5])
def test_mixture_sampler_matches_the_law(weight: float) -> None:
    prompts = FinitePrompts(np.zeros((1, 1), dtype=np.int64), np.zeros(1))
    model = MixtureOfProducts(prompts, 20, weight, 0.2, 0.8)
    n = 20_000
    tokens = model.sample(np.zeros((n, 1), dtype=np.int64), np.random.default_rng(7))
    assert tokens.shape == (n, 20) and set(np.unique(tokens)) <= {0, 1}
    observed = np.bincount(tokens.sum(axis=1), minlength=21)
    expected = n * np.exp(model.count_law().log_count_probs()[0])
    keep = expected >= 5  # pool the sparse bins (if any) into one
    obs, exp = observed[keep], expected[keep]
    if (~keep).any():
        obs, exp = np.r_[obs, observed[~keep].sum()], np.r_[exp, expected[~keep].sum()]
    assert chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4


def test_mixture_well_specified_at_weight_zero() -> None:
    task = make_task(MIXTURE, weight=0.0, p0=0.3, horizon=40)
    assert task.well_specified_theta is not None
    member = task.learner_class.model(task.well_specified_theta)
    np.testing.assert_allclose(member.count_law().log_seq, task.expert.count_law().log_seq,
                               rtol=1e-13)
    assert divergence(task.expert, member, task.prompts).hellinger2 < 1e-13
    assert make_task(MIXTURE).well_specified_theta is None


def _best_product(expert: CountLaw) -> float:
    """``min_q D_H^2(Bern(q)^H, P*)`` over a dense logit grid, then a local grid refinement."""
    horizon = expert.horizon
    k = torch.arange(horizon + 1, dtype=torch.float64)
    target = torch.from_numpy(expert.log_seq)
    z = torch.linspace(-12.0, 12.0, 2401, dtype=torch.float64)
    for _ in range(3):
        log_q = (k * torch.nn.functional.logsigmoid(z[:, None])
                 + (horizon - k) * torch.nn.functional.logsigmoid(-z[:, None]))[:, None, :]
        log_bc = log_bhattacharyya_counts(log_q, target, torch.zeros(1, dtype=torch.float64))
        i = int(torch.argmax(log_bc))
        step = float(z[1] - z[0])
        z = torch.linspace(float(z[i]) - step, float(z[i]) + step, 201, dtype=torch.float64)
    return -2 * math.expm1(float(log_bc.max()))


def test_mixture_defaults_amplify_with_horizon() -> None:
    c_apx = {}
    for horizon in (16, 1024):
        task = make_task(MIXTURE, horizon=horizon)
        ntp = product(task.prompts, [task.extras["kl_projection_q"]], horizon)
        d2_ntp = divergence(task.expert, ntp, task.prompts).hellinger2
        best = _best_product(task.expert.count_law())
        assert 1e-3 < best <= d2_ntp
        c_apx[horizon] = d2_ntp / best
    assert c_apx[16] < 2 and c_apx[1024] > 15  # documented: 1.38 and 20.06
    # the KL projection is the mean fraction of ones (population NTP over products)
    q = make_task(MIXTURE, horizon=16).extras["kl_projection_q"]
    assert abs(q - (0.95 * 0.2 + 0.05 * 0.8)) < 1e-15
    assert abs(expit(np.log(q / (1 - q))) - q) < 1e-15


# ------------------------------------------------------------------ FiniteClassBarrier


@pytest.mark.parametrize(("misspecification", "min_prob"), [(1.0, 1e-30), (0.5, 0.01),
                                                             (1.0, 0.5)])
@pytest.mark.parametrize("horizon", [2, 7, 64, 1000])
def test_barrier_closed_forms(horizon: int, misspecification: float, min_prob: float) -> None:
    task = make_task(BARRIER, horizon=horizon, misspecification=misspecification,
                     min_prob=min_prob)
    delta = min_prob**misspecification
    forms = barrier_closed_forms(horizon, 1e-4, 0.05, delta)
    methods = ("dp", "enumerate") if horizon <= 7 else ("dp",)
    for name, member in zip(task.learner_class.names, task.learner_class.members, strict=True):
        for method in methods:
            result = divergence(task.expert, member, task.prompts, method=method)
            for key in ("hellinger2", "kl"):
                truth = forms[name][key]
                assert abs(getattr(result, key) - truth) <= 1e-10 * truth, (name, method, key)


def test_barrier_tables_differ_from_the_expert_in_one_row() -> None:
    task = make_task(BARRIER, horizon=10, misspecification=0.5, min_prob=1e-4, bias=0.1)
    expert = np.exp(task.expert.finite_state().logp[0])  # (T, S, V)
    np.testing.assert_allclose(expert[0], [[0.49995, 0.49995, 1e-4]] * 3, rtol=1e-14)
    np.testing.assert_allclose(expert[1], [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], atol=0)
    rows = {"rare_event": ((1, 2), [0.495, 0.495, 0.01]), "biased": ((1, 0), [0.4, 0.6, 0])}
    for name, ((t, s), row) in rows.items():
        tables = task.learner_class.members[task.learner_class.index(name)].finite_state()
        probs = np.exp(tables.logp[0])
        np.testing.assert_allclose(probs[t, s], row, rtol=1e-13, atol=0)
        changed = np.argwhere(np.abs(probs - expert).max(axis=-1) > 0)
        expected = [[1, 2]] if name == "rare_event" else [[1, 0], [1, 1]]
        np.testing.assert_array_equal(changed, expected)


def test_barrier_defaults_fool_next_token_prediction() -> None:
    task = make_task(BARRIER)
    assert task.horizon == 64
    result = {name: divergence(task.expert, member, task.prompts)
              for name, member in zip(task.learner_class.names, task.learner_class.members,
                                      strict=True)}
    assert result["biased"].kl < result["rare_event"].kl  # population NTP picks "biased"
    c_apx = result["biased"].hellinger2 / result["rare_event"].hellinger2
    assert c_apx > 100  # 760 with the defaults
    # the switch point does not depend on H: misspecification 0.7 keeps NTP on rare_event
    low = make_task(BARRIER, misspecification=0.7, horizon=500)
    kl = [divergence(low.expert, m, low.prompts).kl for m in low.learner_class.members]
    assert kl[0] < kl[1]


def test_barrier_well_specified_at_zero() -> None:
    task = make_task(BARRIER, misspecification=0.0, horizon=30)
    member = task.learner_class.members[task.learner_class.index("rare_event")]
    np.testing.assert_array_equal(member.finite_state().logp, task.expert.finite_state().logp)
    result = divergence(task.expert, member, task.prompts)
    assert result.hellinger2 < 1e-15 and result.kl == 0.0
    assert task.well_specified_theta is None


def test_rewards_are_floored() -> None:
    env = gym.make(BARRIER, horizon=4)
    env.reset(seed=0)
    _, first, *_ = env.step(2)  # the event as first token: log rho
    assert abs(first - math.log(1e-4)) < 1e-12
    _, reward, *_ = env.step(0)  # the expert never leaves the event: log 0
    assert type(reward) is float and reward == REWARD_FLOOR
    env = gym.make(MIXTURE, horizon=3)
    env.reset(seed=0)
    _, reward, *_ = env.step(1)
    assert abs(reward - math.log(0.95 * 0.2 + 0.05 * 0.8)) < 1e-12


# ----------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("env_id", "kwargs", "name"),
    [
        (MIXTURE, {"horizon": 0}, "horizon"),
        (MIXTURE, {"weight": -0.1}, "weight"),
        (MIXTURE, {"weight": 1.5}, "weight"),
        (MIXTURE, {"p0": 0.0}, "p0"),
        (MIXTURE, {"p1": 1.0}, "p1"),
        (MIXTURE, {"p1": float("nan")}, "p1"),
        (MIXTURE, {"foo": 1}, "foo"),
        (BARRIER, {"horizon": 2.5}, "horizon"),
        (BARRIER, {"event_prob": 0.0}, "event_prob"),
        (BARRIER, {"event_prob": 1.0}, "event_prob"),
        (BARRIER, {"bias": 0.5}, "bias"),
        (BARRIER, {"bias": 0.0}, "bias"),
        (BARRIER, {"misspecification": 1.1}, "misspecification"),
        (BARRIER, {"min_prob": 0.0}, "min_prob"),
        (BARRIER, {"min_prob": 1.0}, "min_prob"),
        (BARRIER, {"delta": 0.1}, "delta"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_bad_arguments(env_id: str, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        gym.make(env_id, **kwargs)
