"""Learners: each fits from demonstrations (or the exact expert law) and returns a policy.

Agent names (built-ins, ``chunk:K`` and the other families, plug-ins) resolve in one place,
:mod:`agents.registry`; saved policies load by their ``kind`` (:func:`load_policy`).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from agents.base import Agent, FittedPolicy, load_policy, register_policy_kind
from agents.chunk_kr import ChunkKR
from agents.chunk_rho import ChunkRho
from agents.chunked_bc import ChunkedBC
from agents.linear_ar import LinearAR
from agents.logloss_bc import LogLossBC
from agents.registry import BUILT_IN, FAMILIES, agent_names, check_agent, make_agent
from agents.rho_estimator import RhoEstimator
from agents.robust_bc import RobustBC, RobustRho
from ntp_envs.task import SequenceTask

LAZY_POLICY_KINDS = {
    "sb3_actor_critic": ("agents.sb3_policy", "NeuralPolicy"),
    "mlp_ar": ("agents.mlp_ar", "MLPARPolicy"),
    "hf_lm": ("agents.hf_lm", "HFPolicy"),
}
"""Policy kinds whose modules need torch, SB3 or transformers: ``kind -> (module, class)``,
imported when a file of that kind is first loaded (importing the module registers the real
class in the stand-in's place)."""


def _lazy_kind(kind: str, module: str, name: str) -> type[FittedPolicy]:
    """A stand-in registered for ``kind`` that loads through ``module.name``."""

    class _Lazy(FittedPolicy):
        @classmethod
        def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                        info: dict[str, Any]) -> FittedPolicy:
            real = getattr(importlib.import_module(module), name)
            return real.from_arrays(task, arrays, info)

    _Lazy.kind = kind
    _Lazy.__qualname__ = _Lazy.__name__ = f"Lazy{name}"
    return register_policy_kind(_Lazy)


for _kind, (_module, _name) in LAZY_POLICY_KINDS.items():
    _lazy_kind(_kind, _module, _name)

__all__ = ["BUILT_IN", "FAMILIES", "Agent", "ChunkKR", "ChunkRho", "ChunkedBC", "FittedPolicy",
           "LinearAR", "LogLossBC", "RhoEstimator", "RobustBC", "RobustRho", "agent_names",
           "check_agent", "load_policy", "make_agent"]
