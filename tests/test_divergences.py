"""Divergences: finite-state DP vs enumeration vs Monte Carlo, closed forms, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from brute_force import enumerated_divergences
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax

import evaluation.methods.finite_state_dp as dp
from evaluation import DivergenceResult, divergence
from evaluation.methods.enumeration import enumerate_divergences
from evaluation.methods.finite_state_dp import (
    finite_state_divergences,
    kl_divergence,
    lift_to_common_memory,
    log_bhattacharyya,
)
from evaluation.methods.monte_carlo import monte_carlo_divergences
from ntp_envs import make_task
from ntp_envs.sequence_model import (
    FinitePrompts,
    FiniteStateModel,
    FiniteStateTables,
    PromptDistribution,
    SequenceModel,
)

ENV = "ntp_envs/ARLinear-v0"


# ------------------------------------------------------------------------------ helpers


def random_tables(rng, contexts, positions, vocab, memory, horizon, scale=1.5):
    logits = scale * rng.normal(size=(contexts, positions, vocab**memory, vocab))
    return FiniteStateTables(log_softmax(logits, axis=-1), memory, horizon)


def random_prompts(rng, contexts):
    return FinitePrompts(np.arange(contexts)[:, None], np.log(rng.dirichlet(np.ones(contexts))))


def pair(seed, vocab, mem_p, mem_q, t_p, t_q, contexts, horizon, scale=1.5):
    rng = np.random.default_rng(seed)
    prompts = random_prompts(rng, contexts)
    p = random_tables(rng, contexts, t_p, vocab, mem_p, horizon, scale)
    q = random_tables(rng, contexts, t_q, vocab, mem_q, horizon, scale)
    return FiniteStateModel(p, prompts), FiniteStateModel(q, prompts), prompts


def torch_pair(p: FiniteStateTables, q: FiniteStateTables):
    p, q = lift_to_common_memory(p, q)
    return torch.from_numpy(p.logp), torch.from_numpy(q.logp)


class CountModel(SequenceModel):
    """Not finite-state: ``P(a = 1) = sigmoid(0.3 x - 0.5 + 0.8 (#ones - h / 2))`` (V = 2)."""

    vocab_size = 2

    def __init__(self, horizon: int, shift: float = 0.0) -> None:
        self.horizon = horizon
        self.shift = shift

    def next_token_logprobs(self, prompts, prefixes):
        prefixes = np.asarray(prefixes).reshape(len(prompts), -1)
        h = prefixes.shape[1]
        z = 0.3 * prompts[:, 0] - 0.5 + self.shift + 0.8 * (prefixes.sum(axis=1) - h / 2)
        return log_softmax(np.stack([np.zeros_like(z), z], axis=1), axis=1)


class GeometricPrompts(PromptDistribution):
    """An infinite prompt law: ``x ~ Geometric(1/2) - 1`` on ``{0, 1, 2, ...}``."""

    prompt_length = 1

    def sample(self, n, rng):
        return (rng.geometric(0.5, size=n) - 1)[:, None].astype(np.int64)


# ---------------------------------------------------- exact methods agree with each other

CASES = [  # vocab, memory p, memory q, Tp, Tq, contexts, horizon
    (2, 0, 0, 1, 1, 1, 6),
    (2, 0, 0, 3, 1, 2, 8),
    (2, 1, 0, 2, 4, 3, 9),
    (2, 2, 2, 3, 1, 2, 10),
    (2, 3, 1, 4, 2, 3, 11),
    (3, 0, 1, 1, 3, 2, 6),
    (3, 2, 1, 3, 2, 2, 7),
    (2, 2, 3, 10, 1, 2, 10),  # tables as long as the horizon: no tail
]


@pytest.mark.parametrize("case", CASES)
def test_dp_matches_enumeration(case) -> None:
    expert, learner, prompts = pair(sum(case), *case)
    exact = divergence(expert, learner, prompts, method="enumerate")
    by_dp = divergence(expert, learner, prompts, method="dp")
    assert by_dp.method == "dp" and exact.method == "enumerate"
    assert abs(by_dp.hellinger2 - exact.hellinger2) < 1e-10
    assert abs(by_dp.kl - exact.kl) < 1e-10
    truth = enumerated_divergences(expert, learner, prompts)  # summed here, sequence by sequence
    for key in ("hellinger2", "kl", "tv"):
        assert getattr(exact, key) == pytest.approx(truth[key], rel=1e-9, abs=1e-13), key
    assert truth["hellinger2"] > 0.01  # not a trivial pair
    # the reverse direction too (KL is not symmetric)
    back = divergence(learner, expert, prompts, method="dp")
    assert abs(back.kl - enumerate_divergences(learner, expert, prompts).kl) < 1e-10


@pytest.mark.parametrize("case", CASES[:5])
@pytest.mark.parametrize("tail", ["loop", "power"])
def test_tail_modes_match_enumeration(case, tail) -> None:
    expert, learner, prompts = pair(7 + sum(case), *case)
    exact = enumerate_divergences(expert, learner, prompts)
    logp, logq = torch_pair(expert.tables, learner.tables)
    log_mu, horizon = torch.from_numpy(prompts.log_probs), case[-1]
    log_bc = float(log_bhattacharyya(logp, logq, log_mu, horizon, tail=tail))
    assert abs(-2 * math.expm1(log_bc) - exact.hellinger2) < 1e-10
    assert abs(float(kl_divergence(logp, logq, log_mu, horizon, tail=tail)) - exact.kl) < 1e-10


@pytest.mark.parametrize("seed", range(4))
def test_ar_linear_dp_matches_enumeration(seed) -> None:
    vocab = 2 + seed % 2
    task = make_task(ENV, horizon=8 if vocab == 2 else 5, vocab_size=vocab, num_contexts=3,
                     learner_memory=seed % 2, expert_memory=2, misspecification=0.7,
                     context_probs=[0.5, 0.3, 0.2], task_seed=seed)
    theta = np.random.default_rng(seed).normal(size=task.learner_class.dim)
    learner = task.learner_class.model(theta)
    other = make_task(ENV, horizon=task.horizon, vocab_size=vocab, num_contexts=3,
                      expert_memory=3, learner_memory=0, context_probs=[0.5, 0.3, 0.2],
                      task_seed=seed + 10).expert
    for q in (learner, other):
        exact = divergence(task.expert, q, task.prompts, method="enumerate")
        by_dp = divergence(task.expert, q, task.prompts, method="dp")
        assert abs(by_dp.hellinger2 - exact.hellinger2) < 1e-10
        assert abs(by_dp.kl - exact.kl) < 1e-10


@pytest.mark.parametrize(
    "vocab, memory, scale, patch",
    [(2, 2, 1.0, {}), (2, 4, 3.0, {"EXACT_LOGMATMUL_MAX_ELEMENTS": 0}),
     (3, 2, 8.0, {"EXACT_LOGMATMUL_MAX_ELEMENTS": 0, "SHIFTED_CUTOFF": 20.0}),
     (2, 5, 20.0, {"EXACT_LOGMATMUL_MAX_ELEMENTS": 0, "SHIFTED_CUTOFF": 30.0})],
)
def test_power_and_loop_agree_at_long_horizon(vocab, memory, scale, patch, monkeypatch) -> None:
    # covers the exact log product, the rescaled BLAS product and its exact fallback
    for name, value in patch.items():
        monkeypatch.setattr(dp, name, value)
    rng = np.random.default_rng(memory)
    p = random_tables(rng, 2, memory + 1, vocab, memory, 600, scale)
    q = random_tables(rng, 2, 2, vocab, memory, 600, scale)
    logp, logq = torch_pair(p, q)
    log_mu = torch.log(torch.tensor([0.3, 0.7], dtype=torch.float64))
    for fn in (log_bhattacharyya, kl_divergence):
        loop = float(fn(logp, logq, log_mu, 600, tail="loop"))
        power = float(fn(logp, logq, log_mu, 600, tail="power"))
        assert math.isfinite(loop) and abs(power - loop) <= 1e-10 * max(1.0, abs(loop))


def test_context_order_follows_the_prompt_law() -> None:
    expert, learner, prompts = pair(3, 2, 1, 2, 2, 3, 3, 7)
    order = np.array([2, 0, 1])
    shuffled = FinitePrompts(prompts.contexts[order], prompts.log_probs[order])
    reordered = FiniteStateModel(
        FiniteStateTables(learner.tables.logp[order], 2, 7), shuffled
    )
    exact = divergence(expert, learner, prompts, method="enumerate")
    by_dp = divergence(expert, reordered, prompts, method="dp")
    assert abs(by_dp.hellinger2 - exact.hellinger2) < 1e-10


def test_batched_restarts_match_single_evaluations() -> None:
    rng = np.random.default_rng(5)
    tables = [random_tables(rng, 2, 3, 2, 2, 50) for _ in range(4)]
    expert = torch.from_numpy(random_tables(rng, 2, 2, 2, 2, 50).logp)
    batch = torch.stack([torch.from_numpy(t.logp) for t in tables])  # (4, C, T, S, V)
    log_mu = torch.log(torch.tensor([0.4, 0.6], dtype=torch.float64))
    for fn in (log_bhattacharyya, kl_divergence):
        out = fn(batch, expert.expand(4, *expert.shape), log_mu, 50)
        assert out.shape == (4,)
        swapped = fn(expert, batch, log_mu, 50)  # broadcast: unbatched P, batched Q
        assert swapped.shape == (4,)
        for i, t in enumerate(tables):
            single = fn(torch.from_numpy(t.logp), expert, log_mu, 50)
            assert abs(float(out[i]) - float(single)) < 1e-12
            single = fn(expert, torch.from_numpy(t.logp), log_mu, 50)
            assert abs(float(swapped[i]) - float(single)) < 1e-12


# -------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("horizon", [1, 7, 4096])
@pytest.mark.parametrize("p, q", [(0.3, 0.6), (0.5, 0.5), (1e-6, 0.9)])
def test_product_of_bernoullis(horizon, p, q) -> None:
    logp = torch.tensor([[[[math.log1p(-p), math.log(p)]]]], dtype=torch.float64)
    logq = torch.tensor([[[[math.log1p(-q), math.log(q)]]]], dtype=torch.float64)
    log_mu = torch.zeros(1, dtype=torch.float64)
    bc1 = math.sqrt(p * q) + math.sqrt((1 - p) * (1 - q))
    kl1 = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    log_bc = float(log_bhattacharyya(logp, logq, log_mu, horizon))
    assert abs(log_bc - horizon * math.log(bc1)) <= 1e-12 * max(1.0, horizon * abs(math.log(bc1)))
    kl = float(kl_divergence(logp, logq, log_mu, horizon))
    assert abs(kl - horizon * kl1) <= 1e-12 * max(1.0, horizon * kl1)
    prompts = FinitePrompts(np.zeros((1, 1)), np.zeros(1))
    models = [FiniteStateModel(FiniteStateTables(t.numpy()[0:1], 0, horizon), prompts)
              for t in (logp, logq)]
    result = divergence(*models, prompts)
    assert abs(result.hellinger2 - 2 * (1 - bc1**horizon)) < 1e-12


def test_memory_zero_many_positions_matches_closed_form() -> None:
    # time-varying Bernoulli(p_h): BC = prod_h BC_h, KL = sum_h KL_h
    rng = np.random.default_rng(0)
    p, q = rng.uniform(0.05, 0.95, size=(2, 12))
    bc = np.sqrt(p * q) + np.sqrt((1 - p) * (1 - q))
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    as_table = lambda x: torch.from_numpy(np.log(np.stack([1 - x, x], -1))[None, :, None, :])  # noqa: E731
    log_mu = torch.zeros(1, dtype=torch.float64)
    horizon = 20  # the last table repeats for positions 11..19
    weights = np.r_[np.ones(11), horizon - 11]
    assert abs(float(log_bhattacharyya(as_table(p), as_table(q), log_mu, horizon))
               - float(weights @ np.log(bc))) < 1e-12
    assert abs(float(kl_divergence(as_table(p), as_table(q), log_mu, horizon))
               - float(weights @ kl)) < 1e-12


# -------------------------------------------------------------------------- Monte Carlo


@pytest.mark.parametrize("kind", ["finite_state", "count_model"])
def test_monte_carlo_within_four_standard_errors(kind) -> None:
    if kind == "finite_state":
        task = make_task(ENV, horizon=8, num_contexts=3, learner_memory=1, expert_memory=3,
                         context_probs=[0.6, 0.3, 0.1], task_seed=4)
        expert, prompts = task.expert, task.prompts
        learner = task.learner_class.model(np.random.default_rng(1).normal(
            size=task.learner_class.dim))
    else:
        prompts = FinitePrompts(np.arange(3)[:, None], np.log([0.2, 0.3, 0.5]))
        expert, learner = CountModel(8), CountModel(8, shift=0.7)
    exact = divergence(expert, learner, prompts, method="enumerate")
    mc = divergence(expert, learner, prompts, method="monte_carlo", n_samples=20_000, rng=3)
    assert mc.method == "monte_carlo"
    for name in ("hellinger2", "kl", "tv"):
        est, se, truth = getattr(mc, name), getattr(mc, f"{name}_stderr"), getattr(exact, name)
        assert 0 < se < 0.05 and abs(est - truth) < 4 * se, (name, est, se, truth)


def test_monte_carlo_with_an_infinite_prompt_law_is_reproducible() -> None:
    expert, learner, prompts = CountModel(6), CountModel(6, shift=0.4), GeometricPrompts()
    first = divergence(expert, learner, prompts, n_samples=2_000, rng=11)
    again = divergence(expert, learner, prompts, n_samples=2_000, rng=11)
    assert first.method == "monte_carlo" and first == again
    # exact by enumeration over x <= 60 (the prompt mass left out, 2^-61, is below round-off)
    support = np.arange(61)
    truncated = FinitePrompts(support[:, None], -(support + 1) * math.log(2))
    exact = divergence(expert, learner, truncated, method="enumerate")
    for name in ("hellinger2", "kl", "tv"):
        est, se = getattr(first, name), getattr(first, f"{name}_stderr")
        assert abs(est - getattr(exact, name)) < 4 * se, name
    other = divergence(expert, learner, prompts, n_samples=2_000, rng=12)
    assert other.hellinger2 != first.hellinger2


# --------------------------------------------------------------------- properties


@st.composite
def finite_pairs(draw):
    vocab = draw(st.sampled_from([2, 3]))
    memory = draw(st.integers(0, 2))
    horizon = draw(st.integers(1, 40))
    t_p, t_q = (draw(st.integers(1, min(4, horizon))) for _ in range(2))
    contexts = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    prompts = random_prompts(rng, contexts)
    p = random_tables(rng, contexts, t_p, vocab, memory, horizon, scale)
    q = random_tables(rng, contexts, t_q, vocab, draw(st.integers(0, memory)), horizon, scale)
    return p, q, prompts.log_probs


@settings(max_examples=40, deadline=None)
@given(finite_pairs())
def test_hellinger_properties(case) -> None:
    p, q, log_mu = case
    h_pq, kl_pq = finite_state_divergences(p, q, log_mu)
    h_qp, _ = finite_state_divergences(q, p, log_mu)
    h_pp, kl_pp = finite_state_divergences(p, p, log_mu)
    assert abs(h_pq - h_qp) < 1e-12
    assert h_pp < 1e-12 and abs(kl_pp) < 1e-12
    # Jensen, BC = E_P[sqrt(Q / P)] >= exp(-KL / 2), links the two recursions
    assert h_pq <= -2 * math.expm1(-kl_pq / 2) + 1e-12


def test_hellinger_of_a_perfect_fit_is_plus_zero() -> None:
    from evaluation.methods.finite_state_dp import hellinger2_from_log_bc

    for log_bc in (0.0, 1e-15, -0.0):  # BC = 1 (rounding may put log BC a hair above 0)
        assert math.copysign(1.0, hellinger2_from_log_bc(log_bc)) == 1.0  # not -0.0
    assert hellinger2_from_log_bc(-1e300) == 2.0


# ------------------------------------------------- exact values are checked before clipping


class Inflated(SequenceModel):
    """``model`` with every next-token probability times ``factor``: not normalised."""

    def __init__(self, model: SequenceModel, factor: float) -> None:
        self.model, self.log_factor = model, math.log(factor)
        self.vocab_size, self.horizon = model.vocab_size, model.horizon

    def next_token_logprobs(self, prompts, prefixes):
        return self.model.next_token_logprobs(prompts, prefixes) + self.log_factor

    def deterministic_sequences(self, prompts):
        return None


def test_an_unnormalised_learner_is_reported_not_clipped(monkeypatch) -> None:
    # Q = 1.01^H P: BC = 1.01^(H/2) > 1, so the raw D_H^2 is negative far beyond round-off
    expert, _, prompts = pair(0, 2, 1, 1, 2, 2, 2, 6)
    with pytest.raises(ValueError, match=r"D_H\^2 computed exactly is -0\.06"):
        divergence(expert, Inflated(expert, 1.01), prompts, method="enumerate")
    # the same log BC = 3 log 1.01 planted in the finite-state recursion
    monkeypatch.setattr(dp, "log_bhattacharyya",
                        lambda *args, **kw: torch.tensor(3 * math.log(1.01)))
    with pytest.raises(ValueError, match=r"D_H\^2 computed exactly is -0\.06"):
        divergence(expert, expert, prompts, method="dp")
    # an excess of 6e-9 is round-off: clipped to exactly +0.0
    tiny = divergence(expert, Inflated(expert, 1 + 1e-9), prompts, method="enumerate")
    assert (tiny.hellinger2, tiny.kl, tiny.tv) == (0.0, 0.0, 0.0)
    assert math.copysign(1.0, tiny.hellinger2) == 1.0


def test_a_learner_above_one_on_the_deterministic_answer_is_reported() -> None:
    task = make_task("ntp_envs/ParityCoT-v0", num_bits=4, subset_size=2)
    learner = Inflated(task.expert, 1.01)  # Q(tau*(x) | x) = 1.01^H > 1
    with pytest.raises(ValueError, match=r"D_H\^2 computed exactly is -"):
        divergence(task.expert, learner, task.prompts, method="deterministic")


def test_negative_kl_and_tv_are_reported(monkeypatch) -> None:
    from evaluation.methods.roundoff import ROUNDOFF_TOLERANCE, tv_from_log_overlap
    from evaluation.methods.sufficient_stats import count_law_divergences
    from ntp_envs.sequence_model import CountLaw

    expert, learner, prompts = pair(0, 2, 1, 1, 2, 2, 2, 40)
    monkeypatch.setattr(dp, "kl_divergence", lambda *args, **kw: torch.tensor(-1e-3))
    with pytest.raises(ValueError, match=r"KL computed exactly is -0\.001"):
        divergence(expert, learner, prompts, method="dp")
    monkeypatch.setattr(dp, "kl_divergence", lambda *args, **kw: torch.tensor(-1e-9))
    assert divergence(expert, learner, prompts, method="dp").kl == 0.0  # round-off: clipped
    # count laws: P = Bern(1/2)^4 and a Q with twice its mass on every sequence
    half = CountLaw(np.full((1, 5), 4 * math.log(0.5)))
    double = CountLaw(half.log_seq.copy())
    object.__setattr__(double, "log_seq", half.log_seq + math.log(2))
    with pytest.raises(ValueError, match=r"KL computed exactly is -0\.6931"):  # -log 2
        count_law_divergences(half, double, np.zeros(1))
    # chunk recursion: fair coins vs 2 chunks of K = 2 each of mass 1.01: KL = -2 log 1.01
    from evaluation.methods.chunk_dp import finite_state_chunk_divergences
    from ntp_envs.chunk_tables import ChunkTables

    coins = FiniteStateTables(np.full((1, 1, 1, 2), math.log(0.5)), 0, 4)
    chunks = ChunkTables(np.full((1, 1, 1, 4), math.log(0.25)), None, 2, 0, 4, 2)
    object.__setattr__(chunks, "logq", chunks.logq + math.log(1.01))
    with pytest.raises(ValueError, match=r"KL computed exactly is -0\.0199"):
        finite_state_chunk_divergences(coins, chunks, np.zeros(1))
    with pytest.raises(ValueError, match=r"TV computed exactly is -0\.01"):
        tv_from_log_overlap(math.log(1.01))
    assert tv_from_log_overlap(0.5 * ROUNDOFF_TOLERANCE) == 0.0


# ------------------------------------------------------------- extremes and gradients


@pytest.mark.parametrize("memory", [0, 1, 4])
@pytest.mark.parametrize("vocab", [2, 3])
def test_extreme_parameters_at_horizon_4096(memory, vocab) -> None:
    rng = np.random.default_rng(memory * 10 + vocab)
    shape = (2, memory + 1, vocab**memory, vocab)
    signs = rng.choice([-50.0, 50.0], size=shape)
    near_det = torch.from_numpy(log_softmax(signs, -1))
    flipped = torch.from_numpy(log_softmax(-signs, -1))
    mild = torch.from_numpy(log_softmax(rng.normal(size=shape), -1))
    log_mu = torch.log(torch.tensor([0.1, 0.9], dtype=torch.float64))
    for logp, logq in [(near_det, flipped), (near_det, mild), (mild, near_det),
                       (near_det, near_det)]:
        log_bc = log_bhattacharyya(logp, logq, log_mu, 4096)
        kl = kl_divergence(logp, logq, log_mu, 4096)
        assert torch.isfinite(log_bc) and torch.isfinite(kl)
        assert float(log_bc) <= 1e-9 and float(kl) >= -1e-9
        assert float(kl) >= -2 * float(log_bc) - 1e-6  # KL >= -2 log BC
    assert abs(float(log_bhattacharyya(near_det, near_det, log_mu, 4096))) < 1e-9
    logits = torch.tensor(signs, requires_grad=True)
    value = log_bhattacharyya(torch.log_softmax(logits, -1), mild, log_mu, 4096)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(grad).all()


def test_zero_probability_gives_infinite_kl_and_finite_hellinger() -> None:
    logp = torch.log(torch.tensor([[[[0.5, 0.5], [0.9, 0.1]]]], dtype=torch.float64))
    logq = torch.log(torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]], dtype=torch.float64))
    log_mu = torch.zeros(1, dtype=torch.float64)
    assert float(kl_divergence(logp, logq, log_mu, 3)) == math.inf
    assert float(kl_divergence(logq, logp, log_mu, 3)) < math.inf
    prompts = FinitePrompts(np.zeros((1, 1)), np.zeros(1))
    expert, learner = (FiniteStateModel(FiniteStateTables(t.numpy(), 1, 3), prompts)
                       for t in (logp, logq))
    exact = divergence(expert, learner, prompts, method="enumerate")
    by_dp = divergence(expert, learner, prompts, method="dp")
    mc = divergence(expert, learner, prompts, method="monte_carlo", n_samples=500)
    assert exact.kl == by_dp.kl == mc.kl == math.inf
    truth = enumerated_divergences(expert, learner, prompts)
    assert truth["kl"] == math.inf
    assert exact.hellinger2 == pytest.approx(truth["hellinger2"], rel=1e-12)
    assert by_dp.hellinger2 == pytest.approx(truth["hellinger2"], rel=1e-12)


@pytest.mark.parametrize("tail", ["loop", "power"])
@pytest.mark.parametrize("memory", [0, 2])
def test_gradient_matches_finite_differences(tail, memory) -> None:
    rng = np.random.default_rng(memory)
    shape_p, shape_q = (2, 3, 2**memory, 2), (2, 1, 2**memory, 2)
    logits_p = torch.tensor(rng.normal(size=shape_p), requires_grad=True)
    logits_q = torch.tensor(rng.normal(size=shape_q), requires_grad=True)
    log_mu = torch.log(torch.tensor([0.35, 0.65], dtype=torch.float64))

    def log_bc(lp, lq):
        return log_bhattacharyya(torch.log_softmax(lp, -1), torch.log_softmax(lq, -1),
                                 log_mu, 9, tail=tail)

    def kl(lp, lq):
        return kl_divergence(torch.log_softmax(lp, -1), torch.log_softmax(lq, -1),
                             log_mu, 9, tail=tail)

    assert torch.autograd.gradcheck(log_bc, (logits_p, logits_q), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(kl, (logits_p, logits_q), eps=1e-6, atol=1e-7)


def test_gradient_of_rescaled_product_matches_finite_differences(monkeypatch) -> None:
    monkeypatch.setattr(dp, "EXACT_LOGMATMUL_MAX_ELEMENTS", 0)
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(1, 2, 8, 2)), requires_grad=True)
    other = torch.log_softmax(torch.tensor(rng.normal(size=(1, 4, 8, 2))), -1)
    log_mu = torch.zeros(1, dtype=torch.float64)
    fn = lambda x: log_bhattacharyya(torch.log_softmax(x, -1), other, log_mu, 40, tail="power")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- dispatcher


def test_auto_picks_enumeration_then_dp_then_monte_carlo() -> None:
    expert, learner, prompts = pair(0, 2, 2, 1, 3, 2, 2, 10)
    small = divergence(expert, learner, prompts)
    assert isinstance(small, DivergenceResult) and small.method == "enumerate"
    assert small.hellinger2_stderr == 0.0 and small.tv is not None
    expert, learner, prompts = pair(0, 2, 2, 1, 3, 2, 2, 64)
    long = divergence(expert, learner, prompts)
    assert long.method == "dp" and long.tv is None and long.tv_stderr is None
    assert long.kl_stderr == 0.0
    generic = divergence(CountModel(20), CountModel(20, 0.3), prompts, n_samples=200)
    assert generic.method == "monte_carlo" and generic.hellinger2_stderr > 0


def test_auto_falls_back_to_monte_carlo_beyond_the_state_limit() -> None:
    rng = np.random.default_rng(0)
    prompts = FinitePrompts(np.zeros((1, 1)), np.zeros(1))
    big = FiniteStateModel(random_tables(rng, 1, 1, 2, 13, 20), prompts)  # 8192 states
    small = FiniteStateModel(random_tables(rng, 1, 2, 2, 1, 20), prompts)
    assert divergence(big, small, prompts, n_samples=100).method == "monte_carlo"
    with pytest.raises(ValueError, match="window states"):
        divergence(big, small, prompts, method="dp")


def test_every_method_name_a_result_carries_is_documented(monkeypatch) -> None:
    import evaluation.divergences as divergences_module
    import evaluation.methods.deterministic as det
    from ntp_envs.chunk_tables import ChunkModel, ChunkTables
    from ntp_envs.mixture_product import MixtureOfProducts

    expert, learner, prompts = pair(0, 2, 1, 1, 2, 2, 2, 6)
    mixture = MixtureOfProducts(prompts, 6, 0.3, 0.2, 0.7)
    chunks = ChunkModel(ChunkTables(np.full((2, 1, 1, 4), math.log(0.25)), None, 2, 0, 6, 2),
                        prompts)
    parity = make_task("ntp_envs/ParityCoT-v0", num_bits=4, subset_size=2)
    cases = {
        "enumerate": (expert, learner, prompts, "enumerate"),
        "stats": (mixture, mixture, prompts, "stats"),
        "chunk": (expert, chunks, prompts, "chunk"),
        "dp": (expert, learner, prompts, "dp"),
        "monte_carlo": (expert, learner, prompts, "monte_carlo"),
        "deterministic_exact": (parity.expert, parity.expert, parity.prompts, "deterministic"),
    }
    produced = {name: divergence(p, q, law, method=m, n_samples=50).method
                for name, (p, q, law, m) in cases.items()}
    monkeypatch.setattr(det, "MAX_EXACT_TOKENS", 1)  # too large to sum: prompts are sampled
    produced["deterministic_mc"] = divergence(parity.expert, parity.expert, parity.prompts,
                                              n_samples=50).method
    assert produced == {name: name for name in produced}
    for name in [*produced, "deterministic"]:  # and the name older rows carry
        assert f"* ``{name}``: " in divergences_module.__doc__, name


def test_misuse_is_rejected() -> None:
    expert, learner, prompts = pair(0, 2, 1, 1, 2, 2, 2, 30)
    with pytest.raises(ValueError, match="method"):
        divergence(expert, learner, prompts, method="exact")
    with pytest.raises(ValueError, match="V\\*\\*H"):
        divergence(expert, learner, prompts, method="enumerate")
    with pytest.raises(ValueError, match="finite_state"):
        divergence(expert, CountModel(30), prompts, method="dp")
    with pytest.raises(ValueError, match="FinitePrompts"):
        divergence(CountModel(30), CountModel(30), GeometricPrompts(), method="dp")
    with pytest.raises(ValueError, match="horizon"):
        divergence(expert, CountModel(31), prompts)
    other_vocab = pair(0, 3, 1, 1, 2, 2, 2, 30)[1]
    with pytest.raises(ValueError, match="vocab_size"):
        divergence(expert, other_vocab, prompts)
    with pytest.raises(ValueError, match="n_samples"):
        divergence(expert, learner, prompts, method="monte_carlo", n_samples=1)
    with pytest.raises(ValueError, match="n_samples"):
        monte_carlo_divergences(expert, learner, prompts, 1, np.random.default_rng(0))
