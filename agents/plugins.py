"""Agents from outside the suite (by import path or entry point) and what keys their rows.

:func:`agents.registry.make_agent` falls back here for a name it does not own. Accepted
(the spec grammar is :mod:`ntp_envs.plugins`)::

    mypkg.learners:MyBC                 an Agent subclass or a factory returning an Agent
    mypkg.learners:MyBC?hidden=32       ... called with keyword arguments
    examples/custom_agent.py:GRUBC      ... from a Python file
    my-bc                               an entry point of group ``ntp_gym.agents``

Sweep workers (local pool and Ray) call :func:`agents.make_agent` with the same string, so
they import a plug-in the same way: the module must be importable there too (installed, on
``PYTHONPATH``, or a file path the workers can read).
"""

from __future__ import annotations

import functools
import hashlib
import sys
import weakref
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from agents.base import Agent, agent_config
from agents.rho_select import RhoSelect
from ntp_envs.plugins import (
    AGENT_GROUP,
    describe_failure,
    entry_point_names,
    import_object,
    load_entry_point,
    parse_spec,
)

__all__ = ["DEVICE_MODULES", "SUITE_PACKAGES", "agent_identity", "build_agent",
           "plugin_agent_names", "resolve_plugin", "source_digest", "suite_version"]

SUITE_PACKAGES = ("agents", "evaluation", "experts", "ntp_envs")
"""Top-level packages of the suite: agents whose class lives elsewhere are plug-ins."""
DEVICE_MODULES = ("agents.gpt", "agents.hf_lm")
"""Suite modules whose agents run on the torch device named by ``$NTP_GYM_DEVICE``
(``ntp-bench sweep --device``); plug-ins may too."""
_DIGESTS: weakref.WeakKeyDictionary[ModuleType, str] = weakref.WeakKeyDictionary()


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
    except SystemExit as err:
        raise ValueError(f"{flag}: {source} exits when called ({describe_failure(err)})") from None
    if not isinstance(agent, Agent):
        raise ValueError(f"{flag}: {source} gave a {type(agent).__name__}, which is not an "
                         "agent (subclass agents.base.Agent: fit(task, demonstrations, rng) "
                         "-> FittedPolicy)")
    return agent


def resolve_plugin(name: str, accepted: str, flag: str = "agent") -> Agent:
    """The agent a plug-in ``name`` describes (module doc): an entry point, else an import
    path; ``accepted`` (the registry's names and forms) goes into the error for any other
    name."""
    spec = parse_spec(name, flag)
    obj = load_entry_point(AGENT_GROUP, spec.target, flag)
    if obj is None and not spec.is_import_path:
        raise ValueError(f"{flag}: unknown agent {name!r}; accepted: {accepted}")
    if obj is None:
        obj = import_object(spec.target, flag)
    return build_agent(obj, spec.kwargs, repr(spec.target), flag)


@functools.cache
def suite_version() -> str:
    """The installed ntp-gym version (``unknown`` for a checkout that was never installed)."""
    try:
        return metadata.version("ntp-gym")
    except metadata.PackageNotFoundError:
        return "unknown"


def source_digest(module_name: str) -> str:
    """``sha256:<16 hex>`` of the source file of the imported module ``module_name`` (or
    why there is none), read once per module object: the digest of the code this process
    runs, even when the file is edited after it was imported."""
    module = sys.modules.get(module_name)
    if module is None:
        return "not imported"
    if module not in _DIGESTS:
        path = getattr(module, "__file__", None)
        try:
            digest = ("no source file" if path is None else
                      "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16])
        except OSError as err:
            digest = f"source unreadable ({type(err).__name__})"
        _DIGESTS[module] = digest
    return _DIGESTS[module]


def _modules(agent: Agent) -> list[str]:
    """The modules defining ``agent``'s class and, for rho-select, its candidates' classes."""
    modules = [type(agent).__module__]
    if isinstance(agent, RhoSelect):
        for member in agent._members:
            modules += _modules(member)
    return list(dict.fromkeys(modules))


def agent_identity(agent: Agent, device: str = "cpu") -> dict[str, Any]:
    """What a sweep keys ``agent``'s rows by: :func:`agents.base.agent_config`, plus ``_code``
    (``{"ntp-gym": version}`` and, per plug-in module, :func:`source_digest` of its file: an
    edited plug-in keys new rows) and, for agents that may run on a torch device (those of
    :data:`DEVICE_MODULES` and plug-ins), ``_device``. Settings never start with ``_``, so
    neither key can clash with one."""
    modules = _modules(agent)
    plugins = [m for m in modules if m.partition(".")[0] not in SUITE_PACKAGES]
    identity = {**agent_config(agent),
                "_code": {"ntp-gym": suite_version(), **{m: source_digest(m) for m in plugins}}}
    if plugins or any(m in DEVICE_MODULES for m in modules):
        identity["_device"] = device
    return identity
