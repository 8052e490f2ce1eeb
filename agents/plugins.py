"""Agents from outside the suite: by import path, by entry point, and the rho selector.

:func:`agents.make_agent` falls back here for a name it does not register itself. Accepted
(the spec grammar is :mod:`ntp_envs.plugins`)::

    mypkg.learners:MyBC                 an Agent subclass or a factory returning an Agent
    mypkg.learners:MyBC?hidden=32       ... called with keyword arguments
    examples/custom_agent.py:GRUBC      ... from a Python file
    my-bc                               an entry point of group ``ntp_gym.agents``
    rho-select:logloss+robust+my-bc     the rho tournament over the listed agents
                                        (:mod:`agents.rho_select`)

Sweep workers (local pool and Ray) call :func:`agents.make_agent` with the same string, so
they import a plug-in the same way: the module must be importable there too (installed, on
``PYTHONPATH``, or a file path the workers can read).
"""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from ntp_envs.plugins import (
    AGENT_GROUP,
    SPEC_FORMS,
    entry_point_names,
    import_object,
    load_entry_point,
    parse_spec,
)

__all__ = ["RHO_SELECT_PREFIX", "build_agent", "check_agent", "plugin_agent_names",
           "resolve_agent"]

RHO_SELECT_PREFIX = "rho-select:"


def plugin_agent_names() -> list[str]:
    """Agents that installed packages declare in the ``ntp_gym.agents`` entry-point group."""
    return entry_point_names(AGENT_GROUP)


def build_agent(obj: Any, kwargs: dict[str, Any], source: str, flag: str) -> Agent:
    """``obj(**kwargs)`` checked to be an :class:`~agents.base.Agent` (one-line ValueError
    naming ``flag`` otherwise)."""
    if not callable(obj):
        raise ValueError(f"{flag}: {source} is a {type(obj).__name__}, not an Agent subclass "
                         "or a factory returning an Agent")
    try:
        agent = obj(**kwargs)
    except TypeError as err:
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        raise ValueError(f"{flag}: {source} cannot be called with {given}: {err}") from None
    if not isinstance(agent, Agent):
        raise ValueError(f"{flag}: {source} gave a {type(agent).__name__}, which is not an "
                         "agent (subclass agents.base.Agent: fit(task, demonstrations, rng) "
                         "-> FittedPolicy)")
    return agent


def resolve_agent(name: str, accepted: list[str], flag: str = "agent") -> Agent:
    """The agent a plug-in ``name`` describes (module doc); ``accepted`` lists the built-in
    names for the error message."""
    if name.startswith(RHO_SELECT_PREFIX):
        from agents.rho_select import rho_select_agent

        return rho_select_agent(name, flag)
    spec = parse_spec(name, flag)
    obj = load_entry_point(AGENT_GROUP, spec.target, flag)
    if obj is None and not spec.is_import_path:
        raise ValueError(
            f"{flag}: unknown agent {name!r}; accepted: {', '.join(accepted)}, "
            f"{RHO_SELECT_PREFIX}a+b+..., or a plug-in ({', '.join(SPEC_FORMS)})")
    if obj is None:
        obj = import_object(spec.target, flag)
    return build_agent(obj, spec.kwargs, repr(spec.target), flag)


def check_agent(name: str, flag: str = "agent") -> None:
    """Check that ``name`` builds an agent (a plug-in is imported and constructed, nothing is
    fitted); one-line ValueError naming ``flag`` otherwise."""
    from agents import AGENTS, make_agent

    if name not in AGENTS:
        make_agent(name, flag)
