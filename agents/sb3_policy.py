"""Bridges between the suite's policies and Stable-Baselines3, both ways.

* :class:`SB3PolicyModel`: the one way to score an SB3 policy (PPO or A2C trained from
  scratch, imitation's BC, a :class:`NeuralPolicy`): its action distribution on the env's
  observation encoding, as a :class:`~ntp_envs.sequence_model.SequenceModel`, so the
  evaluator scores it like any other policy (enumeration for tiny ``V**H``, Monte Carlo
  with a standard error otherwise).
* :class:`NeuralPolicy`: the fitted policy the neural agents return; saved without pickle
  (the ``state_dict`` tensors as numpy arrays, the architecture in the JSON metadata).
* :func:`as_sb3_policy` (from :mod:`experts.policy`) / :func:`load_sb3_policy`: any fitted
  policy (or sequence model) as an SB3 ``BasePolicy``: ``predict``, ``evaluate_policy``,
  imitation's ``rollout``.
* :func:`bc_initialised_ppo`: SB3 PPO whose policy starts from a :class:`NeuralPolicy`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import VecEnv

from agents.base import FittedPolicy, load_policy, register_policy_kind
from experts.policy import ImitationExpert, as_sb3_policy
from ntp_envs.base import encode_observations, has_task_spaces, observation_space
from ntp_envs.sequence_model import SequenceModel
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray
from ntp_envs.validation import check_int
from ntp_envs.vector import SequenceVecEnv, prefix_observations

__all__ = ["ACTIVATIONS", "NeuralPolicy", "SB3PolicyModel", "as_sb3_policy",
           "bc_initialised_ppo", "load_sb3_policy", "make_actor_critic"]

ACTIVATIONS = ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU")
"""Activation functions (``torch.nn`` class names) a saved architecture may name."""

CHUNK_FEATURES = 2**24
"""One-hot input features per forward pass (bounds memory: 64 MiB of float32)."""


def _check_architecture(net_arch: Any, activation_fn: Any) -> tuple[list[int], str]:
    if not isinstance(net_arch, list | tuple) or not all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in net_arch
    ):
        raise ValueError(f"net_arch must be a list of positive layer widths, got {net_arch!r}")
    if activation_fn not in ACTIVATIONS:
        raise ValueError(f"activation_fn must be one of {ACTIVATIONS}, got {activation_fn!r}")
    return [int(w) for w in net_arch], str(activation_fn)


def make_actor_critic(
    task: SequenceTask, net_arch: list[int] | tuple[int, ...] = (64, 64),
    activation_fn: str = "Tanh",
) -> ActorCriticPolicy:
    """An SB3 ``ActorCriticPolicy`` on the task's env spaces (one-hot ``MultiDiscrete``
    observations, flattened; separate policy and value MLPs of widths ``net_arch``)."""
    widths, activation = _check_architecture(list(net_arch), activation_fn)
    return ActorCriticPolicy(
        observation_space(task), spaces.Discrete(task.vocab_size),
        lr_schedule=lambda _: 0.0,  # trainers (imitation's BC, PPO) bring their own optimiser
        net_arch=widths, activation_fn=getattr(th.nn, activation),
        features_extractor_class=FlattenExtractor,
    )


def architecture(policy: ActorCriticPolicy) -> dict[str, Any]:
    """The JSON-able architecture of ``policy`` (what :func:`make_actor_critic` rebuilds)."""
    if type(policy) is not ActorCriticPolicy or not isinstance(
        policy.features_extractor, FlattenExtractor
    ):
        raise ValueError("policy must be an SB3 ActorCriticPolicy with a FlattenExtractor "
                         f"(as make_actor_critic builds), got {type(policy).__name__}")
    widths, activation = _check_architecture(policy.net_arch, policy.activation_fn.__name__)
    return {"net_arch": widths, "activation_fn": activation}


class SB3PolicyModel(SequenceModel):
    """``pi(a | x, a_{<h})`` = the SB3 policy's action distribution at the env observation
    ``encode_observations(task, x, a_{<h})``, computed in float64 from its logits.

    ``policy`` is an SB3 ``ActorCriticPolicy`` with a categorical action distribution (PPO's
    and A2C's ``MlpPolicy``, imitation's BC policy) or an algorithm holding one (``PPO``,
    ``A2C``: its ``.policy``), on the task's env spaces. A policy without an action
    distribution (DQN's Q-network) is refused: score it through the sequence model it acts by.
    """

    def __init__(self, task: SequenceTask, policy: ActorCriticPolicy | BaseAlgorithm) -> None:
        policy = check_actor_critic(policy)
        expected = observation_space(task)
        if not has_task_spaces(task, policy.observation_space, policy.action_space):
            raise ValueError(f"policy spaces ({policy.observation_space}, "
                             f"{policy.action_space}) must be the task's env spaces "
                             f"({expected}, Discrete({task.vocab_size}))")
        self.task = task
        self.policy = policy
        self.vocab_size = task.vocab_size
        self.horizon = task.horizon
        self._features = int(np.sum(expected.nvec))

    def logprobs(self, observations: IntArray) -> FloatArray:
        """Action log-probabilities ``(N, V)`` at env observations ``(N, D)``."""
        obs = np.asarray(observations, dtype=np.int64)
        out = np.empty((len(obs), self.vocab_size), dtype=np.float64)
        chunk = max(1, CHUNK_FEATURES // self._features)
        self.policy.set_training_mode(False)
        with th.no_grad():
            for start in range(0, len(obs), chunk):
                batch = th.as_tensor(obs[start : start + chunk], device=self.policy.device)
                logits = self.policy.get_distribution(batch).distribution.logits
                out[start : start + chunk] = th.log_softmax(logits.double(), dim=-1).cpu().numpy()
        return out

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        if prefixes.shape[1] >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, "
                             f"got {prefixes.shape[1]}")
        return self.logprobs(encode_observations(self.task, prompts, prefixes))

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        tokens = self._check_tokens(tokens)
        batch, length = tokens.shape
        out = np.empty(tokens.shape, dtype=np.float64)
        rows = max(1, CHUNK_FEATURES // (self._features * max(length, 1)))
        for start in range(0, batch, rows):
            part = slice(start, min(start + rows, batch))
            obs = prefix_observations(self.task, np.asarray(prompts)[part], tokens[part])
            logp = self.logprobs(obs.reshape(-1, obs.shape[-1]))
            out[part] = logp[np.arange(len(logp)), tokens[part].reshape(-1)].reshape(-1, length)
        return out


def check_actor_critic(policy: Any) -> ActorCriticPolicy:
    """``policy`` (or an algorithm's ``.policy``) if it is an ``ActorCriticPolicy`` with a
    categorical action distribution; ValueError naming what is accepted otherwise."""
    inner = policy.policy if isinstance(policy, BaseAlgorithm) else policy
    if not isinstance(inner, ActorCriticPolicy) or not isinstance(
        inner.action_dist, CategoricalDistribution
    ):
        name = type(inner).__name__
        raise ValueError(
            "policy must be an SB3 ActorCriticPolicy with a categorical action distribution "
            "(PPO's or A2C's MlpPolicy on the env, imitation's BC policy) or an algorithm "
            f"holding one; got {name}"
            + (" (a Q-network has no action distribution to score)" if "DQN" in name else ""))
    return inner


@register_policy_kind
class NeuralPolicy(FittedPolicy):
    """A fitted SB3 ``ActorCriticPolicy`` (``sb3_policy``), scored through its action
    distribution; ``info["architecture"]`` records how to rebuild it."""

    kind = "sb3_actor_critic"

    def __init__(self, task: SequenceTask, policy: ActorCriticPolicy,
                 info: dict[str, Any] | None = None) -> None:
        arch = architecture(policy)
        self.sb3_policy = policy
        super().__init__(task, SB3PolicyModel(task, policy),
                         {**(info or {}), "architecture": arch})

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"state.{name}": tensor.detach().cpu().numpy()
                for name, tensor in self.sb3_policy.state_dict().items()}

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> NeuralPolicy:
        arch = info.get("architecture")
        if not isinstance(arch, dict):
            raise ValueError("saved info must hold the architecture (net_arch, activation_fn)")
        policy = make_actor_critic(task, *_check_architecture(arch.get("net_arch"),
                                                              arch.get("activation_fn")))
        state = {name.removeprefix("state."): th.as_tensor(value)
                 for name, value in arrays.items() if name.startswith("state.")}
        expected = policy.state_dict()
        if set(state) != set(expected) or any(
            state[k].shape != expected[k].shape for k in expected
        ):
            raise ValueError("saved weights do not match the saved architecture")
        if not all(bool(th.isfinite(v).all()) for v in state.values()):
            raise ValueError("saved weights must be finite")
        policy.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
        return cls(task, policy, info)


def load_sb3_policy(
    path: str | os.PathLike[str], seed: int | np.random.Generator | None = None,
    task: SequenceTask | None = None,
) -> ImitationExpert:
    """A policy saved by :meth:`FittedPolicy.save`, loaded as an SB3 ``BasePolicy`` (``task``:
    as :func:`agents.base.load_policy`, needed for a plug-in task's policy)."""
    return as_sb3_policy(load_policy(path, task), seed=seed)


def bc_initialised_ppo(
    policy: NeuralPolicy, env: VecEnv | None = None, *, num_envs: int = 16, seed: int = 0,
    **ppo_kwargs: Any,
) -> PPO:
    """SB3 PPO on ``policy``'s task env (``env``, default a :class:`SequenceVecEnv` of
    ``num_envs``), its policy and value networks starting from ``policy``'s weights."""
    if not isinstance(policy, NeuralPolicy):
        raise ValueError(f"policy must be a NeuralPolicy (from imitation-bc or dagger), "
                         f"got {type(policy).__name__}")
    if env is None:
        env = SequenceVecEnv(policy.task, check_int("num_envs", num_envs, 1))
    arch = policy.info["architecture"]
    policy_kwargs = {"net_arch": arch["net_arch"],
                     "activation_fn": getattr(th.nn, arch["activation_fn"])}
    model = PPO("MlpPolicy", env, policy_kwargs=policy_kwargs, seed=seed, device="cpu",
                **ppo_kwargs)
    model.policy.load_state_dict(policy.sb3_policy.state_dict())
    return model
