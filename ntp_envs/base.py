"""The Gymnasium env shared by all task families: one episode generates one sequence."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import IntArray
from ntp_envs.validation import check_int

MAX_HORIZON = 2**20
"""Longest episode an env accepts: its observation holds the whole prefix (``H`` integers)."""


def observation_space(task: SequenceTask) -> spaces.MultiDiscrete:
    """``[prompt tokens (L), position h, prefix tokens padded with V (H)]``."""
    nvec = np.concatenate([
        np.full(task.prompts.prompt_length, task.prompt_vocab_size),
        [task.horizon + 1],
        np.full(task.horizon, task.vocab_size + 1),
    ]).astype(np.int64)
    return spaces.MultiDiscrete(nvec)


def has_task_spaces(task: SequenceTask, obs_space: spaces.Space, act_space: spaces.Space) -> bool:
    """Whether ``obs_space``/``act_space`` are the task env's (:func:`observation_space`,
    ``Discrete(V)``)."""
    expected = observation_space(task)
    return (isinstance(obs_space, spaces.MultiDiscrete) and obs_space.shape == expected.shape
            and obs_space == expected and act_space == spaces.Discrete(task.vocab_size))


def encode_observations(task: SequenceTask, prompts: IntArray, prefixes: IntArray) -> IntArray:
    """Batched observations ``(B, L + 1 + H)`` for prompts ``(B, L)`` and prefixes ``(B, h)``."""
    prompts = np.asarray(prompts, dtype=np.int64)
    prefixes = np.asarray(prefixes, dtype=np.int64).reshape(len(prompts), -1)
    batch, h = prefixes.shape
    obs = np.full((batch, prompts.shape[1] + 1 + task.horizon), task.vocab_size, dtype=np.int64)
    obs[:, : prompts.shape[1]] = prompts
    obs[:, prompts.shape[1]] = h
    obs[:, prompts.shape[1] + 1 : prompts.shape[1] + 1 + h] = prefixes
    return obs


def decode_observations(task: SequenceTask, obs: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """Inverse of :func:`encode_observations`: ``(prompts (B, L), positions (B,), padded (B, H))``.

    ``padded`` holds each prefix followed by the pad token ``V``.
    """
    obs = np.asarray(obs)
    length = task.prompts.prompt_length
    if obs.ndim == 1:
        obs = obs[None, :]
    if obs.ndim != 2 or obs.shape[1] != length + 1 + task.horizon:
        raise ValueError(
            f"obs must have shape (B, {length + 1 + task.horizon}), got {np.shape(obs)}"
        )
    obs = obs.astype(np.int64)
    return obs[:, :length], obs[:, length], obs[:, length + 1 :]


GYMNASIUM_RENDER_MODES = ("human", "rgb_array", "rgb_array_list", "depth_array", "ansi",
                          "ansi_list")
"""Render modes Gymnasium names: accepted, as Gymnasium's own envs accept them (SB3's
``make_vec_env`` asks for ``rgb_array``); only ``ansi`` draws anything."""


def check_render_mode(render_mode: Any) -> None:
    """ValueError unless ``render_mode`` is ``None`` or one of :data:`GYMNASIUM_RENDER_MODES`."""
    if render_mode is not None and render_mode not in GYMNASIUM_RENDER_MODES:
        raise ValueError(f"render_mode must be None or one of {list(GYMNASIUM_RENDER_MODES)} "
                         f"(only 'ansi' draws anything), got {render_mode!r}")


def warn_no_render(env: gym.Env) -> None:
    """The warning of ``render()`` in a mode the env cannot draw (it returns ``None``)."""
    if env.render_mode is None:
        gym.logger.warn("render() called without a render_mode: set render_mode='ansi' "
                        "to get text; returning None")
    else:
        gym.logger.warn(f"render_mode {env.render_mode!r} draws nothing in "
                        f"{type(env).__name__} (only 'ansi' does): render() returns None")


class SequenceEnv(gym.Env[IntArray, np.int64]):
    """Base env: ``reset`` draws a prompt, each ``step`` appends one token, ``H`` steps.

    Subclasses build a :class:`SequenceTask` and document it in the Gymnasium sections.
    The reward of a step is :meth:`SequenceTask.reward`: by default the expert's
    log-probability of the emitted token, clipped below at
    :data:`ntp_envs.task.REWARD_FLOOR` (``-100.0``) so that a token the expert never emits
    still gives a finite Python ``float``.

    ``render_mode="ansi"`` renders the episode as text. Like Gymnasium's own envs, the env
    accepts Gymnasium's other mode names (SB3's ``make_vec_env`` passes ``rgb_array``):
    ``gym.make`` warns, and ``render()`` draws nothing in them.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, task: SequenceTask, render_mode: str | None = None) -> None:
        check_render_mode(render_mode)
        check_int("horizon", task.horizon, 1, MAX_HORIZON)
        self.task = task
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(task.vocab_size)
        self.observation_space = observation_space(task)
        self._prompt: IntArray | None = None
        self._prefix = np.zeros(task.horizon, dtype=np.int64)
        self._h = 0
        self._done = True

    @property
    def expert(self):  # noqa: ANN201 - SequenceModel, re-exported for convenience
        """The task's expert policy (a :class:`~ntp_envs.sequence_model.SequenceModel`)."""
        return self.task.expert

    def _obs(self) -> IntArray:
        assert self._prompt is not None
        return encode_observations(self.task, self._prompt[None], self._prefix[None, : self._h])[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[IntArray, dict[str, Any]]:
        super().reset(seed=seed)
        self._prompt = self.task.prompts.sample(1, self.np_random)[0]
        self._prefix[:] = 0
        self._h = 0
        self._done = False
        return self._obs(), {"prompt": self._prompt.copy()}

    def _check_action(self, action: Any) -> int:
        arr = np.asarray(action)
        if arr.shape not in ((), (1,)):
            raise ValueError(f"action must be a scalar token, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"action must be an integer token, got dtype {arr.dtype}")
        token = int(arr.reshape(()))
        if not 0 <= token < self.task.vocab_size:
            raise ValueError(f"action must lie in [0, {self.task.vocab_size - 1}], got {token}")
        return token

    def step(self, action: Any) -> tuple[IntArray, float, bool, bool, dict[str, Any]]:
        if self._done or self._prompt is None:
            raise RuntimeError("the episode has ended (or never started): call reset() first")
        token = self._check_action(action)
        reward = float(self.task.reward(self._prompt, self._prefix[: self._h], token))
        self._prefix[self._h] = token
        self._h += 1
        terminated = bool(self._h >= self.task.horizon)
        self._done = terminated
        info: dict[str, Any] = {"position": self._h}
        if terminated:
            info["sequence"] = self._prefix.copy()
        return self._obs(), reward, terminated, False, info

    def render(self) -> str | None:
        """The ``ansi`` text of the episode so far; ``None`` (with a warning) in other modes."""
        if self.render_mode != "ansi":
            warn_no_render(self)
            return None
        prompt = "" if self._prompt is None else " ".join(map(str, self._prompt))
        prefix = "".join(map(str, self._prefix[: self._h])) if self.task.vocab_size <= 10 else (
            " ".join(map(str, self._prefix[: self._h]))
        )
        return f"x=[{prompt}] h={self._h}/{self.task.horizon} a={prefix}"
