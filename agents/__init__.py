"""Learners: each fits from demonstrations (or the exact expert law) and returns a policy."""

from __future__ import annotations

from collections.abc import Callable

from agents.base import Agent, FittedPolicy, load_policy
from agents.logloss_bc import LogLossBC
from agents.rho_estimator import RhoEstimator
from agents.robust_bc import RobustBC

AGENTS: dict[str, Callable[[], Agent]] = {
    "logloss": LogLossBC,
    "robust": RobustBC,
    "rho": RhoEstimator,
}


def agent_names() -> list[str]:
    """Names accepted by :func:`make_agent` (and ``ntp-bench sweep --agents``)."""
    return list(AGENTS)


def make_agent(name: str) -> Agent:
    """The agent registered under ``name``; ValueError naming the accepted ones otherwise."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; accepted: {', '.join(agent_names())}")
    return AGENTS[name]()


__all__ = ["AGENTS", "Agent", "FittedPolicy", "LogLossBC", "RhoEstimator", "RobustBC",
           "agent_names", "load_policy", "make_agent"]
