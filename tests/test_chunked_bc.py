"""ChunkedBC (``chunk:K``): the chunk law, its token conditionals, the exact chunk recursion,
the compute/statistics tradeoff on exact quantities, misuse, storage and the experiment."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax

from agents import ChunkedBC, ChunkKR, LogLossBC, agent_names, load_policy, make_agent
from agents.chunk_kr import project_simplex_floor
from agents.chunked_bc import chunk_class
from evaluation import divergence
from evaluation.bench.analysis import chunk_size
from evaluation.bench.store import ResultStore
from evaluation.bench.sweep import SweepConfig, run_sweep
from evaluation.cli import main as cli_main
from evaluation.experiments.chunking import EXPERIMENT as CHUNKING
from evaluation.experiments.chunking import chunking_table
from evaluation.experiments.presets import PRESETS
from evaluation.oracle import best_in_class
from experts import ExpertPolicy
from ntp_envs import make_task
from ntp_envs.chunk_tables import (
    MAX_CHUNK_OUTCOMES,
    ChunkModel,
    ChunkTables,
    chunk_codes,
    chunk_tokens,
    finite_state_chunk_logprobs,
)
from ntp_envs.sequence_model import FinitePrompts, FiniteStateModel, FiniteStateTables

AR = "ntp_envs/ARLinear-v0"
MIX = "ntp_envs/MixtureProduct-v0"
BARRIER = "ntp_envs/FiniteClassBarrier-v0"


def demos(task, n: int, seed: int) -> SimpleNamespace:
    prompts, tokens = task.sample_demonstrations(n, np.random.default_rng(seed))
    return SimpleNamespace(prompts=prompts, tokens=tokens)


def random_model(rng, vocab: int, k: int, memory: int, horizon: int, contexts: int,
                 positions: int) -> ChunkModel:
    n_full, rest = divmod(horizon, k)
    logq = log_softmax(2 * rng.normal(size=(contexts, min(positions, n_full), vocab**memory,
                                            vocab**k)), axis=-1)
    last = (log_softmax(2 * rng.normal(size=(contexts, vocab**memory, vocab**rest)), axis=-1)
            if rest else None)
    prompts = FinitePrompts(np.arange(contexts)[:, None],
                            log_softmax(rng.normal(size=contexts)))
    return ChunkModel(ChunkTables(logq, last, k, memory, horizon, vocab), prompts)


# ------------------------------------------------------------------------ K = 1 = NTP


@pytest.mark.parametrize("env_id, kwargs", [
    (AR, {"horizon": 12}),
    (AR, {"horizon": 12, "feature_dim": 5, "vocab_size": 3}),
    (MIX, {"horizon": 16}),
])
@pytest.mark.parametrize("population", [True, False])
def test_chunk_size_one_is_logloss_bc(env_id, kwargs, population) -> None:
    task = make_task(env_id, **kwargs)
    data = None if population else demos(task, 300, 0)
    chunked = make_agent("chunk:1").fit(task, data)
    ntp = LogLossBC().fit(task, data)
    assert chunked.info["converged"] and chunked.info["chunk_size"] == 1
    np.testing.assert_allclose(chunked.finite_state().logp, ntp.finite_state().logp,
                               rtol=0, atol=1e-9)
    prompts, tokens = task.sample_demonstrations(50, np.random.default_rng(1))
    np.testing.assert_allclose(chunked.sequence_logprob(prompts, tokens),
                               ntp.sequence_logprob(prompts, tokens), rtol=0, atol=1e-8)
    d_chunk = divergence(task.expert, chunked, task.prompts, method="chunk")
    d_ntp = divergence(task.expert, ntp, task.prompts)
    assert d_chunk.hellinger2 == pytest.approx(d_ntp.hellinger2, rel=1e-8, abs=1e-12)


# ------------------------------------------------------- token conditionals of a chunk law


@pytest.mark.parametrize("vocab, k, memory, horizon", [(3, 3, 1, 8), (2, 4, 2, 10),
                                                       (2, 5, 0, 5)])
def test_token_conditionals_normalise_and_reproduce_chunk_law(vocab, k, memory,
                                                              horizon) -> None:
    model = random_model(np.random.default_rng(vocab + k), vocab, k, memory, horizon, 2, 2)
    tables = model.tables
    for i in range(tables.num_chunks):
        length = tables.chunk_length(i)
        cond = tables.token_conditionals(i)
        assert len(cond) == length
        for table in cond:  # every row (c, s, prefix) is a law over the next token
            np.testing.assert_allclose(np.exp(table).sum(axis=-1), 1.0, atol=1e-12)
        outcomes = chunk_tokens(np.arange(vocab**length), vocab, length)  # (V^L, L)
        product = np.zeros((tables.num_contexts, tables.num_states, vocab**length))
        for j, table in enumerate(cond):
            prefix = chunk_codes(outcomes[:, :j], vocab)
            product += table[:, :, prefix, outcomes[:, j]]
        np.testing.assert_allclose(product, tables.chunk_law(i), atol=1e-10)


def test_chunk_model_likelihoods_agree() -> None:
    rng = np.random.default_rng(3)
    model = random_model(rng, 3, 2, 1, 7, 2, 2)
    prompts = model.prompts.contexts[rng.integers(0, 2, 40)]
    tokens = model.sample(prompts, rng)
    per_token = model.token_logprobs(prompts, tokens)
    np.testing.assert_allclose(per_token.sum(axis=1), model.sequence_logprob(prompts, tokens),
                               atol=1e-12)
    for h in range(model.horizon):
        step = model.next_token_logprobs(prompts, tokens[:, :h])
        np.testing.assert_allclose(np.exp(step).sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(step[np.arange(40), tokens[:, h]], per_token[:, h],
                                   atol=1e-12)
    # the finite-state form (memory m + K - 1, T = H) is the same law
    tables = model.finite_state()
    assert tables.memory == 2 and tables.num_positions == 7
    np.testing.assert_allclose(FiniteStateModel(tables, model.prompts).sequence_logprob(
        prompts, tokens), model.sequence_logprob(prompts, tokens), atol=1e-12)
    # every sequence: total probability one per context
    from evaluation.methods.enumeration import sequences_at

    every = sequences_at(np.arange(3**7), 3, 7)
    for c in range(2):
        total = np.exp(model.sequence_logprob(np.full((len(every), 1), c), every)).sum()
        assert total == pytest.approx(1.0, abs=1e-12)


def test_sampling_follows_the_chunk_law() -> None:
    rng = np.random.default_rng(5)
    model = random_model(rng, 2, 3, 1, 7, 1, 2)
    n = 60_000
    tokens = model.sample(np.zeros((n, 1), dtype=np.int64), rng)
    # chunk 1 (full, all lags present) given the last token of chunk 0
    state, code = tokens[:, 2], chunk_codes(tokens[:, 3:6], 2)
    law = np.exp(model.tables.chunk_law(1)[0])
    for s in (0, 1):
        rows = state == s
        freq = np.bincount(code[rows], minlength=8) / rows.sum()
        se = np.sqrt(law[s] * (1 - law[s]) / rows.sum())
        assert (np.abs(freq - law[s]) < 5 * se + 1e-4).all()
    last = np.bincount(tokens[:, 6], minlength=2) / n  # short last chunk (one token)
    marginal = np.exp(model.tables.last[0]).T @ np.bincount(tokens[:, 5], minlength=2) / n
    assert np.abs(last - marginal).max() < 0.01


# ----------------------------------------------------------- the exact chunk recursion


@pytest.mark.parametrize("vocab, k, memory, horizon, expert_memory", [
    (3, 2, 1, 7, 2), (2, 3, 2, 8, 1), (2, 1, 1, 9, 3), (2, 2, 3, 9, 1), (2, 4, 0, 10, 0)])
def test_chunk_recursion_matches_enumeration_and_token_dp(vocab, k, memory, horizon,
                                                         expert_memory) -> None:
    rng = np.random.default_rng(horizon * 10 + k)
    learner = random_model(rng, vocab, k, memory, horizon, 2, 2)
    logp = log_softmax(rng.normal(size=(2, 3, vocab**expert_memory, vocab)), axis=-1)
    expert = FiniteStateModel(FiniteStateTables(logp, expert_memory, horizon), learner.prompts)
    results = [divergence(expert, learner, learner.prompts, method=m)
               for m in ("enumerate", "chunk", "dp")]
    for other in results[1:]:
        assert other.hellinger2 == pytest.approx(results[0].hellinger2, rel=1e-10)
        assert other.kl == pytest.approx(results[0].kl, rel=1e-10)
    mc = divergence(expert, learner, learner.prompts, method="monte_carlo", n_samples=40_000)
    assert abs(mc.hellinger2 - results[0].hellinger2) < 4 * mc.hellinger2_stderr + 1e-3


@pytest.mark.parametrize("k", [1, 3, 4, 10])
def test_chunk_recursion_with_a_count_law_expert(k) -> None:
    task = make_task(MIX, horizon=10)
    rng = np.random.default_rng(k)
    logq = log_softmax(rng.normal(size=(1, 1, 1, 2**k)), axis=-1)
    last = log_softmax(rng.normal(size=(1, 1, 2 ** (10 % k))), axis=-1) if 10 % k else None
    learner = ChunkModel(ChunkTables(logq, last, k, 0, 10, 2), task.prompts)
    exact = divergence(task.expert, learner, task.prompts, method="enumerate")
    chunk = divergence(task.expert, learner, task.prompts, method="chunk")
    assert chunk.hellinger2 == pytest.approx(exact.hellinger2, rel=1e-10)
    assert chunk.kl == pytest.approx(exact.kl, rel=1e-10)


def test_fitted_policies_are_scored_exactly_on_every_env() -> None:
    for env_id, k in ((AR, 4), (MIX, 8), (BARRIER, 4)):
        task = make_task(env_id, horizon=64)
        policy = make_agent(f"chunk:{k}").fit(task, demos(task, 200, 0))
        result = divergence(task.expert, policy, task.prompts)
        assert result.method == "chunk" and result.hellinger2_stderr == 0.0
        mc = divergence(task.expert, policy, task.prompts, method="monte_carlo",
                        n_samples=20_000)
        assert abs(mc.hellinger2 - result.hellinger2) < 4 * mc.hellinger2_stderr + 1e-3


# ------------------------------------------------ the compute/statistics tradeoff (exact)


def _population(env_id: str, horizon: int, sizes: list[int]) -> dict[int, object]:
    task = make_task(env_id, horizon=horizon)
    return task, {k: divergence(task.expert, make_agent(f"chunk:{k}").fit(task, None),
                                task.prompts) for k in sizes}


def test_barrier_c_apx_falls_like_h_over_k() -> None:
    task, results = _population(BARRIER, 256, [1, 2, 4, 8])  # V = 3: 3**8 outcomes
    best = best_in_class(task).hellinger2
    c_apx = [results[k].hellinger2 / best for k in (1, 2, 4, 8)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(c_apx, c_apx[1:], strict=False))
    assert c_apx[-1] <= c_apx[0] / 2
    # independent chunks (m = 0): the coin sequences keep (1 - rho)^((H / K + 1) / 2) of
    # their overlap, so D^2 ~ rho (H / K + 1) against the best 2 rho: C_apx ~ (H / K + 1) / 2
    for k, value in zip((1, 2, 4, 8), c_apx, strict=True):
        assert value == pytest.approx((256 / k + 1) / 2, rel=0.02)


def test_ar_linear_divergence_falls_with_k() -> None:
    # at fixed H the best in class is one number, so C_apx(K) / C_apx(1) = D^2(K) / D^2(1)
    _, results = _population(AR, 256, [1, 2, 4, 8])
    d2 = [results[k].hellinger2 for k in (1, 2, 4, 8)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(d2, d2[1:], strict=False))
    assert d2[-1] <= d2[0] / 2


def test_mixture_product_kl_falls_with_k_and_one_chunk_is_exact() -> None:
    # chunk classes nest (K | K'), so the KL projection improves with K ...
    _, results = _population(MIX, 256, [1, 2, 4, 8, 16])
    kl = [results[k].kl for k in (1, 2, 4, 8, 16)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(kl, kl[1:], strict=False))
    assert kl[-1] <= kl[0] / 2
    # ... and one chunk of K = H tokens is the expert's law itself
    task = make_task(MIX, horizon=16)
    one = divergence(task.expert, make_agent("chunk:16").fit(task, None), task.prompts)
    assert one.hellinger2 < 1e-12 and one.kl < 1e-10


def test_mixture_product_chunk_log_loss_rises_before_it_falls() -> None:
    # Issue 5 expected C_apx at K = 16 to be at most half of K = 1's; it is not (issue 13):
    # memory-0 chunks are independent while the expert's mixture component persists over
    # the whole sequence, so chunk-level log loss can *raise* C_apx with K. What holds:
    task, results = _population(MIX, 256, [1, 2, 4, 8, 16])
    best = best_in_class(task).hellinger2
    c_apx = {k: results[k].hellinger2 / best for k in (1, 2, 4, 8, 16)}
    ntp = divergence(task.expert, LogLossBC().fit(task, None), task.prompts).hellinger2 / best
    assert c_apx[1] == pytest.approx(ntp, rel=1e-8)  # K = 1 is NTP here (linear-softmax class)
    assert c_apx[8] > 2 * c_apx[1]  # 16.8 vs 7.05: it rises
    assert c_apx[16] < c_apx[8]  # ... before it falls
    for k, value in c_apx.items():  # and stays below the ChunkKR guarantee's H / K scale
        assert value <= 256 / k


# --------------------------------------------------------------------------- misuse


def _peak_bytes(call) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            call()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, str(info.value)


@pytest.mark.parametrize("env_id, horizon, k, words", [
    (MIX, 8, 9, "[1, H = 8]"),  # K > H
    (MIX, 64, 17, "V**K <= 65536"),  # 2**17 outcomes
    (BARRIER, 64, 11, "[1, 10] for V = 3"),  # 3**11 outcomes
])
def test_bad_chunk_sizes_fail_before_allocating(env_id, horizon, k, words) -> None:
    task = make_task(env_id, horizon=horizon)
    assert chunk_class(task, k - 1).num_outcomes <= MAX_CHUNK_OUTCOMES  # the largest valid K
    peak, message = _peak_bytes(lambda: ChunkedBC(k).fit(task, None))
    assert "chunk_size" in message and words in message
    assert peak < 1_000_000  # nothing of size V**K was allocated


def test_bad_agent_names_and_memory() -> None:
    for name in ("chunk:0", "chunk:-3"):
        with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
            make_agent(name)
    with pytest.raises(ValueError, match="chunk:K with an integer K"):
        make_agent("chunk:four")
    with pytest.raises(ValueError, match="chunk_size must be an integer"):
        ChunkedBC(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory must be an integer in"):
        ChunkedBC(2, memory=-1)
    task = make_task(AR, horizon=64, expert_memory=12, learner_memory=0)
    peak, message = _peak_bytes(lambda: ChunkedBC(16, memory=10).fit(task, None))
    assert "memory cap" in message and peak < 1_000_000
    assert make_agent("chunk:7").chunk_size == 7 and "chunk:16" in agent_names()
    assert all(name in agent_names() for name in ("chunk:1", "chunk:4"))


def test_policy_acts_in_the_gym_env_chunk_by_chunk_law() -> None:
    env = gym.make(MIX, horizon=6)
    task = env.unwrapped.task
    policy = make_agent("chunk:3").fit(task, demos(task, 500, 4))
    actor = ExpertPolicy(task, seed=0, model=policy)
    n = 3000
    codes = np.empty(n, dtype=np.int64)
    for episode in range(n):
        obs, _ = env.reset(seed=episode)
        tokens = []
        for _ in range(6):
            action, _ = actor.predict(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            tokens.append(int(action))
        assert terminated and not truncated
        codes[episode] = chunk_codes(np.array(tokens[:3]), 2)
    law = np.exp(policy.chunk_tables().chunk_law(0)[0, 0])  # first chunk: no window
    freq = np.bincount(codes, minlength=8) / n
    assert (np.abs(freq - law) < 5 * np.sqrt(law * (1 - law) / n) + 1e-3).all()


# ---------------------------------------------------------------- storage and commands


def test_save_and_load_round_trip(tmp_path) -> None:
    task = make_task(AR, horizon=10, num_contexts=3)
    policy = make_agent("chunk:3").fit(task, demos(task, 400, 2))  # last chunk: 1 token
    path = policy.save(tmp_path / "chunk.npz")
    loaded = load_policy(path)
    assert type(loaded).__name__ == "ChunkPolicy" and loaded.info == policy.info
    np.testing.assert_array_equal(loaded.chunk_tables().logq, policy.chunk_tables().logq)
    np.testing.assert_array_equal(loaded.chunk_tables().last, policy.chunk_tables().last)
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["theta_last"] = arrays["theta_last"][:-1]
    with pytest.raises(ValueError, match="theta_last must be"):
        type(policy).from_arrays(task, arrays, {})


def test_cli_accepts_chunk_agents(tmp_path) -> None:
    out = tmp_path / "cli"
    argv = ["sweep", "--env", MIX, "--agents", "chunk:1,chunk:4", "--horizons", "16,32",
            "--seeds", "1", "--population", "--oracle-starts", "2", "--quiet",
            "--out", str(out)]
    assert cli_main(argv) == 0
    with ResultStore(out / "results.sqlite") as store:
        frame = store.results()
    assert sorted(frame["agent"]) == ["chunk:1", "chunk:1", "chunk:4", "chunk:4"]
    assert (frame["status"] == "ok").all() and (frame["eval_method"] == "chunk").all()


def test_chunking_preset_and_experiment(tmp_path) -> None:
    for config in PRESETS["chunking"]:  # every chunk:K job of the preset is valid before running
        task = make_task(config.env_id, **config.instances()[0], horizon=config.horizons[0])
        for agent in config.agents:
            parsed = chunk_size(agent)
            if parsed is not None and parsed[0] == "chunk":
                chunk_class(task, parsed[1])
    configs = [SweepConfig(MIX, {}, ("chunk:1", "chunk:2", "chunk:4", "logloss"), (16,),
                           seeds=1, population=True, oracle_starts=2)]
    with ResultStore(tmp_path / "results.sqlite") as store:
        keys = run_sweep(configs, store, progress=False)
        frame = store.results(keys)
        table = chunking_table(frame)
        assert list(table["K"]) == [1, 2, 4]  # logloss is not a chunk agent
        assert table["c_apx"].notna().all() and (table["fit_seconds"] > 0).all()
        np.testing.assert_allclose(table["c_apx"], frame.set_index("agent").loc[
            ["chunk:1", "chunk:2", "chunk:4"], "hellinger2"].to_numpy()
            / frame["best_in_class_hellinger2"].iloc[0])
        tables, _ = CHUNKING.analyse(frame, tmp_path)
        assert [t.name for t in tables] == ["per_instance"]
        assert list(tables[0].frame["K"]) == ["1", "2", "4"]
        run_sweep(configs, store, progress=False)  # resumes: same rows, nothing refitted
        pd.testing.assert_frame_equal(store.results(keys), frame)


# ---------------------------------------------------- chunk-kr: ridge regression of chunks


def _planted_task():
    # one context, memory-1 expert and window: the lifted features [1, onehot(last token)]
    # (lag absent before the sequence) have full rank on the rows, so every chunk law of
    # the expert is linear in them: chunk-kr is well-specified
    return make_task(AR, horizon=10, vocab_size=3, num_contexts=1, expert_memory=1,
                     learner_memory=1, misspecification=1.0)


def _expert_chunk_laws(task, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    expert = task.expert.finite_state()
    first = finite_state_chunk_logprobs(expert, 0, k)[0, 0]  # chunk 0: no window yet
    later = finite_state_chunk_logprobs(expert, k, k)[0]  # chunks >= 1, given the last token
    rest = task.horizon % k
    last = finite_state_chunk_logprobs(expert, task.horizon - rest, rest)[0] if rest else None
    return first, later, last


@pytest.mark.parametrize("k", [2, 3])
def test_chunk_kr_recovers_a_well_specified_chunk_law(k) -> None:
    task = _planted_task()
    first, later, last = _expert_chunk_laws(task, k)
    population = make_agent(f"chunk-kr:{k}").fit(task, None).chunk_tables()
    np.testing.assert_allclose(np.exp(population.logq[0, 0, 0]), np.exp(first), atol=1e-7)
    np.testing.assert_allclose(np.exp(population.logq[0, 1]), np.exp(later), atol=1e-7)
    if last is not None:
        np.testing.assert_allclose(np.exp(population.last[0]), np.exp(last), atol=1e-7)
    n = 20_000
    sampled = make_agent(f"chunk-kr:{k}").fit(task, demos(task, n, 7)).chunk_tables()
    law = np.exp(later)  # (V, V^K); each row is seen about n (H / K - 1) / V times
    visits = n * (task.horizon // k - 1) / 3
    se = np.sqrt(law * (1 - law) / visits)
    assert (np.abs(np.exp(sampled.logq[0, 1]) - law) < 6 * se + 2e-3).all()
    d = divergence(task.expert, make_agent(f"chunk-kr:{k}").fit(task, None), task.prompts)
    assert d.method == "chunk" and d.hellinger2 < 1e-10


def test_simplex_projection_with_a_floor_is_the_nearest_feasible_law() -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    q = rng.normal(0.2, 0.4, size=(20, 5))
    floor = 0.01
    p = project_simplex_floor(q, floor)
    assert (p >= floor - 1e-15).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    for row, got in zip(q, p, strict=True):
        ref = minimize(lambda x, r=row: ((x - r) ** 2).sum(), np.full(5, 0.2), method="SLSQP",
                       bounds=[(floor, 1.0)] * 5,
                       constraints={"type": "eq", "fun": lambda x: x.sum() - 1.0},
                       options={"ftol": 1e-14, "maxiter": 500})
        np.testing.assert_allclose(got, ref.x, atol=1e-6)


def test_chunk_kr_save_load_and_misuse(tmp_path) -> None:
    task = make_task(AR, horizon=10, num_contexts=3)
    policy = make_agent("chunk-kr:3").fit(task, demos(task, 400, 2))  # last chunk: 1 token
    loaded = load_policy(policy.save(tmp_path / "kr.npz"))
    assert type(loaded).__name__ == "ChunkTablePolicy" and loaded.info == policy.info
    np.testing.assert_array_equal(loaded.chunk_tables().logq, policy.chunk_tables().logq)
    np.testing.assert_array_equal(loaded.chunk_tables().last, policy.chunk_tables().last)
    for name in ("chunk-kr:0", "chunk-kr:-1"):
        with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
            make_agent(name)
    with pytest.raises(ValueError, match=r"chunk_size must lie in \[1, H = 10\]"):
        make_agent("chunk-kr:11").fit(task, None)
    with pytest.raises(ValueError, match="floor must be < 1 / V\\*\\*K"):
        ChunkKR(4, floor=0.1).fit(task, None)
    with pytest.raises(ValueError, match="ridge must be a finite number > 0"):
        ChunkKR(2, ridge=0.0)
