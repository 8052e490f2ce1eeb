"""The task's expert (or any sequence model of the task) as a policy on env observations.

One route per use:

* act in a plain Gymnasium env loop (numpy in, numpy out): :class:`ExpertPolicy`;
* an SB3 ``BasePolicy`` for SB3 (``evaluate_policy``) and imitation (``rollout``, DAgger):
  :func:`as_sb3_policy` (it returns an :class:`ImitationExpert`);
* the reverse, an SB3 policy scored as a sequence model: ``agents.sb3_policy.SB3PolicyModel``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from imitation.policies.base import NonTrainablePolicy
from stable_baselines3.common.vec_env import VecEnv

from ntp_envs.base import decode_observations, has_task_spaces, observation_space
from ntp_envs.sequence_model import SequenceModel, sample_categorical
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray


class ExpertPolicy:
    """Samples the next token from ``task.expert`` given observations of the task's env.

    ``predict`` follows Stable-Baselines3: a single observation ``(D,)`` gives an action of
    shape ``()``, a batch ``(B, D)`` gives ``(B,)``; ``deterministic=True`` takes the argmax.
    ``model`` replaces the expert by any sequence model of the task (e.g. a fitted policy).
    """

    def __init__(self, task: SequenceTask, seed: int | np.random.Generator | None = None,
                 model: SequenceModel | None = None) -> None:
        model = task.expert if model is None else model
        if (model.vocab_size, model.horizon) != (task.vocab_size, task.horizon):
            raise ValueError(f"model must share the task's vocab_size {task.vocab_size} and "
                             f"horizon {task.horizon}, got {model.vocab_size} and {model.horizon}")
        self.task = task
        self.model = model
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | np.random.Generator | None) -> None:
        """Reset the sampling generator."""
        self.rng = np.random.default_rng(seed)

    def action_logprobs(self, observation: IntArray) -> FloatArray:
        """Next-token log-probabilities ``(B, V)`` (a single observation gives B = 1)."""
        prompts, positions, padded = decode_observations(self.task, observation)
        horizon, vocab = self.task.horizon, self.task.vocab_size
        bad = (positions < 0) | (positions >= horizon)
        if bad.any():
            raise ValueError(
                f"observation position must lie in [0, {horizon - 1}] (no next token at the "
                f"end of an episode), got {np.unique(positions[bad]).tolist()}"
            )
        out = np.empty((len(positions), vocab), dtype=np.float64)
        for h in np.unique(positions):
            rows = np.flatnonzero(positions == h)
            out[rows] = self.model.next_token_logprobs(prompts[rows], padded[rows, :h])
        return out

    def predict(
        self,
        observation: IntArray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[IntArray, tuple[np.ndarray, ...] | None]:
        """``(actions, state)`` as in SB3; the expert is stateless so ``state`` is passed on."""
        obs = np.asarray(observation)
        if obs.ndim not in (1, 2):
            raise ValueError(f"observation must have shape (D,) or (B, D), got {obs.shape}")
        logp = self.action_logprobs(obs)
        if deterministic:
            actions = logp.argmax(axis=1).astype(np.int64)
        else:
            actions = sample_categorical(logp, self.rng)
        return (actions[0] if obs.ndim == 1 else actions), state


class ImitationExpert(NonTrainablePolicy):
    """The expert (or ``model``, any sequence model of the task) as an SB3 ``BasePolicy``
    (for imitation's ``rollout`` and DAgger, SB3's ``evaluate_policy``); built by
    :func:`as_sb3_policy`.

    ``_predict`` is batched over the observations and honours ``deterministic``;
    ``_choose_action`` is the single-observation form imitation's base class defines.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        task: SequenceTask,
        seed: int | np.random.Generator | None = None,
        model: SequenceModel | None = None,
    ) -> None:
        super().__init__(observation_space=observation_space, action_space=action_space)
        self.expert = ExpertPolicy(task, seed, model)

    @property
    def task(self) -> SequenceTask:
        return self.expert.task

    def _predict(self, observation: Any, deterministic: bool = False) -> th.Tensor:
        if isinstance(observation, dict):
            raise ValueError("observation must be an array, not a dict")
        obs = observation.detach().cpu().numpy()
        obs = obs.reshape(-1, obs.shape[-1])
        actions, _ = self.expert.predict(obs, deterministic=deterministic)
        return th.as_tensor(actions, device=self.device)

    def _choose_action(self, obs: Any) -> np.ndarray:
        return self.expert.predict(np.asarray(obs))[0]


def as_sb3_policy(
    model: SequenceModel,
    task: SequenceTask | None = None,
    seed: int | np.random.Generator | None = None,
    *,
    env: VecEnv | gym.Env | None = None,
) -> ImitationExpert:
    """``model`` (the task's expert, a fitted policy, any sequence model of the task) as an SB3
    ``BasePolicy`` on the task's env: ``predict`` samples (or, deterministic, takes the argmax
    of) its next-token law at each observation.

    ``task`` defaults to a fitted policy's own; ``env``, when given, must have the task's
    spaces (ValueError otherwise).
    """
    task = getattr(model, "task", None) if task is None else task
    if not isinstance(task, SequenceTask):
        raise ValueError("task must be given for a sequence model that is not a FittedPolicy")
    obs_space, act_space = observation_space(task), gym.spaces.Discrete(task.vocab_size)
    if env is not None and not has_task_spaces(task, env.observation_space, env.action_space):
        raise ValueError(f"env spaces ({env.observation_space}, {env.action_space}) must be "
                         f"the task's ({obs_space}, {act_space})")
    return ImitationExpert(obs_space, act_space, task, seed, model=model)


def make_imitation_expert(
    venv_or_env: VecEnv | gym.Env,
    task: SequenceTask,
    seed: int | np.random.Generator | None = None,
) -> ImitationExpert:
    """The task's expert as an SB3 policy: ``as_sb3_policy(task.expert, task, seed,
    env=venv_or_env)`` (kept for existing scripts; use :func:`as_sb3_policy`)."""
    return as_sb3_policy(task.expert, task, seed, env=venv_or_env)
