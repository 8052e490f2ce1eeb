"""The fast exact population tournaments (issue 20, item 4) against independent references.

* Statistics: :func:`agents.tournament.population_statistics` (finite-state atoms, with the
  i.i.d. states' remaining tokens in closed form; count-law statistics) give the law of the
  vector of candidate chunk log-likelihoods that enumerating all ``V**H`` sequences gives
  (each model's own ``token_logprobs``, the expert's sequence probabilities), and the
  tournament scores of the definition ``max_k' sum w tanh((l_k' - l_k) / 4)`` over them.
* :func:`agents.tournament.rho_winner` (full score rows only where bounds cannot rule a
  candidate out) picks :func:`agents.tournament.rho_tournament`'s winner with its score.
* The reference path (every atom token by token, ``closed_form=False``; full tournaments in
  every refinement round: the code before issue 20) picks the same winners.

No timings here: ``benchmarks/bench_barrier_family.py --speed`` prints them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents import ChunkRho, RhoEstimator
from agents.policies import FiniteMemberPolicy, LinearSoftmaxPolicy
from agents.tournament import (
    TournamentSource,
    _IidStates,
    population_statistics,
    rho_tournament,
    rho_winner,
)
from ntp_envs import make_task
from ntp_envs.finite_class import FiniteClass
from ntp_envs.sequence_model import FinitePrompts, FiniteStateModel, FiniteStateTables
from ntp_envs.task import SequenceTask

BARRIER = "ntp_envs/FiniteClassBarrier-v0"
MIX = "ntp_envs/MixtureProduct-v0"
RARITY = list(itertools.product([1e-2, 1e-5, 1e-9], [1e-4, 1e-2, 0.2], [1e-5, 1e-300]))
MIXTURES = [(w, p0, p1) for w in (0.02, 0.1, 0.3) for p0, p1 in ((.5, .9), (.2, .8), (.1, .3))]


def enumerated_statistics(task: SequenceTask, candidates: list, chunk_size: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``(loglik (K, n), weights (n,))``: one row per (context, sequence with P* > 0, chunk),
    weight ``mu(x) P*(sequence | x)``, from the models' ``token_logprobs`` alone."""
    horizon = task.horizon
    tokens = np.array(list(itertools.product(range(task.vocab_size), repeat=horizon)))
    starts = np.arange(0, horizon, chunk_size)
    logliks, weights = [], []
    for context, log_mu in zip(task.prompts.contexts, task.prompts.log_probs, strict=True):
        rows = np.repeat(context[None, :], len(tokens), axis=0)
        log_p = log_mu + task.expert.token_logprobs(rows, tokens).sum(axis=1)
        seen = log_p > -np.inf
        chunks = np.stack([np.add.reduceat(c.token_logprobs(rows[seen], tokens[seen]), starts,
                                           axis=1) for c in candidates])
        logliks.append(chunks.reshape(len(candidates), -1))
        weights.append(np.repeat(np.exp(log_p[seen]), len(starts)))
    return np.concatenate(logliks, axis=1), np.concatenate(weights)


def law(loglik: np.ndarray, weights: np.ndarray) -> dict[tuple[float, ...], float]:
    """Total weight per distinct log-likelihood vector (to 1e-6 nats)."""
    out: dict[tuple[float, ...], float] = {}
    for column, w in zip(np.round(loglik.T, 6), weights, strict=True):
        key = tuple(column.tolist())
        out[key] = out.get(key, 0.0) + float(w)
    return out


def direct_scores(loglik: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``max_k' sum_i w_i tanh((l_k'(i) - l_k(i)) / 4)`` for every ``k`` (0 where both are
    impossible)."""
    with np.errstate(invalid="ignore"):
        diff = loglik[None, :, :] - loglik[:, None, :]
    return (np.tanh(np.nan_to_num(diff, nan=0.0) / 4) @ weights).max(axis=1)


def check_against_enumeration(task: SequenceTask, candidates: list, chunk_size: int) -> None:
    fast = population_statistics(candidates, task, chunk_size)
    assert fast is not None
    slow = enumerated_statistics(task, candidates, chunk_size)
    np.testing.assert_allclose(fast[1].sum(), slow[1].sum(), rtol=1e-12)
    got, want = law(*fast), law(*slow)
    floor = 1e-15 * slow[1].sum()
    for key, weight in want.items():
        if weight > floor:
            assert got.get(key, 0.0) == pytest.approx(weight, rel=1e-9), key
    assert all(key in want for key, weight in got.items() if weight > floor)
    winner, scores = rho_tournament(*fast)
    expected = direct_scores(*slow)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-10 * slow[1].sum())
    assert winner == int(np.argmin(expected)) or expected[winner] == pytest.approx(
        expected.min(), abs=1e-10 * slow[1].sum())


@pytest.mark.parametrize(("event_prob", "bias", "min_prob"), RARITY)
def test_barrier_statistics_match_every_sequence_h6(event_prob, bias, min_prob) -> None:
    """All 3**6 sequences; the members, and smoothed members (robust-rho's candidates)."""
    task = make_task(BARRIER, horizon=6, event_prob=event_prob, bias=bias, min_prob=min_prob)
    sets = ([FiniteMemberPolicy(task, i) for i in range(2)],
            [FiniteMemberPolicy(task, i, g) for g in (0.2, 1e-3, 1e-9) for i in range(2)])
    for candidates, k in itertools.product(sets, (1, 2, 4, 5, 6)):
        check_against_enumeration(task, candidates, k)


def test_barrier_states_jump_to_the_chunk_end() -> None:
    """Every window state of the barrier is i.i.d. from position 1 on (the coin states
    among themselves, the event state alone): atoms are O(H), none token by token."""
    task = make_task(BARRIER, horizon=4096, event_prob=1e-5, bias=0.01, min_prob=1e-30)
    members = [m.finite_state().lift(1, 2) for m in task.learner_class.members]
    iid = _IidStates.build(task.expert.finite_state().lift(1, 2), members)
    assert iid is not None and iid.position == 1 and iid.good.all()
    loglik, weights = population_statistics(
        [FiniteMemberPolicy(task, i) for i in range(2)], task, 4096)
    assert loglik.shape[1] <= 4096 + 2  # ones among the coins, or the event


def random_task(seed: int, memory: int, vocab: int, contexts: int, kind: str) -> SequenceTask:
    """A finite-state expert and three random members (two table positions, some zero
    expert probabilities). ``kind``: ``plain``; ``absorbing`` (the expert repeats the last
    token forever once emitted); ``lagged`` (every row depends only on the oldest token of
    the window: a window repeating one token has successors like itself, and a different
    row two tokens on); ``iid-expert`` (the expert's rows are the same in every state, the
    members' are not)."""
    rng = np.random.default_rng(seed)
    horizon, states = 6, vocab**memory

    def tables(expert: bool) -> FiniteStateTables:
        p = rng.dirichlet(np.ones(vocab), size=(contexts, 2, states))
        if kind == "lagged":
            p = p[:, :, np.arange(states) // vocab ** (memory - 1)]
        if expert and kind == "iid-expert":
            p = p[:, :, :1].repeat(states, axis=2)
        if expert:
            p[..., 0] *= rng.random((contexts, 2, 1 if kind == "iid-expert" else states)) < 0.5
        if expert and kind == "absorbing":
            p[:, 1, np.arange(states) % vocab == vocab - 1] = np.eye(vocab)[vocab - 1]
        p /= p.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            return FiniteStateTables(np.log(p), memory, horizon)

    prompts = FinitePrompts(np.arange(contexts)[:, None],
                            np.log(rng.dirichlet(np.ones(contexts))))
    members = tuple(FiniteStateModel(tables(False), prompts) for _ in range(3))
    return SequenceTask(env_id="test/random", params={}, horizon=horizon, vocab_size=vocab,
                        prompt_vocab_size=contexts, prompts=prompts,
                        expert=FiniteStateModel(tables(True), prompts),
                        learner_class=FiniteClass(members, ("a", "b", "c")))


@pytest.mark.parametrize(("memory", "vocab", "contexts", "kind"), [
    (0, 3, 2, "plain"),  # i.i.d. in each context: three token groups, closed form throughout
    (1, 3, 1, "absorbing"),  # token by token until the absorbing token, then closed form
    (2, 2, 2, "plain"),  # no i.i.d. state: token by token throughout
    (1, 2, 2, "absorbing"),
    (2, 2, 1, "lagged"),  # i.i.d. only where no path leads to a different row
    (2, 3, 2, "lagged"),
    (1, 3, 2, "iid-expert"),  # the members' rows differ: token by token throughout
])
def test_random_finite_state_statistics_match_every_sequence(memory, vocab, contexts,
                                                             kind) -> None:
    for seed in range(3):
        task = random_task(seed, memory, vocab, contexts, kind)
        candidates = [FiniteMemberPolicy(task, i) for i in range(3)]
        for k in (1, 2, 4, 6):
            check_against_enumeration(task, candidates, k)


def test_closed_form_over_its_cap_falls_back_to_token_by_token(monkeypatch) -> None:
    """Where the closed form would exceed its caps (here: more than 2 tokens left), the
    atoms go on token by token: the same law."""
    original = _IidStates._group_law
    calls = []

    def capped(self, c, s, remaining):  # noqa: ANN001, ANN202 - a test double
        calls.append(remaining)
        return None if remaining > 2 else original(self, c, s, remaining)

    monkeypatch.setattr(_IidStates, "_group_law", capped)
    task = make_task(BARRIER, horizon=6, event_prob=1e-2, bias=0.2, min_prob=1e-5)
    for k in (1, 4, 6):
        check_against_enumeration(task, [FiniteMemberPolicy(task, i) for i in range(2)], k)
    task = random_task(1, 1, 3, 1, "absorbing")
    check_against_enumeration(task, [FiniteMemberPolicy(task, i) for i in range(3)], 6)
    assert max(calls) > 2 and min(calls) <= 2


@pytest.mark.parametrize(("weight", "p0", "p1"), MIXTURES)
def test_mixture_statistics_and_winner_match_every_sequence_h8(weight, p0, p1) -> None:
    """All 2**8 sequences, 40 i.i.d. candidates (the pruned winner search, K > 16)."""
    task = make_task(MIX, horizon=8, weight=weight, p0=p0, p1=p1)
    logits = np.concatenate([np.linspace(-4, 4, 25), np.linspace(-0.7, 0.7, 15) + 0.013])
    candidates = [LinearSoftmaxPolicy(task, np.array([0.0, x])) for x in logits]
    for k in range(1, 9):
        check_against_enumeration(task, candidates, k)
        slow = enumerated_statistics(task, candidates, k)
        expected = direct_scores(*slow)
        best, score = rho_winner(*population_statistics(candidates, task, k))
        assert best == int(np.argmin(expected))
        assert score == pytest.approx(expected.min(), abs=1e-10 * slow[1].sum())


def iid_grid_statistics(rng: np.random.Generator, length: int, n_logits: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Count statistics of a two-component binomial mixture and a refined logit grid (the
    rho-estimator's shape), weights under 1e-20 of the total dropped."""
    from scipy.stats import binom

    j = np.arange(length + 1)
    p = rng.uniform(0.05, 0.95, size=2)
    weights = (1 - (w := rng.uniform(0, 0.5))) * binom.pmf(j, length, p[0]) + \
        w * binom.pmf(j, length, p[1])
    keep = weights > 1e-20 * weights.sum()
    centre = rng.uniform(-3, 3)
    logits = np.unique(np.concatenate([
        np.linspace(-12, 12, n_logits), centre + np.linspace(-0.24, 0.24, n_logits),
        centre + 0.01 + np.linspace(-0.005, 0.005, n_logits)]))
    q = 1 / (1 + np.exp(-logits))
    loglik = j[None, keep] * np.log(q)[:, None] + (length - j[None, keep]) * np.log1p(-q)[:, None]
    return loglik, weights[keep]


@pytest.mark.parametrize("length", [8, 64, 512, 4096])
def test_rho_winner_is_the_tournament_winner_on_refined_grids(length) -> None:
    rng = np.random.default_rng(length)
    for _ in range(4 if length < 4096 else 2):
        loglik, weights = iid_grid_statistics(rng, length, 61)
        best, scores = rho_tournament(loglik, weights)
        for start in (None, 0, len(loglik) // 2, len(loglik) - 1):
            got, score = rho_winner(loglik, weights, start=start)
            assert got == best
            assert score == pytest.approx(scores[best], abs=1e-12 * weights.sum())


def test_rho_winner_is_the_tournament_winner_on_rough_matrices_with_ties() -> None:
    """No order among candidates, repeated candidates (ties go to the lowest index),
    impossible statistics (-inf), zero weights, a single statistic."""
    rng = np.random.default_rng(7)
    for trial in range(60):
        n, m = int(rng.integers(17, 120)), int(rng.choice([1, 3, 40, 300]))
        loglik = rng.normal(size=(n, m)) * rng.choice([0.1, 3.0, 50.0])
        if trial % 3 == 0:
            loglik[rng.random((n, m)) < 0.05] = -np.inf
        if trial % 2 == 0:
            copies = rng.integers(0, n, size=n // 3)
            loglik[rng.integers(0, n, size=n // 3)] = loglik[copies]
        weights = rng.random(m) * (rng.random(m) < 0.9)
        best, scores = rho_tournament(loglik, weights)
        got, score = rho_winner(loglik, weights)
        assert got == best, trial
        assert score == scores[best] or score == pytest.approx(scores[best], abs=1e-12 * m)


def test_rho_winner_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="start must lie in"):
        rho_winner(np.zeros((20, 3)), start=20)
    with pytest.raises(ValueError, match="weights must be"):
        rho_winner(np.zeros((20, 3)), np.array([1.0, -1.0, 0.0]))
    with pytest.raises(ValueError, match="loglik must have shape"):
        rho_winner(np.zeros(3))


@pytest.mark.parametrize(("event_prob", "bias", "min_prob"), RARITY)
def test_barrier_closed_form_matches_the_token_by_token_path_h64(event_prob, bias,
                                                                 min_prob) -> None:
    task = make_task(BARRIER, horizon=64, event_prob=event_prob, bias=bias, min_prob=min_prob)
    sets = ([FiniteMemberPolicy(task, i) for i in range(2)],
            [FiniteMemberPolicy(task, i, g) for g in (0.1, 1e-4, 1e-8) for i in range(2)])
    for candidates, k in itertools.product(sets, (1, 3, 16, 64)):
        fast = population_statistics(candidates, task, k)
        reference = population_statistics(candidates, task, k, closed_form=False)
        best, scores = rho_tournament(*fast)
        ref_best, ref_scores = rho_tournament(*reference)
        assert best == ref_best
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-9 * fast[1].sum())
        assert law(*fast).keys() >= {key for key, w in law(*reference).items()
                                      if w > 1e-15 * reference[1].sum()}


def reference_agent(agent: RhoEstimator) -> RhoEstimator:
    """The same agent with full tournaments in every round and atoms token by token."""

    def select(source: TournamentSource, candidates: list, guess: int | None
               ) -> tuple[int, float]:
        source.closed_form = False
        best, scores = source.select(candidates)
        return best, float(scores[best])

    agent._select = select  # type: ignore[method-assign]
    return agent


def check_same_fits(horizon: int, chunk_sizes: tuple[int, ...], grid_size: int) -> None:
    def agent(k: int) -> RhoEstimator:
        if k == horizon:
            return RhoEstimator(grid_size=grid_size)
        return ChunkRho(grid_size=grid_size, chunk_size=k)

    for weight, p0, p1 in MIXTURES:
        task = make_task(MIX, horizon=horizon, weight=weight, p0=p0, p1=p1)
        for k in chunk_sizes:
            fast = agent(k).fit(task, None)
            ref = reference_agent(agent(k)).fit(task, None)
            np.testing.assert_array_equal(fast.theta, ref.theta)
            assert fast.info["tournament_score"] == pytest.approx(
                ref.info["tournament_score"], abs=1e-9)
            assert fast.info["candidates"] == ref.info["candidates"]
    for event_prob, bias, min_prob in RARITY:
        task = make_task(BARRIER, horizon=horizon, event_prob=event_prob, bias=bias,
                         min_prob=min_prob)
        for k in chunk_sizes:
            fast, ref = agent(k).fit(task, None), reference_agent(agent(k)).fit(task, None)
            assert fast.info["member"] == ref.info["member"]
            assert fast.info["tournament_score"] == pytest.approx(
                ref.info["tournament_score"], abs=1e-9)


def test_fits_match_the_reference_path_h32() -> None:
    check_same_fits(32, (1, 5, 32), grid_size=41)


@pytest.mark.slow
def test_fits_match_the_reference_path_h256() -> None:
    check_same_fits(256, (1, 16, 85, 256), grid_size=201)
