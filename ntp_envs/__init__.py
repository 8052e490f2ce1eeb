"""Gymnasium environments where an episode generates one sequence, token by token.

``import ntp_envs`` registers every env under the ``ntp_envs/`` namespace.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from ntp_envs.registry import (
    ENTRY_POINTS,
    RENDER_KWARGS,
    canonical_env_kwargs,
    env_defaults,
    registered_env_ids,
    vector_entry_point,
)
from ntp_envs.sequence_model import (
    FinitePrompts,
    FiniteStateModel,
    FiniteStateTables,
    PromptDistribution,
    SequenceModel,
)
from ntp_envs.task import SequenceTask


def make_task(env_id: str, **kwargs: Any) -> SequenceTask:
    """The :class:`SequenceTask` behind ``gymnasium.make(env_id, **kwargs)``; an ``env_id`` not
    registered here is a plug-in task (:func:`ntp_envs.plugins.resolve_task`)."""
    if env_id not in ENTRY_POINTS:
        from ntp_envs.plugins import resolve_task

        return resolve_task(env_id, kwargs)
    env = gym.make(env_id, disable_env_checker=True, **kwargs)
    return env.unwrapped.task  # type: ignore[attr-defined]


__all__ = [
    "ENTRY_POINTS",
    "RENDER_KWARGS",
    "FinitePrompts",
    "FiniteStateModel",
    "FiniteStateTables",
    "PromptDistribution",
    "SequenceModel",
    "SequenceTask",
    "canonical_env_kwargs",
    "env_defaults",
    "make_task",
    "registered_env_ids",
    "vector_entry_point",
]
