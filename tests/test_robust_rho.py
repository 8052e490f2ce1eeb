"""RobustRho (``robust-rho``: gamma by a sequence-level tournament) and RhoEstimator:
mechanics, misuse, save/load. ``robust`` (token log loss selection): tests/test_robust.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammaln

from agents import ChunkRho, LogLossBC, RhoEstimator, RobustBC, RobustRho, load_policy, make_agent
from agents.policies import FiniteMemberPolicy, LinearSoftmaxPolicy
from agents.rho_estimator import rho_select, rho_tournament
from agents.robust_bc import fit_smoothed
from agents.smoothing import smoothed
from agents.tournament import TournamentSource, population_statistics
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


@pytest.mark.parametrize("n", [None, 2000])
def test_tournament_picks_its_own_product_not_the_mle(n) -> None:
    """Misspecified: the expert is 0.95 Bern(0.2)^H + 0.05 Bern(0.8)^H, the class the
    products Bern(q)^H. Plain MLE fits the token mean; the rho tournament (exact law, or 2000
    demonstrations) picks the q that the tournament redone here by brute force picks (every q
    on a grid of step 1e-4 against every other, over the counts of ones), a different member
    whose exact D_H^2 (a sum over the counts) is under 3/4 of the MLE's."""
    h, w, p0, p1 = 256, 0.05, 0.2, 0.8
    task = make_task("ntp_envs/MixtureProduct-v0", horizon=h, weight=w, p0=p0, p1=p1)
    k = np.arange(h + 1)
    log_binom = gammaln(h + 1) - gammaln(k + 1) - gammaln(h - k + 1)
    def log_product(q: float) -> np.ndarray:  # one sequence with k ones
        return k * np.log(q) + (h - k) * np.log1p(-q)
    log_expert = np.logaddexp(np.log1p(-w) + log_product(p0), np.log(w) + log_product(p1))
    def hellinger2(q: float) -> float:
        return float(np.sum(np.exp(log_binom) * (np.exp(log_expert / 2)
                                                 - np.exp(log_product(q) / 2)) ** 2))
    if n is None:
        demos, weights, mle = None, np.exp(log_binom + log_expert), (1 - w) * p0 + w * p1
    else:
        demos = collect_demonstrations(task, n, 0)
        ones = np.asarray(demos.tokens).sum(axis=1)
        weights, mle = np.bincount(ones, minlength=h + 1).astype(float), ones.sum() / (n * h)
    grid = np.linspace(0.20, 0.24, 401)
    loglik = np.stack([log_product(q) for q in grid])
    scores = [np.max(np.tanh((loglik - row) / 4) @ weights) for row in loglik]
    expected = grid[int(np.argmin(scores))]

    def one_prob(policy) -> float:  # noqa: ANN001 - P(a = 1) of a product policy
        logp = policy.next_token_logprobs(np.zeros((1, 1), np.int64), np.zeros((1, 0), np.int64))
        return float(np.exp(logp[0, 1]))

    q = one_prob(RhoEstimator().fit(task, demos, np.random.default_rng(0)))
    assert q == pytest.approx(expected, abs=2e-4)
    assert one_prob(LogLossBC().fit(task, demos)) == pytest.approx(mle, rel=1e-6)
    assert abs(q - mle) > 0.005
    assert hellinger2(q) < 0.75 * hellinger2(mle)


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
    for agent in (RobustBC(), RobustRho(), RhoEstimator(grid_size=21)):
        policy = agent.fit(task, demos, np.random.default_rng(0))
        loaded = load_policy(policy.save(tmp_path / f"{agent.name}.npz"))
        np.testing.assert_array_equal(loaded.token_logprobs(demos.prompts, demos.tokens),
                                      policy.token_logprobs(demos.prompts, demos.tokens))
        assert (loaded.gamma, loaded.info) == (policy.gamma, policy.info)  # gamma kept


def test_robust_rho_picks_gamma_from_its_grid_on_held_out_sequences() -> None:
    """A planted case whose winning gamma is inside the grid (neither end), redone here: the
    same split, one fit per gamma on the fitting part, and the tournament as a double loop
    over the held-out sequences; the policy is the winner refitted on all the data."""
    task = make_task("ntp_envs/ARLinear-v0", horizon=8, vocab_size=3, num_contexts=8,
                     expert_memory=1)
    demos = collect_demonstrations(task, 100, 1)
    policy = RobustRho().fit(task, demos, np.random.default_rng(1))
    grid = [min(4.0**j / 8, 0.25) for j in range(1, -7, -1)]  # 4 / H = 1/2 is capped at 1/4
    assert policy.info["gamma_grid"] == pytest.approx(grid, rel=1e-15)
    order = np.random.default_rng(1).permutation(100)
    held, fitting = demos.subset(order[:20]), demos.subset(order[20:])  # the held-out fifth
    assert policy.info["tournament"] == "demonstrations, n=20"
    loglik = [fit_smoothed(task, fitting, g).sequence_logprob(held.prompts, held.tokens)
              for g in grid]
    scores = [max(sum(np.tanh((loglik[j][i] - loglik[k][i]) / 4) for i in range(20))
                  for j in range(len(grid))) for k in range(len(grid))]
    winner = int(np.argmin(scores))
    assert 0 < winner < len(grid) - 1 and sorted(scores)[1] - scores[winner] > 0.01  # planted
    assert policy.info["gamma"] == grid[winner]
    np.testing.assert_allclose(policy.info["tournament_scores"], scores, rtol=0, atol=1e-12)
    refit = fit_smoothed(task, demos, grid[winner])
    np.testing.assert_allclose(policy.sequence_logprob(demos.prompts, demos.tokens),
                               refit.sequence_logprob(demos.prompts, demos.tokens), rtol=1e-12)


@pytest.mark.parametrize("horizon", [1, 2, 3, 8, 64, 1024, 16384])
def test_default_gamma_grid_reaches_1_over_4096_h_and_stays_below_a_quarter(horizon) -> None:
    grid = RobustRho().gammas(horizon)
    assert min(grid) <= 1 / (4096 * horizon) * (1 + 1e-12)
    assert max(grid) <= 0.25
    assert grid == sorted(set(grid), reverse=True)
    if horizon > 16:  # no cap: the ladder 4 / H, 1 / H, ..., 1 / (4096 H)
        assert grid == pytest.approx([4.0**j / horizon for j in range(1, -7, -1)])


def test_misuse() -> None:
    task = make_task("ntp_envs/MixtureProduct-v0", horizon=16)
    demos = collect_demonstrations(task, 50, 0)
    with pytest.raises(ValueError, match="gamma"):
        RobustRho(gamma_scales=(0.0,)).fit(task, demos)
    with pytest.raises(ValueError, match="gamma"):
        RobustRho(gamma_scales=(32.0,)).fit(task, demos)  # 32 / 16 = 2 is outside (0, 1)
    with pytest.raises(ValueError, match="gamma_scales"):
        RobustRho(gamma_scales=()).fit(task, demos)
    with pytest.raises(ValueError, match="candidate set"):
        rho_select([], demos.prompts, demos.tokens)
    with pytest.raises(ValueError, match="loglik"):
        rho_tournament(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="gamma"):
        smoothed(task.expert, 1.0, task.prompts)


# ------------------------------------------- exact population tournaments (chunked or not)


def _enumerated_scores(task, candidates, chunk_size: int) -> np.ndarray:
    """Tournament scores ``max_k' E_{P*} sum_j tanh((l_k'(o_j) - l_k(o_j)) / 4)`` by summing
    over every sequence of the (small) task, chunk by chunk, in a direct double loop."""
    from evaluation.methods.enumeration import sequences_at

    horizon, vocab = task.horizon, task.vocab_size
    every = sequences_at(np.arange(vocab**horizon), vocab, horizon)
    total = np.zeros((len(candidates), len(candidates)))
    for c, prompt in enumerate(task.prompts.contexts):
        prompts = np.repeat(prompt[None, :], len(every), axis=0)
        weight = np.exp(task.prompts.log_probs[c] + task.expert.sequence_logprob(prompts, every))
        seen = weight > 0
        logps = [cand.token_logprobs(prompts[seen], every[seen]) for cand in candidates]
        for start in range(0, horizon, chunk_size):
            chunk = [lp[:, start : start + chunk_size].sum(axis=1) for lp in logps]
            for k, mine in enumerate(chunk):
                for other, theirs in enumerate(chunk):
                    with np.errstate(invalid="ignore"):
                        psi = np.nan_to_num(np.tanh((theirs - mine) / 4), nan=0.0)
                    total[k, other] += weight[seen] @ psi
    return total.max(axis=1)


def _candidates(env: str, task):
    if env == "ntp_envs/FiniteClassBarrier-v0":
        return [FiniteMemberPolicy(task, i, g) for i in (0, 1) for g in (0.0, 0.2)]
    if env == "ntp_envs/MixtureProduct-v0":
        return [LinearSoftmaxPolicy(task, np.array([0.0, x]), g)
                for x in (-1.5, -0.2, 0.4) for g in (0.0, 0.3)]
    return RhoEstimator().candidates(task, None)  # ARLinear: LogLossBC + RobustRho fits


@pytest.mark.parametrize("env, kwargs", [
    ("ntp_envs/FiniteClassBarrier-v0", {"horizon": 7, "event_prob": 0.05, "bias": 0.2}),
    ("ntp_envs/MixtureProduct-v0", {"horizon": 9}),
    ("ntp_envs/ARLinear-v0", {"horizon": 6, "num_contexts": 2}),
])
@pytest.mark.parametrize("chunk_size", [1, 2, 3, None])
def test_exact_population_statistics_match_enumeration(env, kwargs, chunk_size) -> None:
    task = make_task(env, **kwargs)
    k = task.horizon if chunk_size is None else chunk_size
    candidates = _candidates(env, task)
    statistics = population_statistics(candidates, task, k)
    assert statistics is not None
    _, scores = rho_tournament(*statistics)
    np.testing.assert_allclose(scores, _enumerated_scores(task, candidates, k), rtol=1e-7,
                               atol=1e-10)


def test_population_tournaments_say_exact_or_sampled(monkeypatch) -> None:
    barrier = make_task("ntp_envs/FiniteClassBarrier-v0", horizon=64, event_prob=1e-3)
    mixture = make_task("ntp_envs/MixtureProduct-v0", horizon=256)
    for task in (barrier, mixture):
        for agent in (RobustRho(), RhoEstimator(grid_size=21), ChunkRho(chunk_size=8)):
            assert agent.fit(task, None).info["tournament"] == "exact"
    exact = RhoEstimator().fit(barrier, None)
    monkeypatch.setattr("agents.tournament.MAX_ATOMS", 4)  # the atoms outgrow the cap
    sampled = RhoEstimator(population_samples=3000).fit(barrier, None, np.random.default_rng(0))
    assert sampled.info["tournament"] == "sampled, n=3000"
    assert sampled.info["member"] == exact.info["member"] == "rare_event"


def test_chunk_rho_with_k_h_is_rho() -> None:
    for env, kwargs in (("ntp_envs/FiniteClassBarrier-v0", {"event_prob": 1e-2, "bias": 0.1}),
                        ("ntp_envs/MixtureProduct-v0", {"weight": 0.3}),
                        ("ntp_envs/ARLinear-v0", {})):
        task = make_task(env, horizon=12, **kwargs)
        for demos in (None, collect_demonstrations(task, 400, 3)):
            rho = RhoEstimator(grid_size=41).fit(task, demos)
            whole = ChunkRho(grid_size=41, chunk_size=12).fit(task, demos)
            assert whole.info["tournament"] == rho.info["tournament"]
            assert whole.info["tournament_score"] == pytest.approx(
                rho.info["tournament_score"], rel=1e-12, abs=1e-12)
            np.testing.assert_array_equal(whole.arrays()["gamma"], rho.arrays()["gamma"])
            key = "index" if "index" in rho.arrays() else "theta"
            np.testing.assert_allclose(whole.arrays()[key], rho.arrays()[key], rtol=1e-12)


def test_grid_refinement_keeps_the_coarse_grid_among_the_competitors(monkeypatch) -> None:
    seen: list[np.ndarray] = []
    winner = TournamentSource.winner

    def spy(self, candidates, start=None):
        seen.append(np.array([c.theta[1] for c in candidates]))
        return winner(self, candidates, start)

    monkeypatch.setattr(TournamentSource, "winner", spy)
    task = make_task("ntp_envs/MixtureProduct-v0", horizon=1024, weight=0.1, p0=0.5, p1=0.9)
    policy = RhoEstimator(grid_size=101).fit(task, collect_demonstrations(task, 2000, 0))
    coarse = np.linspace(-12, 12, 101)
    assert len(seen) == 3 and np.array_equal(seen[0], coarse)
    for before, after in zip(seen, seen[1:], strict=False):
        assert np.isin(before, after).all()  # every earlier point competes again
        assert len(after) > len(before)
    assert policy.theta[1] in seen[-1] and policy.info["candidates"] == 303


def test_chunk_rho_misuse() -> None:
    task = make_task("ntp_envs/MixtureProduct-v0", horizon=8)
    for name in ("chunk-rho:0", "chunk-rho:-2"):
        with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
            make_agent(name)
    with pytest.raises(ValueError, match="chunk-rho:K with an integer K"):
        make_agent("chunk-rho:two")
    with pytest.raises(ValueError, match=r"chunk_size must lie in \[1, H = 8\]"):
        make_agent("chunk-rho:9").fit(task, None)
    assert make_agent("chunk-rho:300").chunk_size == 300  # K = H is checked against the task
