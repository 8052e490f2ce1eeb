"""Gymnasium environments where an episode generates one sequence, token by token.

``import ntp_envs`` registers every env under the ``ntp_envs/`` namespace.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from ntp_envs.sequence_model import (
    FinitePrompts,
    FiniteStateModel,
    FiniteStateTables,
    PromptDistribution,
    SequenceModel,
)
from ntp_envs.task import SequenceTask

ENTRY_POINTS: dict[str, str] = {
    "ntp_envs/ARLinear-v0": "ntp_envs.ar_linear:ARLinearEnv",
    "ntp_envs/MixtureProduct-v0": "ntp_envs.mixture_product:MixtureProductEnv",
    "ntp_envs/FiniteClassBarrier-v0": "ntp_envs.finite_class_barrier:FiniteClassBarrierEnv",
    "ntp_envs/ParityCoT-v0": "ntp_envs.parity_cot:ParityCoTEnv",
    "ntp_envs/MultiplicationCoT-v0": "ntp_envs.multiplication_cot:MultiplicationCoTEnv",
    "ntp_envs/PathStar-v0": "ntp_envs.path_star:PathStarEnv",
}


def vector_entry_point(env_id: str) -> str:
    """The registry's ``vector_entry_point`` of ``env_id``: a natively batched vector env
    (:mod:`ntp_envs.vector`, imported only when one is made)."""
    return "ntp_envs.vector:" + env_id.rsplit("/", 1)[-1].replace("-", "_")


for _env_id, _entry in ENTRY_POINTS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry,
                     vector_entry_point=vector_entry_point(_env_id))


def registered_env_ids() -> list[str]:
    """Every env id this package registers."""
    return list(ENTRY_POINTS)


def make_task(env_id: str, **kwargs: Any) -> SequenceTask:
    """The :class:`SequenceTask` behind ``gymnasium.make(env_id, **kwargs)``."""
    if env_id not in ENTRY_POINTS:
        raise ValueError(f"env_id must be one of {registered_env_ids()}, got {env_id!r}")
    env = gym.make(env_id, disable_env_checker=True, **kwargs)
    return env.unwrapped.task  # type: ignore[attr-defined]


__all__ = [
    "FinitePrompts",
    "FiniteStateModel",
    "FiniteStateTables",
    "PromptDistribution",
    "SequenceModel",
    "SequenceTask",
    "make_task",
    "registered_env_ids",
    "vector_entry_point",
]
