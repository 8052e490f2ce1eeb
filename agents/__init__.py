"""Learners: each fits from demonstrations (or the exact expert law) and returns a policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from agents.base import Agent, FittedPolicy, load_policy, register_policy_kind
from agents.chunk_kr import ChunkKR
from agents.chunk_rho import ChunkRho
from agents.chunked_bc import CHUNK_FAMILIES, ChunkedBC, chunk_agent, chunk_agent_names
from agents.linear_ar import LinearAR
from agents.logloss_bc import LogLossBC
from agents.plugins import plugin_agent_names, resolve_agent
from agents.rho_estimator import RhoEstimator
from agents.robust_bc import RobustBC
from ntp_envs.task import SequenceTask


def _imitation_bc() -> Agent:
    from agents.imitation_agents import ImitationBC  # imitation/SB3: imported on first use

    return ImitationBC()


def _dagger() -> Agent:
    from agents.imitation_agents import DAgger

    return DAgger()


@register_policy_kind
class _NeuralPolicyKind(FittedPolicy):
    """Loads ``sb3_actor_critic`` archives through :class:`agents.sb3_policy.NeuralPolicy`
    (imported on first use; importing it registers the real class in this one's place)."""

    kind = "sb3_actor_critic"

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> FittedPolicy:
        from agents.sb3_policy import NeuralPolicy

        return NeuralPolicy.from_arrays(task, arrays, info)


def _gpt(mode: str, large: bool = False) -> Callable[[], Agent]:
    """A factory of the path-star GPT agents (torch model code imported on first use)."""

    def make() -> Agent:
        from agents.gpt import CPU_CONFIG, LARGE_CONFIG, gpt_agent

        name = f"gpt-{mode}" + ("-large" if large else "")
        return gpt_agent(mode, LARGE_CONFIG if large else CPU_CONFIG, name)

    return make


@register_policy_kind
class _GPTPolicyKind(FittedPolicy):
    """Loads ``gpt`` archives through :class:`agents.gpt.GPTPolicy` (imported on first use;
    importing it registers the real class in this one's place)."""

    kind = "gpt"

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> FittedPolicy:
        from agents.gpt import GPTPolicy

        return GPTPolicy.from_arrays(task, arrays, info)


def _mlp_ar() -> Agent:
    from agents.mlp_ar import MLPAR  # torch model code imported on first use

    return MLPAR()


@register_policy_kind
class _MLPARPolicyKind(FittedPolicy):
    """Loads ``mlp_ar`` archives through :class:`agents.mlp_ar.MLPARPolicy` (imported on first
    use; importing it registers the real class in this one's place)."""

    kind = "mlp_ar"

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> FittedPolicy:
        from agents.mlp_ar import MLPARPolicy

        return MLPARPolicy.from_arrays(task, arrays, info)


@register_policy_kind
class _HFPolicyKind(FittedPolicy):
    """Loads ``hf_lm`` archives through :class:`agents.hf_lm.HFPolicy` (imported on first use;
    importing it registers the real class in this one's place)."""

    kind = "hf_lm"

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> FittedPolicy:
        from agents.hf_lm import HFPolicy

        return HFPolicy.from_arrays(task, arrays, info)


AGENTS: dict[str, Callable[[], Agent]] = {
    "logloss": LogLossBC,
    "robust": RobustBC,
    "rho": RhoEstimator,
    "imitation-bc": _imitation_bc,
    "dagger": _dagger,
}
AGENTS.update(chunk_agent_names())  # chunk:1 .. chunk:16 (make_agent parses any chunk:K)
AGENTS.update(chunk_agent_names("chunk-rho") | chunk_agent_names("chunk-kr"))  # idem
AGENTS.update({"gpt-tf": _gpt("tf"), "gpt-reverse": _gpt("reverse"),  # path-star
               "gpt-teacherless": _gpt("teacherless"),
               "gpt-teacherless-large": _gpt("teacherless", large=True)})
AGENTS.update({"linear-ar": LinearAR, "mlp-ar": _mlp_ar})  # CoT tasks (full-context learners)


def agent_names() -> list[str]:
    """Names accepted by :func:`make_agent` (and ``ntp-bench sweep --agents``): the suite's,
    then installed plug-ins' (entry-point group ``ntp_gym.agents``)."""
    return list(AGENTS) + [n for n in plugin_agent_names() if n not in AGENTS]


def make_agent(name: str, flag: str = "agent") -> Agent:
    """The agent registered under ``name``, or a plug-in spec (:mod:`agents.plugins`:
    ``module:name``, entry point, ``rho-select:a+b``); ValueError naming ``flag`` and the
    accepted forms otherwise."""
    if name not in AGENTS and name.startswith("hf:"):  # transformers models (the hf extra)
        from agents.hf_lm import hf_agent

        return hf_agent(name, flag)
    if name not in AGENTS and name.partition(":")[0] in CHUNK_FAMILIES:
        return chunk_agent(name)  # ValueError naming the accepted range of K
    if name not in AGENTS:
        return resolve_agent(name, list(AGENTS), flag)
    return AGENTS[name]()


__all__ = ["AGENTS", "CHUNK_FAMILIES", "Agent", "ChunkKR", "ChunkRho", "ChunkedBC", "FittedPolicy",
           "LinearAR", "LogLossBC", "RhoEstimator", "RobustBC", "agent_names", "load_policy",
           "make_agent"]
