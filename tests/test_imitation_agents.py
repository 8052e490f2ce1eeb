"""imitation's BC and DAgger as agents: the SB3 policy's law through the sequence-model
protocol, exact/Monte Carlo scoring, pickle-free save/load, seeding, misuse, and a sweep
with ``--agents logloss,imitation-bc,dagger``."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from agents import LogLossBC, agent_names, load_policy, make_agent
from agents.imitation_agents import DAgger, ImitationBC
from agents.sb3_policy import NeuralPolicy, as_sb3_policy
from evaluation.cli import main
from evaluation.divergences import divergence
from evaluation.methods.enumeration import sequences_at
from evaluation.metrics.returns import expected_return
from experts import collect_demonstrations
from ntp_envs import make_task
from ntp_envs.base import encode_observations
from ntp_envs.vector import SequenceVecEnv

AR_LINEAR = "ntp_envs/ARLinear-v0"


def all_sequences(task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """Every (prompt, sequence) pair of a finite prompt law, with ``log mu(prompt)``."""
    n_seq = task.vocab_size**task.horizon
    flat = np.arange(task.prompts.num_contexts * n_seq)
    ctx = flat // n_seq
    return (task.prompts.contexts[ctx], sequences_at(flat % n_seq, task.vocab_size,
                                                     task.horizon), task.prompts.log_probs[ctx])


def brute_force_divergences(task, policy: NeuralPolicy) -> dict[str, float]:  # noqa: ANN001
    """``sum (sqrt p - sqrt q)^2``, ``sum p log(p / q)`` and ``sum |p - q| / 2`` over every
    sequence, with ``q`` a product of the SB3 policy's own action probabilities (not the
    sequence-model protocol the evaluator uses)."""
    prompts, tokens, log_mu = all_sequences(task)
    q = np.exp(log_mu)
    for h in range(task.horizon):
        obs = th.as_tensor(encode_observations(task, prompts, tokens[:, :h]))
        with th.no_grad():
            probs = policy.sb3_policy.get_distribution(obs).distribution.probs.double().numpy()
        q = q * probs[np.arange(len(tokens)), tokens[:, h]]
    p = np.exp(log_mu + task.expert.sequence_logprob(prompts, tokens))
    return {"hellinger2": float(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)),
            "kl": float(np.sum(p * np.log(p / q))), "tv": float(0.5 * np.abs(p - q).sum())}


def assert_matches_brute_force(task, policy: NeuralPolicy) -> None:  # noqa: ANN001
    exact = divergence(task.expert, policy, task.prompts)
    assert exact.method == "enumerate" and exact.hellinger2_stderr == 0.0
    for name, truth in brute_force_divergences(task, policy).items():
        assert abs(getattr(exact, name) - truth) < 1e-6 * max(1.0, truth), (name, truth)


@pytest.fixture(scope="module")
def tiny() -> dict:
    task = make_task(AR_LINEAR, horizon=4)
    demos = collect_demonstrations(task, 300, seed=0)
    policy = ImitationBC(n_epochs=5).fit(task, demos, np.random.default_rng(0))
    return {"task": task, "demos": demos, "policy": policy}


def test_agents_are_registered() -> None:
    assert {"logloss", "imitation-bc", "dagger"} <= set(agent_names())
    assert isinstance(make_agent("imitation-bc"), ImitationBC)
    assert isinstance(make_agent("dagger"), DAgger)


def test_policy_law_is_the_sb3_action_distribution(tiny: dict) -> None:
    task, policy = tiny["task"], tiny["policy"]
    assert isinstance(policy, NeuralPolicy) and policy.info["agent"] == "imitation-bc"
    prompts, tokens = task.sample_demonstrations(50, np.random.default_rng(1))
    for h in range(task.horizon):
        logp = policy.next_token_logprobs(prompts, tokens[:, :h])
        assert logp.dtype == np.float64 and logp.shape == (50, task.vocab_size)
        np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=0, atol=1e-12)
        obs = th.as_tensor(encode_observations(task, prompts, tokens[:, :h]))
        with th.no_grad():
            probs = policy.sb3_policy.get_distribution(obs).distribution.probs.numpy()
        np.testing.assert_allclose(np.exp(logp), probs, rtol=1e-5, atol=1e-6)
        # SB3's own evaluate_actions gives the same log-likelihood of the expert's token
        _, sb3_logp, _ = policy.sb3_policy.evaluate_actions(obs, th.as_tensor(tokens[:, h]))
        np.testing.assert_allclose(logp[np.arange(50), tokens[:, h]], sb3_logp.detach().numpy(),
                                   rtol=1e-5, atol=1e-5)
    # the batched whole-sequence path agrees with position-by-position
    by_position = np.stack([policy.next_token_logprobs(prompts, tokens[:, :h])[
        np.arange(50), tokens[:, h]] for h in range(task.horizon)], axis=1)
    np.testing.assert_allclose(policy.token_logprobs(prompts, tokens), by_position,
                               rtol=0, atol=1e-12)


def test_evaluator_scores_neural_policies(tiny: dict) -> None:
    task, policy = tiny["task"], tiny["policy"]
    assert_matches_brute_force(task, policy)
    exact = divergence(task.expert, policy, task.prompts)
    estimate = divergence(task.expert, policy, task.prompts, method="monte_carlo",
                          n_samples=20_000, rng=0)
    assert estimate.hellinger2_stderr > 0
    assert abs(estimate.hellinger2 - exact.hellinger2) < 4 * estimate.hellinger2_stderr
    assert abs(estimate.kl - exact.kl) < 4 * estimate.kl_stderr


def test_monte_carlo_at_larger_horizon() -> None:
    task = make_task(AR_LINEAR, horizon=13)  # 8192 sequences per prompt: auto samples
    policy = ImitationBC(n_epochs=2).fit(task, collect_demonstrations(task, 200, seed=0))
    result = divergence(task.expert, policy, task.prompts, n_samples=2000, rng=0)
    assert result.method == "monte_carlo" and result.hellinger2_stderr > 0
    exact = divergence(task.expert, policy, task.prompts, method="enumerate")
    for name in ("hellinger2", "kl", "tv"):
        est, se = getattr(result, name), getattr(result, f"{name}_stderr")
        assert abs(est - getattr(exact, name)) < 4 * se, name


def test_sb3_evaluation_of_the_expert_estimates_its_exact_return() -> None:
    # the expert's reward is its own token log-probability: J(pi*) = -entropy(P*), summed
    # here over every sequence, independently of evaluation.metrics.returns
    task = make_task(AR_LINEAR, horizon=4)
    prompts, tokens, log_mu = all_sequences(task)
    log_p = task.expert.sequence_logprob(prompts, tokens)
    minus_entropy = float(np.sum(np.exp(log_mu + log_p) * log_p))
    assert abs(expected_return(task, task.expert).mean - minus_entropy) < 1e-12
    venv = SequenceVecEnv(task, 16)
    venv.seed(2)
    n = 2000
    returns, _ = evaluate_policy(as_sb3_policy(task.expert, task, seed=2), venv,
                                 n_eval_episodes=n, deterministic=False, warn=False,
                                 return_episode_rewards=True)
    assert abs(np.mean(returns) - minus_entropy) < 3 * np.std(returns, ddof=1) / math.sqrt(n)


def test_save_load_round_trip_without_pickle(tiny: dict, tmp_path: Path) -> None:
    task, policy = tiny["task"], tiny["policy"]
    path = policy.save(tmp_path / "bc.npz")
    with np.load(path, allow_pickle=False) as data:
        assert any(name.startswith("state.") for name in data.files)
    loaded = load_policy(path)
    assert isinstance(loaded, NeuralPolicy)
    assert loaded.info["architecture"] == policy.info["architecture"]
    prompts, tokens = task.sample_demonstrations(20, np.random.default_rng(2))
    np.testing.assert_array_equal(loaded.token_logprobs(prompts, tokens),
                                  policy.token_logprobs(prompts, tokens))


def test_corrupt_archives_raise(tiny: dict, tmp_path: Path) -> None:
    policy = tiny["policy"]
    arrays = policy.arrays()
    first = next(iter(arrays))
    cases = {
        "shape": {**arrays, first: arrays[first][:1]},
        "missing": {k: v for k, v in arrays.items() if k != first},
        "nan": {**arrays, first: np.full_like(arrays[first], np.nan)},
    }
    for bad in cases.values():
        with pytest.raises(ValueError):
            NeuralPolicy.from_arrays(policy.task, bad, dict(policy.info))
    with pytest.raises(ValueError, match="architecture"):
        NeuralPolicy.from_arrays(policy.task, arrays, {})
    with pytest.raises(ValueError, match="activation_fn"):
        NeuralPolicy.from_arrays(policy.task, arrays, {"architecture": {
            "net_arch": [64, 64], "activation_fn": "os.system"}})
    path = policy.save(tmp_path / "p.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a valid"):
        load_policy(path)
    assert not zipfile.is_zipfile(path)


def test_fits_are_seeded_and_leave_torch_state_alone(tiny: dict) -> None:
    task, demos = tiny["task"], tiny["demos"]
    threads, state = th.get_num_threads(), th.random.get_rng_state()
    a = ImitationBC(n_epochs=2).fit(task, demos, np.random.default_rng(5))
    b = ImitationBC(n_epochs=2).fit(task, demos, np.random.default_rng(5))
    c = ImitationBC(n_epochs=2).fit(task, demos, np.random.default_rng(6))
    assert th.get_num_threads() == threads
    assert th.equal(th.random.get_rng_state(), state)
    for name, value in a.arrays().items():
        np.testing.assert_array_equal(value, b.arrays()[name])
    assert any(not np.array_equal(v, c.arrays()[k]) for k, v in a.arrays().items())


def test_dagger_queries_the_expert_in_rounds(tiny: dict) -> None:
    task, demos = tiny["task"], tiny["demos"]
    policy = DAgger(rounds=3, n_epochs=3, interactive_fraction=0.2, num_envs=8).fit(
        task, demos, np.random.default_rng(0))
    info = policy.info
    assert info["agent"] == "dagger" and info["rounds"] == 3
    per_round = math.ceil(math.ceil(0.2 * len(demos)) / 3)  # 20 -> rounded up to 8 envs: 24
    assert info["interactive_sequences"] == 3 * math.ceil(per_round / 8) * 8
    assert info["expert_queries"] == info["interactive_sequences"] * task.horizon
    assert_matches_brute_force(task, policy)


@pytest.mark.parametrize("agent", [ImitationBC(), DAgger()], ids=["imitation-bc", "dagger"])
def test_population_fit_is_rejected(agent, tiny: dict) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="population"):
        agent.fit(tiny["task"], None)


@pytest.mark.parametrize(("agent", "name"), [
    (ImitationBC(n_epochs=0), "n_epochs"), (ImitationBC(batch_size=0), "batch_size"),
    (ImitationBC(learning_rate=0.0), "learning_rate"), (ImitationBC(net_arch=(0,)), "net_arch"),
    (ImitationBC(activation_fn="Sigmoidal"), "activation_fn"),
    (ImitationBC(ent_weight=-1.0), "ent_weight"), (DAgger(rounds=0), "rounds"),
    (DAgger(interactive_fraction=0.0), "interactive_fraction"), (DAgger(num_envs=0), "num_envs"),
])
def test_bad_hyperparameters_raise(agent, name: str, tiny: dict) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=name):
        agent.fit(tiny["task"], tiny["demos"])


def test_demonstrations_of_another_task_raise(tiny: dict) -> None:
    other = collect_demonstrations(make_task(AR_LINEAR, horizon=5), 10, seed=0)
    with pytest.raises(ValueError, match="demonstrations"):
        ImitationBC().fit(tiny["task"], other)


def test_sweep_with_logloss_imitation_bc_and_dagger(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "--env", AR_LINEAR, "--env-kwargs", '{"misspecification": 0.5}',
            "--agents", "logloss,imitation-bc,dagger", "--horizons", "4", "--seeds", "1",
            "--n-train", "200", "--eval-samples", "2000", "--oracle-starts", "4", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame["agent"]) == ["dagger", "imitation-bc", "logloss"]
    assert (frame["status"] == "ok").all()
    assert (frame["eval_method"] == "enumerate").all()  # V**H = 16: exact for neural ones too
    row = frame.set_index("agent").loc["logloss"]
    # the logloss row is the fit on its seed's demonstrations (convex: one answer), scored
    task = make_task(AR_LINEAR, misspecification=0.5, horizon=4)
    rng = np.random.default_rng([0, 4])
    fitted = LogLossBC().fit(task, collect_demonstrations(task, 200, rng), rng)
    direct = divergence(task.expert, fitted, task.prompts).hellinger2
    assert abs(row["hellinger2"] - direct) < 1e-6 * direct
    # the best in class is a minimum over a class LogLossBC's fit belongs to: C_apx >= 1
    assert row["best_in_class_hellinger2"] <= row["hellinger2"] * (1 + 1e-9)
    info = frame.set_index("agent")["agent_info"]
    assert '"expert_queries"' in info["dagger"] and '"architecture"' in info["imitation-bc"]
