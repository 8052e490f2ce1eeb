"""Fitted policies as SB3 policies (``predict``, ``evaluate_policy``), the expected return,
and a BC-initialised PPO fine-tune that raises the return as expected."""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import BasePolicy

from agents import LogLossBC
from agents.imitation_agents import ImitationBC
from agents.sb3_policy import (
    NeuralPolicy,
    SB3PolicyModel,
    as_sb3_policy,
    bc_initialised_ppo,
    load_sb3_policy,
)
from evaluation.divergences import divergence
from evaluation.metrics.returns import expected_return
from experts import collect_demonstrations
from ntp_envs import make_task
from ntp_envs.base import encode_observations
from ntp_envs.vector import SequenceVecEnv

AR_LINEAR = "ntp_envs/ARLinear-v0"


@pytest.fixture(scope="module")
def fitted() -> dict:
    task = make_task(AR_LINEAR, horizon=6)
    demos = collect_demonstrations(task, 1000, seed=0)
    return {"task": task, "logloss": LogLossBC().fit(task, demos),
            "bc": ImitationBC(n_epochs=10).fit(task, demos, np.random.default_rng(0))}


def test_predict_follows_sb3_semantics(fitted: dict) -> None:
    task, policy = fitted["task"], fitted["logloss"]
    sb3 = as_sb3_policy(policy, seed=0)
    assert isinstance(sb3, BasePolicy)
    venv = SequenceVecEnv(task, 8)
    venv.seed(0)
    obs = venv.reset()
    actions, state = sb3.predict(obs)
    assert actions.shape == (8,) and state is None and venv.action_space.contains(int(actions[0]))
    single, _ = sb3.predict(obs[0])
    assert np.shape(single) == ()
    greedy, _ = sb3.predict(obs, deterministic=True)
    np.testing.assert_array_equal(greedy, policy.next_token_logprobs(obs[:, :1], np.zeros(
        (8, 0), dtype=np.int64)).argmax(axis=1))


@pytest.mark.parametrize("name", ["logloss", "bc"])
def test_evaluate_policy_estimates_the_exact_return(fitted: dict, name: str) -> None:
    task, policy = fitted["task"], fitted[name]
    exact = expected_return(task, policy)
    assert exact.method == "enumerate" and exact.stderr == 0.0
    venv = SequenceVecEnv(task, 16)
    venv.seed(1)
    mean, std = evaluate_policy(as_sb3_policy(policy, seed=1), venv, n_eval_episodes=400,
                                deterministic=False, warn=False)
    assert abs(mean - exact.mean) < 4 * std / np.sqrt(400)


def test_expected_return_enumeration_and_monte_carlo_agree(fitted: dict) -> None:
    task, policy = fitted["task"], fitted["logloss"]
    exact = expected_return(task, policy)
    estimate = expected_return(task, policy, method="monte_carlo", n_samples=20_000, rng=0)
    assert estimate.method == "monte_carlo" and estimate.stderr > 0
    assert abs(estimate.mean - exact.mean) < 4 * estimate.stderr
    # independently: the sum of the expert's token log-probabilities of the policy's samples
    prompts = task.prompts.sample(20_000, np.random.default_rng(3))
    returns = task.expert.token_logprobs(prompts, policy.sample(
        prompts, np.random.default_rng(4))).sum(axis=1)
    assert abs(returns.mean() - exact.mean) < 4 * returns.std() / np.sqrt(len(returns))
    big = make_task(AR_LINEAR, horizon=13)  # 8192 sequences per prompt: auto is Monte Carlo
    assert expected_return(big, big.expert, n_samples=100, rng=0).method == "monte_carlo"


def test_load_sb3_policy(fitted: dict, tmp_path: Path) -> None:
    """The loaded SB3 policy has the saved network's next-token law at every observation:
    the same probabilities, argmax and (same seed) samples as the policy that was saved."""
    task, bc = fitted["task"], fitted["bc"]
    sb3 = load_sb3_policy(bc.save(tmp_path / "bc.npz"), seed=0)
    prompts, tokens = task.sample_demonstrations(50, np.random.default_rng(5))
    obs = np.concatenate([encode_observations(task, prompts, tokens[:, :h])
                          for h in range(task.horizon)])
    saved = np.concatenate([bc.next_token_logprobs(prompts, tokens[:, :h])
                            for h in range(task.horizon)])
    assert saved.std(axis=0).max() > 0.05  # the law moves with the observation: a real check
    np.testing.assert_allclose(np.exp(sb3.expert.action_logprobs(obs)), np.exp(saved),
                               rtol=0, atol=1e-12)
    greedy, _ = sb3.predict(obs, deterministic=True)
    np.testing.assert_array_equal(greedy, saved.argmax(axis=1))
    sampled, _ = sb3.predict(obs)
    np.testing.assert_array_equal(sampled, as_sb3_policy(bc, seed=0).predict(obs)[0])
    venv = SequenceVecEnv(task, 4)
    venv.seed(0)
    mean, _ = evaluate_policy(sb3, venv, n_eval_episodes=8, deterministic=False, warn=False)
    assert np.isfinite(mean)


def test_misuse_raises(fitted: dict) -> None:
    with pytest.raises(ValueError, match="task"):
        as_sb3_policy(fitted["task"].expert)
    with pytest.raises(ValueError, match="NeuralPolicy"):
        bc_initialised_ppo(fitted["logloss"])
    with pytest.raises(ValueError, match="n_samples"):
        expected_return(fitted["task"], fitted["logloss"], n_samples=1)
    with pytest.raises(ValueError, match="method"):
        expected_return(fitted["task"], fitted["logloss"], method="dp")


def test_bc_initialised_ppo_raises_the_return(fitted: dict) -> None:
    """PPO maximises E[log P*(tau)]: from the BC start the exact return must go up, and the
    sequence law moves away from the expert's (mode seeking)."""
    task, bc = fitted["task"], fitted["bc"]
    ppo = bc_initialised_ppo(bc, SequenceVecEnv(task, 16), seed=0, n_steps=64, batch_size=256,
                             n_epochs=10, learning_rate=1e-3, ent_coef=0.0)
    start = NeuralPolicy(task, ppo.policy)
    prompts, tokens = task.sample_demonstrations(30, np.random.default_rng(0))
    np.testing.assert_array_equal(start.token_logprobs(prompts, tokens),
                                  bc.token_logprobs(prompts, tokens))  # starts at BC exactly
    before = expected_return(task, bc).mean
    threads = th.get_num_threads()
    th.set_num_threads(1)  # a 64-wide MLP: one thread is fastest, and the machine is shared
    try:
        ppo.learn(total_timesteps=3072)
    finally:
        th.set_num_threads(threads)
    tuned = NeuralPolicy(task, ppo.policy)
    after = expected_return(task, tuned).mean
    assert after > before + 0.3, (before, after)
    assert divergence(task.expert, tuned, task.prompts).hellinger2 > divergence(
        task.expert, bc, task.prompts).hellinger2


def test_sb3_policy_model_scores_ppo_from_scratch() -> None:
    """PPO trained from scratch on ``gym.make``: SB3PolicyModel's exact D_H^2 equals a brute
    force over every prompt and sequence with probabilities from SB3's ``evaluate_actions``."""
    kwargs = {"horizon": 4, "num_contexts": 2}
    task, env = make_task(AR_LINEAR, **kwargs), gym.make(AR_LINEAR, **kwargs)
    threads = th.get_num_threads()
    th.set_num_threads(1)
    try:
        ppo = PPO("MlpPolicy", env, seed=0, device="cpu", n_steps=64, batch_size=64, n_epochs=2)
        ppo.learn(total_timesteps=128)
    finally:
        th.set_num_threads(threads)
    model = SB3PolicyModel(task, ppo)  # the algorithm, or ppo.policy: the same
    result = divergence(task.expert, model, task.prompts)
    assert result.method == "enumerate"
    sequences = np.array(list(itertools.product(range(task.vocab_size), repeat=task.horizon)))
    brute = 0.0
    for x, log_mu in zip(task.prompts.contexts, task.prompts.log_probs, strict=True):
        prompts = np.repeat(x[None], len(sequences), axis=0)
        log_q = np.zeros(len(sequences))
        for h in range(task.horizon):
            obs = th.as_tensor(encode_observations(task, prompts, sequences[:, :h]))
            with th.no_grad():
                _, logp, _ = ppo.policy.evaluate_actions(obs, th.as_tensor(sequences[:, h]))
            log_q += logp.double().numpy()
        log_p = task.expert.sequence_logprob(prompts, sequences)
        brute += np.exp(log_mu) * np.sum((np.exp(log_p / 2) - np.exp(log_q / 2)) ** 2)
    assert result.hellinger2 == pytest.approx(brute, abs=1e-5)  # SB3 computes in float32
    assert brute > 0.1  # an untrained-ish policy is far from the expert: the check has bite


def test_sb3_policy_model_refuses_policies_without_an_action_distribution() -> None:
    task = make_task(AR_LINEAR, horizon=3)
    env = gym.make(AR_LINEAR, horizon=3)
    dqn = DQN("MlpPolicy", env, device="cpu", learning_starts=0)
    for policy in (dqn, dqn.policy):
        with pytest.raises(ValueError, match=r"ActorCriticPolicy .* got DQNPolicy \(a Q-network"):
            SB3PolicyModel(task, policy)
    with pytest.raises(ValueError, match="ActorCriticPolicy"):
        SB3PolicyModel(task, as_sb3_policy(task.expert, task))  # already a sequence model
    other = PPO("MlpPolicy", gym.make(AR_LINEAR, horizon=4), device="cpu")
    with pytest.raises(ValueError, match="must be the task's env spaces"):
        SB3PolicyModel(task, other)
