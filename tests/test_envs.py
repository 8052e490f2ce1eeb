"""Every registered env against Gymnasium/SB3 checks and common misuse; ARLinear specifics."""

from __future__ import annotations

import functools
import pickle

import gymnasium as gym
import numpy as np
import pytest
from brute_force import enumerated_divergences
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

import ntp_envs
from agents import LogLossBC
from ntp_envs import make_task
from ntp_envs.ar_linear import ARLinearEnv

ENV_IDS = ntp_envs.registered_env_ids()
AR_LINEAR = "ntp_envs/ARLinear-v0"


def _episode(env: gym.Env, seed: int, action_seed: int) -> tuple[list, list]:
    """Observations and rewards of one episode with actions drawn from ``action_seed``."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(action_seed)
    observations, rewards = [obs.copy()], []
    terminated = False
    while not terminated:
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs.copy())
        rewards.append(reward)
    return observations, rewards


def test_registry_is_not_empty() -> None:
    assert AR_LINEAR in ENV_IDS
    for env_id in ENV_IDS:
        assert env_id in gym.registry


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env(env_id: str) -> None:
    sb3_check_env(gym.make(env_id), warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeding_reproduces_and_varies(env_id: str) -> None:
    env = gym.make(env_id)
    obs_a, rew_a = _episode(env, seed=3, action_seed=7)
    obs_b, rew_b = _episode(env, seed=3, action_seed=7)
    assert len(obs_a) == len(obs_b)
    for x, y in zip(obs_a, obs_b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert rew_a == rew_b
    if getattr(env.unwrapped.task.prompts, "num_contexts", 2) == 1:
        return  # a single prompt: the first observation cannot vary with the seed
    first_obs = {tuple(_episode(env, seed=s, action_seed=7)[0][0]) for s in range(12)}
    assert len(first_obs) > 1, "different reset seeds always gave the same prompt"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_episode_contract(env_id: str) -> None:
    env = gym.make(env_id)
    horizon = env.unwrapped.task.horizon
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space
    assert isinstance(info, dict)
    env.action_space.seed(0)
    steps, terminated = 0, False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert obs in env.observation_space
        assert type(reward) is float and np.isfinite(reward)
        assert type(terminated) is bool and type(truncated) is bool
        assert not truncated
        assert terminated == (steps == horizon)
        assert steps <= horizon
    assert steps == horizon
    with pytest.raises(RuntimeError):
        env.unwrapped.step(0)
    env.reset(seed=1)  # a new episode after the end works
    env.step(0)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_before_reset_raises(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    with pytest.raises(RuntimeError):
        env.step(0)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize(
    "action",
    ["vocab", -1, 0.0, np.float64(1.0), np.array([0, 1]), np.zeros((1, 1), dtype=np.int64),
     True, "0"],
    ids=["too-large", "negative", "float", "np-float", "shape-2", "shape-1x1", "bool", "str"],
)
def test_invalid_action_raises(env_id: str, action: object) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    if isinstance(action, str) and action == "vocab":
        action = env.action_space.n
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    env.step(0)  # the episode is still usable


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_valid_action_forms(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    for action in (0, np.int64(1), np.array(0), np.array([1])):
        env.step(action)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"horizon": 0}, "horizon"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"learner_memory": -1}, "learner_memory"),
        ({"learner_memory": 2, "expert_memory": 1}, "expert_memory"),
        ({"misspecification": -0.1}, "misspecification"),
        ({"misspecification": 1.5}, "misspecification"),
        ({"misspecification": float("nan")}, "misspecification"),
        ({"num_contexts": 0}, "num_contexts"),
        ({"feature_dim": 0}, "feature_dim"),
        ({"horizon": 2.5}, "horizon"),
        ({"context_probs": [0.5, 0.5]}, "context_probs"),
        ({"foo": 1}, "foo"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_ar_linear_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        gym.make(AR_LINEAR, **kwargs)


@pytest.mark.parametrize("knob", [0.0, 0.5])
@pytest.mark.parametrize("feature_dim", [None, 3])
@pytest.mark.parametrize(("learner_memory", "expert_memory", "horizon"), [(1, 3, 12), (2, 2, 3)])
def test_ar_linear_is_well_specified_exactly_at_knob_zero(
    knob: float, feature_dim: int | None, learner_memory: int, expert_memory: int, horizon: int
) -> None:
    """Population NTP (the KL projection onto the class, searched from theta = 0) reaches the
    expert's sequence law at knob 0 and not above it; D_H^2 summed over every sequence."""
    task = make_task(AR_LINEAR, misspecification=knob, feature_dim=feature_dim, horizon=horizon,
                     learner_memory=learner_memory, expert_memory=expert_memory, task_seed=5)
    assert (task.well_specified_theta is not None) == (knob == 0.0)
    fit = LogLossBC().fit(task, None)
    hellinger2 = enumerated_divergences(task.expert, fit, task.prompts)["hellinger2"]
    if knob == 0.0:
        assert hellinger2 < 1e-14
    else:
        assert hellinger2 > 1e-3


def test_ar_linear_task_is_a_function_of_task_seed() -> None:
    a, b = make_task(AR_LINEAR, task_seed=1), make_task(AR_LINEAR, task_seed=1)
    c = make_task(AR_LINEAR, task_seed=2)
    np.testing.assert_array_equal(a.expert.finite_state().logp, b.expert.finite_state().logp)
    assert not np.allclose(a.expert.finite_state().logp, c.expert.finite_state().logp)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_make_vec_env_builds_the_env(env_id: str) -> None:
    # SB3 2.2 asks for render_mode="rgb_array" and falls back only on TypeError
    with pytest.warns(UserWarning, match="rgb_array"):
        venv = make_vec_env(env_id, n_envs=2, seed=5)
    single = gym.make(env_id)
    first, _ = single.reset(seed=5)  # make_vec_env seeds sub-env i with seed + i
    np.testing.assert_array_equal(venv.reset()[0], first)
    assert venv.get_attr("render_mode") == ["rgb_array"] * 2
    horizon = single.unwrapped.task.horizon
    for h in range(horizon):
        _, _, dones, _ = venv.step(np.zeros(2, dtype=np.int64))
        assert dones.tolist() == [h == horizon - 1] * 2
    with pytest.warns(UserWarning, match="draws nothing"):
        assert venv.envs[0].unwrapped.render() is None
    venv.close()


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")  # gym.make's own
def test_render_modes() -> None:
    env = gym.make(AR_LINEAR, horizon=3, vocab_size=2, render_mode="ansi")
    env.reset(seed=0)
    env.step(1)
    assert env.render().endswith("h=1/3 a=1")
    for bad in ("banana", "ANSI"):
        with pytest.raises(ValueError, match=r"render_mode must be None or one of \["):
            gym.make(AR_LINEAR, render_mode=bad)
    with pytest.raises(ValueError, match="render_mode must be None"):
        ARLinearEnv(render_mode=3)  # type: ignore[arg-type]  (gym.make fails on it first)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_and_task_pickle(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    env.step(0)
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(clone.unwrapped._obs(), env.unwrapped._obs())
    task = env.unwrapped.task
    copy = pickle.loads(pickle.dumps(task))
    assert copy.env_id == task.env_id and copy.horizon == task.horizon
    prompts, tokens = task.sample_demonstrations(64, np.random.default_rng(1))
    tokens[::2, -1] = (tokens[::2, -1] + 1) % task.vocab_size  # some off-expert sequences
    np.testing.assert_array_equal(copy.expert.token_logprobs(prompts, tokens),
                                  task.expert.token_logprobs(prompts, tokens))
    np.testing.assert_array_equal(copy.prompts.sample(8, np.random.default_rng(2)),
                                  task.prompts.sample(8, np.random.default_rng(2)))


def test_subproc_vec_env_returns_the_task() -> None:
    env_ids = ["ntp_envs/ParityCoT-v0", "ntp_envs/MultiplicationCoT-v0", "ntp_envs/PathStar-v0"]
    # "module:id" makes gym.make import ntp_envs in the worker, which registers the ids
    venv = SubprocVecEnv([functools.partial(gym.make, f"ntp_envs:{env_id}") for env_id in env_ids],
                         start_method="fork")  # fork: no interpreter start per worker
    try:
        tasks = venv.get_attr("task")
    finally:
        venv.close()
    for env_id, task in zip(env_ids, tasks, strict=True):
        local = make_task(env_id)
        prompts, tokens = local.sample_demonstrations(16, np.random.default_rng(0))
        np.testing.assert_array_equal(task.expert.deterministic_sequences(prompts), tokens)
