"""Natively batched vector envs: Gymnasium and SB3 APIs, same law as the single env, misuse;
imitation's ``make_vec_env`` + ``RolloutInfoWrapper`` + ``rollout`` on every env id."""

from __future__ import annotations

import dataclasses
import itertools

import gymnasium as gym
import numpy as np
import pytest
from imitation.data import rollout
from imitation.data.wrappers import RolloutInfoWrapper
from imitation.util.util import make_vec_env
from scipy import stats
from stable_baselines3.common.vec_env import DummyVecEnv

import ntp_envs
from experts import ExpertPolicy, as_sb3_policy
from ntp_envs import make_task
from ntp_envs.base import encode_observations
from ntp_envs.vector import (
    SequenceVecEnv,
    SequenceVectorEnv,
    make_sb3_vec_env,
    make_vector_env,
    prefix_observations,
    sequence_rewards,
    step_rewards,
)

ENV_IDS = ntp_envs.registered_env_ids()
AR_LINEAR = "ntp_envs/ARLinear-v0"
SKEWED = {"horizon": 3, "num_contexts": 4, "context_probs": [0.1, 0.2, 0.3, 0.4],
          "task_seed": 2}
P_VALUE_FLOOR = 1e-4  # fixed seeds make every p-value below deterministic


SHORT = {"ntp_envs/ARLinear-v0", "ntp_envs/MixtureProduct-v0", "ntp_envs/FiniteClassBarrier-v0"}


def _small(env_id: str) -> dict:
    """Keyword arguments for a short episode (envs whose horizon is free), else defaults."""
    return {"horizon": 5} if env_id in SHORT else {}


def _vector_episodes(venv: SequenceVectorEnv, policy: ExpertPolicy, episodes: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts, tokens and rewards of ``episodes`` batches of episodes driven by ``policy``."""
    task = venv.task
    obs, info = venv.reset(seed=seed)
    prompts, tokens, rewards = [], [], []
    for _ in range(episodes):
        prompts.append(np.stack(info["prompt"]))
        toks, rews = [], []
        for h in range(task.horizon):
            action, _ = policy.predict(obs)
            obs, reward, terminated, truncated, info = venv.step(action)
            toks.append(action)
            rews.append(reward)
            assert terminated.all() == (h == task.horizon - 1) and not truncated.any()
        assert np.array_equal(np.stack(info["final_info"])[0]["sequence"], np.stack(toks, 1)[0])
        tokens.append(np.stack(toks, axis=1))
        rewards.append(np.stack(rews, axis=1))
    return np.concatenate(prompts), np.concatenate(tokens), np.concatenate(rewards)


def _outcomes(prompts: np.ndarray, tokens: np.ndarray, vocab: int) -> np.ndarray:
    return prompts[:, 0] * vocab ** tokens.shape[1] + tokens @ (vocab ** np.arange(tokens.shape[1]))


def _exact_law(task) -> np.ndarray:  # noqa: ANN001
    """``mu(x) P*(a | x)`` over every outcome, in :func:`_outcomes` order."""
    seqs = np.array(list(itertools.product(range(task.vocab_size), repeat=task.horizon)))
    probs = np.zeros(task.prompts.num_contexts * task.vocab_size**task.horizon)
    for c in range(task.prompts.num_contexts):
        prompts = np.full((len(seqs), 1), c)
        logp = task.prompts.log_probs[c] + task.expert.sequence_logprob(prompts, seqs)
        probs[_outcomes(prompts, seqs, task.vocab_size)] = np.exp(logp)
    return probs


@pytest.fixture(scope="module")
def law_samples() -> dict[str, np.ndarray]:
    task = make_task(AR_LINEAR, **SKEWED)
    venv = SequenceVectorEnv(task, 256)
    prompts, tokens, rewards = _vector_episodes(venv, ExpertPolicy(task, seed=1), 24, seed=0)
    env = gym.make(AR_LINEAR, **SKEWED)
    single_prompts, single_tokens = [], []
    policy = ExpertPolicy(task, seed=3)
    for i in range(1500):
        obs, info = env.reset(seed=5 if i == 0 else None)
        single_prompts.append(info["prompt"])
        toks = []
        for _ in range(task.horizon):
            action, _ = policy.predict(obs)
            obs, *_ = env.step(action)
            toks.append(action)
        single_tokens.append(toks)
    return {"task": task, "prompts": prompts, "tokens": tokens, "rewards": rewards,
            "vector": _outcomes(prompts, tokens, 2), "exact": _exact_law(task),
            "single": _outcomes(np.array(single_prompts), np.array(single_tokens), 2)}


def test_vector_env_has_the_single_env_law(law_samples: dict) -> None:
    exact, vector, single = law_samples["exact"], law_samples["vector"], law_samples["single"]
    assert len(vector) == 256 * 24 and abs(exact.sum() - 1) < 1e-12
    counts = np.bincount(vector, minlength=len(exact))
    assert stats.chisquare(counts, exact * len(vector))[1] > P_VALUE_FLOOR
    table = np.stack([counts, np.bincount(single, minlength=len(exact))])
    assert stats.chi2_contingency(table[:, table.sum(axis=0) > 0])[1] > P_VALUE_FLOOR
    # the skewed prompt law shows in the prompts the vector env drew
    prompt_counts = np.bincount(law_samples["prompts"][:, 0], minlength=4)
    assert stats.chisquare(prompt_counts, np.array(SKEWED["context_probs"]) * len(vector))[1] > (
        P_VALUE_FLOOR
    )


def test_law_test_has_power(law_samples: dict) -> None:
    """The same test rejects the law of another expert (another task_seed)."""
    other = make_task(AR_LINEAR, **{**SKEWED, "task_seed": 3})
    prompts, tokens = other.sample_demonstrations(len(law_samples["vector"]),
                                                  np.random.default_rng(0))
    counts = np.bincount(_outcomes(prompts, tokens, 2), minlength=len(law_samples["exact"]))
    assert stats.chisquare(counts, law_samples["exact"] * counts.sum())[1] < P_VALUE_FLOOR


def test_rewards_are_the_expert_log_likelihood(law_samples: dict) -> None:
    task = law_samples["task"]
    prompts, tokens, rewards = (law_samples[k] for k in ("prompts", "tokens", "rewards"))
    assert rewards.dtype == np.float64
    np.testing.assert_allclose(rewards, task.expert.token_logprobs(prompts, tokens),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(rewards, sequence_rewards(task, prompts, tokens), rtol=0, atol=0)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_rewards_match_task_reward(env_id: str) -> None:
    task = make_task(env_id, **_small(env_id))
    rng = np.random.default_rng(0)
    prompts, tokens = task.sample_demonstrations(40, rng)
    tokens[::3] = rng.integers(0, task.vocab_size, size=tokens[::3].shape)  # off-expert too
    positions = rng.integers(0, task.horizon, size=40)  # mixed positions in one batch
    actions = rng.integers(0, task.vocab_size, size=40)
    batched = step_rewards(task, prompts, tokens, positions, actions)
    single = [task.reward(prompts[i], tokens[i, : positions[i]], int(actions[i]))
              for i in range(40)]
    np.testing.assert_array_equal(batched, single)


def test_a_task_with_batched_rewards_is_asked_once_per_step() -> None:
    base = make_task(AR_LINEAR, horizon=3)
    calls: list[int] = []

    @dataclasses.dataclass(frozen=True)
    class CountingTask(type(base)):  # type: ignore[misc]
        def reward(self, prompt, prefix, action) -> float:  # noqa: ANN001
            return float(action)

        def rewards(self, prompts, tokens, positions, actions) -> np.ndarray:  # noqa: ANN001
            calls.append(len(actions))
            return actions.astype(np.float64)

    task = CountingTask(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    venv = SequenceVectorEnv(task, 8)
    venv.reset(seed=0)
    _, reward, *_ = venv.step(np.arange(8) % 2)
    np.testing.assert_array_equal(reward, np.arange(8) % 2)
    assert calls == [8]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_uses_the_native_vector_env(env_id: str) -> None:
    spec = gym.spec(env_id)
    assert spec.vector_entry_point == ntp_envs.vector_entry_point(env_id)
    assert "vector_entry_point" in spec.to_json()  # a string: the spec stays serialisable
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="custom",
                        vector_kwargs=_small(env_id))
    assert isinstance(venv, SequenceVectorEnv) and venv.num_envs == 3
    assert venv.spec.id == env_id
    assert venv.task.horizon == make_task(env_id, **_small(env_id)).horizon
    assert venv.single_observation_space == gym.make(env_id, **_small(env_id)).observation_space
    venv.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_vector_contract(env_id: str) -> None:
    venv = make_vector_env(env_id, 4, **_small(env_id))
    horizon, length = venv.task.horizon, venv.task.prompts.prompt_length
    obs, info = venv.reset(seed=0)
    assert obs in venv.observation_space and obs.dtype == np.int64
    assert info["_prompt"].all() and len(info["prompt"]) == 4
    venv.action_space.seed(0)
    for _ in range(2):
        for h in range(horizon):
            actions = venv.action_space.sample()
            before = obs
            obs, reward, terminated, truncated, info = venv.step(actions)
            assert obs in venv.observation_space
            assert reward.shape == (4,) and reward.dtype == np.float64
            assert np.isfinite(reward).all() and not truncated.any()
            assert terminated.all() == (h == horizon - 1) and (terminated.any() == terminated.all())
            expected = encode_observations(venv.task, before[:, :length], np.concatenate(
                [before[:, length + 1 : length + 1 + h], actions[:, None]], axis=1))
            if h < horizon - 1:
                np.testing.assert_array_equal(obs, expected)
                assert info["_position"].all() and (info["position"] == h + 1).all()
            else:  # autoreset: final observation in info, a fresh episode in obs
                assert info["_final_observation"].all() and info["_final_info"].all()
                np.testing.assert_array_equal(np.stack(info["final_observation"]), expected)
                assert (obs[:, length] == 0).all()
                assert (obs[:, length + 1 :] == venv.task.vocab_size).all()
                assert "position" not in info and info["_prompt"].all()


def test_gymnasium_vector_matches_sync_vector_env_step_for_step() -> None:
    """With one prompt there is no randomness left: native and SyncVectorEnv agree exactly."""
    env_id, kwargs = "ntp_envs/MixtureProduct-v0", {"horizon": 6}
    native = make_vector_env(env_id, 5, **kwargs)
    sync = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, **kwargs)] * 5)
    actions = np.random.default_rng(0).integers(0, 2, size=(15, 5))
    for venv in (native, sync):
        venv.reset(seed=0)
    for step in actions:
        (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) = native.step(step), sync.step(step)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(te1, te2)
        np.testing.assert_array_equal(tr1, tr2)
        assert set(i1) == set(i2)
        for key in set(i1) & {"_position", "position", "_prompt", "_final_info"}:
            np.testing.assert_array_equal(i1[key], i2[key])
        if te1.any():
            for a, b in zip(i1["final_info"], i2["final_info"], strict=True):
                np.testing.assert_array_equal(a["sequence"], b["sequence"])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_imitation_rollout_on_native_sb3_vec_env(env_id: str) -> None:
    venv = make_sb3_vec_env(env_id, 4, seed=0, **_small(env_id))
    task = venv.task
    expert = as_sb3_policy(task.expert, task, seed=0, env=venv)
    trajs = rollout.rollout(expert, venv, rollout.make_sample_until(min_episodes=10),
                            rng=np.random.default_rng(0))
    assert len(trajs) >= 10
    for traj in trajs:
        assert traj.terminal and traj.obs.shape == (task.horizon + 1, *venv.observation_space.shape)
        assert traj.acts.shape == (task.horizon,)
        prompt = traj.obs[:1, : task.prompts.prompt_length]
        expected = prefix_observations(task, prompt, traj.acts[None], task.horizon + 1)[0]
        np.testing.assert_array_equal(traj.obs, expected)
        np.testing.assert_allclose(traj.rews, sequence_rewards(task, prompt, traj.acts[None])[0],
                                   rtol=0, atol=0)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_imitation_make_vec_env_with_rollout_info_wrapper(env_id: str) -> None:
    rng = np.random.default_rng(0)
    venv = make_vec_env(env_id, rng=rng, n_envs=2, post_wrappers=[
        lambda env, _: RolloutInfoWrapper(env)], env_make_kwargs=_small(env_id))
    task = venv.get_attr("unwrapped")[0].task
    expert = as_sb3_policy(task.expert, task, seed=0, env=venv)
    trajs = rollout.rollout(expert, venv, rollout.make_sample_until(min_episodes=4), rng=rng)
    assert len(trajs) >= 4
    for traj in trajs:
        assert len(traj.acts) == task.horizon and len(traj.obs) == task.horizon + 1
        assert all(o in venv.observation_space for o in traj.obs)
        prompt = traj.obs[:1, : task.prompts.prompt_length]
        np.testing.assert_allclose(traj.rews, sequence_rewards(task, prompt, traj.acts[None])[0],
                                   rtol=0, atol=1e-12)


def test_sb3_vec_env_matches_dummy_vec_env_conventions() -> None:
    env_id, kwargs = "ntp_envs/FiniteClassBarrier-v0", {"horizon": 3}
    native = make_sb3_vec_env(env_id, 3, seed=0, **kwargs)
    dummy = DummyVecEnv([lambda: RolloutInfoWrapper(gym.make(env_id, **kwargs))] * 3)
    np.testing.assert_array_equal(native.reset(), dummy.reset())
    assert native.get_attr("render_mode") == [None] * 3
    assert native.env_is_wrapped(RolloutInfoWrapper) == [False] * 3
    for step in np.array([[0, 1, 2], [1, 1, 2], [2, 0, 2]]):
        (o1, r1, d1, i1), (o2, r2, d2, i2) = native.step(step), dummy.step(step)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        assert r1.dtype == r2.dtype == np.float32 and d1.dtype == d2.dtype == np.bool_
        np.testing.assert_array_equal(d1, d2)
        for a, b in zip(i1, i2, strict=True):
            assert set(a) == set(b) - {"position"}
            if "rollout" in a:
                np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
                np.testing.assert_array_equal(a["rollout"]["obs"], b["rollout"]["obs"])
                np.testing.assert_array_equal(a["rollout"]["rews"], b["rollout"]["rews"])


@pytest.mark.parametrize("front", ["gymnasium", "sb3"])
def test_seeding_reproduces_the_batch(front: str) -> None:
    def prompts(seed: int) -> np.ndarray:
        if front == "gymnasium":
            venv = make_vector_env(AR_LINEAR, 64, horizon=2)
            return venv.reset(seed=seed)[0][:, 0]
        return make_sb3_vec_env(AR_LINEAR, 64, seed=seed, horizon=2).reset()[:, 0]

    np.testing.assert_array_equal(prompts(3), prompts(3))
    assert not np.array_equal(prompts(3), prompts(4))


@pytest.mark.parametrize("actions", [np.zeros(3, dtype=np.int64), np.zeros((4, 2), dtype=int),
                                     np.zeros(4), np.array([0, 1, 2, 0]), np.array([0, -1, 0, 0])],
                         ids=["short", "2-d", "float", "too-large", "negative"])
def test_bad_actions_raise(actions: np.ndarray) -> None:
    for venv in (make_vector_env(AR_LINEAR, 4, horizon=3),
                 make_sb3_vec_env(AR_LINEAR, 4, seed=0, horizon=3)):
        venv.reset()
        with pytest.raises(ValueError, match="actions"):
            venv.step(actions)
        venv.step(np.zeros(4, dtype=np.int64))  # still usable


def test_misuse_raises() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env(AR_LINEAR, 0)
    with pytest.raises(ValueError, match="horizon"):
        make_vector_env(AR_LINEAR, 2, horizon=0)
    with pytest.raises(ValueError, match="max_episode_steps"):
        make_vector_env(AR_LINEAR, 2, horizon=4, max_episode_steps=3)
    with pytest.raises(ValueError, match="seed"):
        make_vector_env(AR_LINEAR, 2).reset(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        make_sb3_vec_env(AR_LINEAR, 2, seed="0")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="reset"):
        make_vector_env(AR_LINEAR, 2).step(np.zeros(2, dtype=np.int64))
    venv = SequenceVecEnv(make_task(AR_LINEAR, horizon=2), 2)
    assert venv.get_attr("task") == [venv.task, venv.task]
    with pytest.raises(AttributeError, match="nope"):
        venv.get_attr("nope")
    with pytest.raises(AttributeError):
        venv.set_attr("task", None)


def test_make_vec_spec_keeps_the_env_kwargs() -> None:
    kwargs = {"horizon": 7, "misspecification": 0.25}
    venv = gym.make_vec(AR_LINEAR, num_envs=2, vectorization_mode="custom",
                        vector_kwargs=dict(kwargs))  # make_vec adds max_episode_steps to it
    assert venv.spec.kwargs == kwargs
    expected = make_task(AR_LINEAR, **kwargs).expert.finite_state().logp
    # a round trip through the spec builds the same env, single or vectorised
    single = gym.make(venv.spec).unwrapped.task
    again = gym.make_vec(venv.spec, num_envs=3, vectorization_mode="custom",
                         vector_kwargs=dict(venv.spec.kwargs))
    for task in (single, again.task):
        assert task.horizon == 7
        np.testing.assert_array_equal(task.expert.finite_state().logp, expected)
    assert again.spec.kwargs == kwargs


def test_make_vec_refuses_env_kwargs_it_would_drop() -> None:
    # Gymnasium 0.29's custom mode passes only vector_kwargs to the vector env
    for call in (
        lambda: gym.make_vec(AR_LINEAR, num_envs=2, vectorization_mode="custom", horizon=7),
        lambda: gym.make_vec(gym.make_vec(AR_LINEAR, vectorization_mode="custom",
                                          vector_kwargs={"horizon": 7}).spec,
                             num_envs=2, vectorization_mode="custom"),
    ):
        with pytest.raises(ValueError, match=r"\['horizon'\].*vector_kwargs=\{'horizon': 7\}"):
            call()
    # kwargs the env already has lose nothing: accepted and kept in the spec
    venv = gym.make_vec(AR_LINEAR, num_envs=2, vectorization_mode="custom", horizon=7,
                        vector_kwargs={"horizon": 7})
    assert venv.task.horizon == 7 and venv.spec.kwargs == {"horizon": 7}
    default = make_task(AR_LINEAR).params["misspecification"]
    venv = gym.make_vec(AR_LINEAR, vectorization_mode="custom", misspecification=default)
    assert venv.spec.kwargs == {"misspecification": default}
