"""Natively batched vector envs: ``num_envs`` episodes of one task stepped as arrays.

One batched core (:class:`BatchedEpisodes`: prompts, tokens, positions and observations as
arrays, expert log-probabilities computed for the whole batch at once, no Python loop over
sub-envs) behind two front ends:

* :class:`SequenceVectorEnv`, a Gymnasium 0.29 ``gymnasium.vector.VectorEnv`` with the
  semantics of ``gymnasium.vector.SyncVectorEnv`` (same-step autoreset; the last observation
  and info of an episode in ``infos["final_observation"]`` / ``infos["final_info"]``). The
  registry's ``vector_entry_point`` builds it::

      gym.make_vec("ntp_envs/ARLinear-v0", num_envs=256, vectorization_mode="custom",
                   vector_kwargs={"horizon": 16})

  (Gymnasium 0.29's ``make_vec`` passes only ``vector_kwargs`` to a custom vector entry
  point, so the env's keyword arguments go there; one passed outside them, which Gymnasium
  would drop, is refused when it would change the env. ``spec.kwargs`` holds the env's
  keyword arguments, so ``gym.make(venv.spec)`` builds the same env.)
* :class:`SequenceVecEnv`, a Stable-Baselines3 ``VecEnv`` with the semantics of
  ``DummyVecEnv`` over envs wrapped in imitation's ``RolloutInfoWrapper``: a finished
  episode's info holds ``terminal_observation`` and ``rollout = {"obs", "rews"}``, so SB3
  algorithms, ``evaluate_policy`` and imitation's ``rollout``/DAgger use it directly.

Both have the law of ``num_envs`` independent copies of ``gymnasium.make(env_id)``: a reset
draws every prompt from the prompt law, a step appends one token per sub-env and pays
:func:`step_rewards` (the task's reward), and every episode ends after exactly ``H`` steps.
The sub-envs share one numpy Generator, seeded by ``reset(seed=...)`` (Gymnasium) or
``seed(...)`` (SB3); a seed reproduces the whole batch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from ntp_envs import ENTRY_POINTS, make_task, vector_entry_point
from ntp_envs.base import observation_space
from ntp_envs.task import REWARD_FLOOR, SequenceTask
from ntp_envs.type_aliases import BoolArray, FloatArray, IntArray
from ntp_envs.validation import check_int

__all__ = [
    "BatchedEpisodes",
    "SequenceVecEnv",
    "SequenceVectorEnv",
    "make_sb3_vec_env",
    "make_vector_env",
    "prefix_observations",
    "sequence_rewards",
    "step_rewards",
]


def step_rewards(
    task: SequenceTask, prompts: IntArray, tokens: IntArray, positions: IntArray,
    actions: IntArray,
) -> FloatArray:
    """Batched :meth:`SequenceTask.reward`: row ``i`` emits ``actions[i]`` after the prefix
    ``tokens[i, :positions[i]]`` (``tokens`` is ``(B, >= max position)``).

    A task that overrides ``reward`` may define its batched form, a method
    ``rewards(prompts, tokens, positions, actions) -> (B,)`` with these arguments; without
    it, its ``reward`` is called once per row (correct, but a Python loop per sub-env).
    """
    positions = np.asarray(positions, dtype=np.int64)
    actions = np.asarray(actions, dtype=np.int64)
    batch = len(actions)
    batched = getattr(task, "rewards", None)
    if callable(batched):
        return np.asarray(batched(prompts, tokens, positions, actions), dtype=np.float64)
    if type(task).reward is not SequenceTask.reward:  # a task with its own reward: ask it
        return np.array([task.reward(prompts[i], tokens[i, : positions[i]], int(actions[i]))
                         for i in range(batch)], dtype=np.float64)
    out = np.empty(batch, dtype=np.float64)
    if batch and (positions == positions[0]).all():  # the usual case: one position
        groups = [(int(positions[0]), slice(None))]
    else:
        groups = [(int(h), np.flatnonzero(positions == h)) for h in np.unique(positions)]
    for h, rows in groups:
        logp = task.expert.next_token_logprobs(prompts[rows], tokens[rows, :h])
        out[rows] = logp[np.arange(len(logp)), actions[rows]]
    return np.maximum(out, REWARD_FLOOR)


def sequence_rewards(task: SequenceTask, prompts: IntArray, tokens: IntArray) -> FloatArray:
    """The rewards ``(B, H)`` an env pays for emitting ``tokens`` after ``prompts``."""
    prompts = np.asarray(prompts, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 2 or tokens.shape[1] != task.horizon:
        raise ValueError(f"tokens must have shape (B, {task.horizon}), got {tokens.shape}")
    out = np.empty(tokens.shape, dtype=np.float64)
    for h in range(task.horizon):
        out[:, h] = step_rewards(task, prompts, tokens, np.full(len(tokens), h), tokens[:, h])
    return out


def prefix_observations(
    task: SequenceTask, prompts: IntArray, tokens: IntArray, count: int | None = None
) -> IntArray:
    """Observations ``(B, count, D)`` before tokens ``0..count-1`` of each sequence (``count``
    up to ``H + 1``, the last one after the final token; default ``tokens.shape[1]``):
    entry ``[b, h]`` is ``encode_observations(task, prompts[b:b+1], tokens[b:b+1, :h])[0]``."""
    prompts = np.asarray(prompts, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.int64)
    horizon, length = task.horizon, prompts.shape[1]
    count = tokens.shape[1] if count is None else count
    if not 0 <= count <= min(tokens.shape[1], horizon) + 1:
        raise ValueError(f"count must lie in [0, {min(tokens.shape[1], horizon) + 1}], "
                         f"got {count}")
    padded = np.full((len(tokens), horizon), task.vocab_size, dtype=np.int64)
    padded[:, : tokens.shape[1]] = tokens[:, :horizon]
    h = np.arange(count)
    out = np.empty((len(tokens), count, length + 1 + horizon), dtype=np.int64)
    out[:, :, :length] = prompts[:, None, :]
    out[:, :, length] = h
    out[:, :, length + 1:] = np.where(np.arange(horizon)[None, None, :] < h[None, :, None],
                                      padded[:, None, :], task.vocab_size)
    return out


class BatchedEpisodes:
    """The state of ``num_envs`` episodes of ``task`` as arrays, stepped together.

    ``obs[i]`` is sub-env ``i``'s observation (:func:`ntp_envs.base.encode_observations`
    layout, updated in place); ``rewards[i, h]`` is the reward paid at position ``h``.
    """

    def __init__(self, task: SequenceTask, num_envs: int) -> None:
        self.task = task
        self.num_envs = check_int("num_envs", num_envs, 1)
        length, horizon = task.prompts.prompt_length, task.horizon
        self.prompt_length = length
        self.prompts = np.zeros((self.num_envs, length), dtype=np.int64)
        self.tokens = np.zeros((self.num_envs, horizon), dtype=np.int64)
        self.rewards = np.zeros((self.num_envs, horizon), dtype=np.float64)
        self.positions = np.zeros(self.num_envs, dtype=np.int64)
        self.obs = np.full((self.num_envs, length + 1 + horizon), task.vocab_size, dtype=np.int64)
        self.rng = np.random.default_rng()
        self.started = False

    def seed(self, seed: int | None) -> None:
        """Reseed the shared generator (``None``: fresh entropy)."""
        self.rng = np.random.default_rng(_check_seed(seed))

    def reset(self, rows: IntArray | None = None) -> None:
        """Start new episodes in ``rows`` (all sub-envs when ``None``)."""
        rows = np.arange(self.num_envs) if rows is None else rows
        prompts = self.task.prompts.sample(len(rows), self.rng)
        self.prompts[rows] = prompts
        self.positions[rows] = 0
        self.obs[rows] = self.task.vocab_size
        self.obs[rows, : self.prompt_length] = prompts
        self.obs[rows, self.prompt_length] = 0
        self.started = True

    def check_actions(self, actions: Any) -> IntArray:
        """``actions`` as ``(num_envs,)`` tokens; ValueError otherwise."""
        arr = np.asarray(actions)
        if arr.shape not in ((self.num_envs,), (self.num_envs, 1)):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"actions must be integer tokens, got dtype {arr.dtype}")
        arr = arr.reshape(self.num_envs).astype(np.int64, copy=False)
        if arr.min() < 0 or arr.max() >= self.task.vocab_size:
            raise ValueError(f"actions must lie in [0, {self.task.vocab_size - 1}], "
                             f"got values in [{arr.min()}, {arr.max()}]")
        return arr

    def step(self, actions: Any) -> tuple[FloatArray, BoolArray]:
        """Append one token per sub-env; returns ``(rewards, terminated)`` (no autoreset)."""
        if not self.started:
            raise RuntimeError("call reset() before step()")
        actions = self.check_actions(actions)
        rewards = step_rewards(self.task, self.prompts, self.tokens, self.positions, actions)
        rows, h = np.arange(self.num_envs), self.positions
        self.tokens[rows, h] = actions
        self.rewards[rows, h] = rewards
        self.obs[rows, self.prompt_length + 1 + h] = actions
        self.positions += 1
        self.obs[:, self.prompt_length] = self.positions
        return rewards, self.positions >= self.task.horizon

    def episode_observations(self, rows: IntArray) -> IntArray:
        """Every observation ``(len(rows), H + 1, D)`` of the finished episodes in ``rows``."""
        return prefix_observations(self.task, self.prompts[rows], self.tokens[rows],
                                   self.task.horizon + 1)


def _check_seed(seed: Any) -> int | None:
    """``seed`` if it is ``None`` or a non-negative integer; ValueError otherwise."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
                             or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r} "
                         "(the sub-envs share one generator)")
    return None if seed is None else int(seed)


def _object_array(values: dict[int, Any], size: int) -> np.ndarray:
    """A length-``size`` object array with ``values[i]`` at ``i`` and ``None`` elsewhere."""
    out = np.empty(size, dtype=object)
    out[:] = None
    for i, value in values.items():
        out[i] = value
    return out


def _check_max_episode_steps(task: SequenceTask, max_episode_steps: int | None) -> None:
    if max_episode_steps is not None and (
        isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int)
        or max_episode_steps < task.horizon
    ):
        raise ValueError(f"max_episode_steps must be None or an integer >= horizon "
                         f"{task.horizon} (episodes have exactly H steps), "
                         f"got {max_episode_steps!r}")


class SequenceVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of a task's env as one Gymnasium vector env (module docstring).

    ``reset(seed=s)`` reseeds the shared generator with the integer ``s``; ``reset`` info
    holds ``prompt`` (an object array, as ``SyncVectorEnv`` gives), ``step`` info holds
    ``position`` and, for finished episodes, ``final_observation`` and ``final_info``
    (``{"position": H, "sequence": tokens}``); each key comes with its ``_key`` mask.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset": True}

    def __init__(self, task: SequenceTask, num_envs: int = 1,
                 max_episode_steps: int | None = None,
                 env_kwargs: dict[str, Any] | None = None) -> None:
        _check_max_episode_steps(task, max_episode_steps)
        self.task = task
        self.env_kwargs = dict(task.params if env_kwargs is None else env_kwargs)
        self._spec: EnvSpec | None = None
        self._core = BatchedEpisodes(task, num_envs)
        self._actions: IntArray | None = None
        self.render_mode = None
        super().__init__(self._core.num_envs, observation_space(task),
                         spaces.Discrete(task.vocab_size))

    @property
    def spec(self) -> EnvSpec | None:  # type: ignore[override]
        """The env's spec; its ``kwargs`` are the env's keyword arguments."""
        return self._spec

    @spec.setter
    def spec(self, spec: EnvSpec | None) -> None:
        # gym.make_vec sets a spec whose kwargs are those passed outside vector_kwargs: they
        # never reached this env, so refuse any that would have changed it
        if spec is None:
            self._spec = None
            return
        dropped = dropped_kwargs(self.task, spec.kwargs)
        if dropped:
            raise ValueError(
                f"env kwargs {sorted(dropped)} were passed to gymnasium.make_vec outside "
                f"vector_kwargs, where Gymnasium 0.29 drops them in vectorization_mode="
                f"'custom': pass them as vector_kwargs={dict(dropped)!r}")
        if spec.kwargs.get("render_mode") is not None:
            gym.logger.warn(f"render_mode {spec.kwargs['render_mode']!r} is ignored: "
                            f"{type(self).__name__} does not render")
        same = {k: v for k, v in spec.kwargs.items() if k != "render_mode"}
        self._spec = dataclasses.replace(spec, kwargs={**same, **self.env_kwargs})

    def reset_wait(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[IntArray, dict[str, Any]]:
        if seed is not None:
            self._core.seed(seed)
        self._core.reset()
        prompts = {i: p.copy() for i, p in enumerate(self._core.prompts)}
        return self._core.obs.copy(), {"prompt": _object_array(prompts, self.num_envs),
                                       "_prompt": np.ones(self.num_envs, dtype=bool)}

    def step_async(self, actions: Any) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[IntArray, FloatArray, BoolArray, BoolArray, dict[str, Any]]:
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        core, actions, self._actions = self._core, self._actions, None
        rewards, terminated = core.step(actions)
        obs = core.obs.copy()
        running = ~terminated
        infos: dict[str, Any] = {}
        if running.any():  # as SyncVectorEnv: a finished sub-env reports its reset info instead
            infos["position"] = np.where(running, core.positions, 0)
            infos["_position"] = running
        if terminated.any():
            rows = np.flatnonzero(terminated)
            final_obs = {int(i): obs[i] for i in rows}
            final_info = {int(i): {"position": self.task.horizon,
                                   "sequence": core.tokens[i].copy()} for i in rows}
            core.reset(rows)
            obs = core.obs.copy()
            infos["prompt"] = _object_array({i: core.prompts[i].copy() for i in final_obs},
                                            self.num_envs)
            infos["_prompt"] = terminated.copy()
            infos["final_observation"] = _object_array(final_obs, self.num_envs)
            infos["_final_observation"] = terminated.copy()
            infos["final_info"] = _object_array(final_info, self.num_envs)
            infos["_final_info"] = terminated.copy()
        return obs, rewards, terminated.copy(), np.zeros(self.num_envs, dtype=bool), infos

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """A sub-env attribute (``task``, ``expert``, ``render_mode``, spaces) per sub-env."""
        return tuple(_sub_env_attr(self, name) for _ in range(self.num_envs))

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Sub-env attributes only: the sub-envs have no separate objects to call."""
        if args or kwargs:
            raise ValueError(f"{type(self).__name__} has no sub-env objects to call {name!r} on")
        return self.get_attr(name)

    def set_attr(self, name: str, values: Any) -> None:
        raise AttributeError(f"{type(self).__name__} sub-envs share one state; cannot set {name!r}")

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release: the state is plain arrays."""


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=lambda v: np.asarray(v).tolist())


def dropped_kwargs(task: SequenceTask, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``kwargs`` that differ from ``task``'s parameters (rendering aside):
    those the task would have been built differently with."""
    return {k: v for k, v in kwargs.items()
            if k != "render_mode" and (k not in task.params or _json(v) != _json(task.params[k]))}


def _sub_env_attr(venv: SequenceVectorEnv | SequenceVecEnv, name: str) -> Any:
    """What ``getattr(sub_env, name)`` gives on ``gymnasium.make(env_id)`` for shared attrs."""
    values = {"task": venv.task, "expert": venv.task.expert, "render_mode": None,
              "observation_space": observation_space(venv.task),
              "action_space": spaces.Discrete(venv.task.vocab_size)}
    if name not in values:
        raise AttributeError(f"sub-envs of {type(venv).__name__} expose only {sorted(values)}, "
                             f"not {name!r}")
    return values[name]


class SequenceVecEnv(VecEnv):
    """``num_envs`` copies of a task's env as one SB3 ``VecEnv`` (module docstring).

    Rewards are float32 and ``dones`` bool, as ``DummyVecEnv`` returns them. ``seed(s)``
    reseeds the shared generator at the next ``reset()``. Every info holds
    ``TimeLimit.truncated = False``; a finished episode's also ``terminal_observation``,
    ``sequence`` (its tokens) and ``rollout = {"obs": (H + 1, D), "rews": (H,) float64}``,
    what imitation's ``RolloutInfoWrapper`` records.
    """

    def __init__(self, task: SequenceTask, num_envs: int = 1) -> None:
        self.task = task
        self._core = BatchedEpisodes(task, num_envs)
        self._actions: IntArray | None = None
        super().__init__(self._core.num_envs, observation_space(task),
                         spaces.Discrete(task.vocab_size))

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Reseed the shared generator with ``seed`` at the next ``reset()``."""
        self._seeds = [_check_seed(seed)] * self.num_envs
        return list(self._seeds)

    def reset(self) -> VecEnvObs:
        if self._seeds[0] is not None:
            self._core.seed(self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        self._core.reset()
        self.reset_infos = [{"prompt": p.copy()} for p in self._core.prompts]
        return self._core.obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        core, actions, self._actions = self._core, self._actions, None
        rewards, terminated = core.step(actions)
        obs = core.obs.copy()
        infos: list[dict[str, Any]] = [{"TimeLimit.truncated": False}
                                       for _ in range(self.num_envs)]
        if terminated.any():
            rows = np.flatnonzero(terminated)
            episodes = core.episode_observations(rows)
            for j, i in enumerate(rows):
                infos[i].update({"terminal_observation": obs[i], "sequence": core.tokens[i].copy(),
                                 "rollout": {"obs": episodes[j], "rews": core.rewards[i].copy()}})
            core.reset(rows)
            obs = core.obs.copy()
            for i in rows:
                self.reset_infos[i] = {"prompt": core.prompts[i].copy()}
        return obs, rewards.astype(np.float32), terminated.copy(), infos

    def close(self) -> None:
        """Nothing to release: the state is plain arrays."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [_sub_env_attr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(
            f"{type(self).__name__} sub-envs share one state; cannot set {attr_name!r}"
        )

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        raise AttributeError(f"{type(self).__name__} has no sub-env objects to call "
                             f"{method_name!r} on")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_vector_env(
    env_id: str, num_envs: int = 1, *, max_episode_steps: int | None = None, **env_kwargs: Any
) -> SequenceVectorEnv:
    """The Gymnasium vector env of ``num_envs`` copies of ``gymnasium.make(env_id, **env_kwargs)``
    (what ``gymnasium.make_vec(..., vectorization_mode="custom")`` calls)."""
    return SequenceVectorEnv(make_task(env_id, **env_kwargs), num_envs, max_episode_steps,
                             env_kwargs)


def make_sb3_vec_env(
    env_id: str, num_envs: int = 1, *, seed: int | None = None, **env_kwargs: Any
) -> SequenceVecEnv:
    """The SB3 ``VecEnv`` of ``num_envs`` copies of ``gymnasium.make(env_id, **env_kwargs)``."""
    venv = SequenceVecEnv(make_task(env_id, **env_kwargs), num_envs)
    venv.seed(seed)
    return venv


def __getattr__(name: str) -> Any:
    """The registry's vector entry points (``ntp_envs.vector:<Name>_v<N>``), one per env id."""
    for env_id in ENTRY_POINTS:
        if vector_entry_point(env_id) == f"{__name__}:{name}":
            return functools.partial(make_vector_env, env_id)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
