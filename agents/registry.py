"""Every agent name the suite accepts, in one place.

A name is one of:

* a built-in name (:data:`BUILT_IN`): ``logloss``, ``robust``, ``rho``, ...;
* ``family:settings`` of a name family (:data:`FAMILIES`): ``chunk:K``, ``chunk-rho:K``,
  ``chunk-kr:K``, ``rho-select:a+b+...``, ``hf:<model_type>?key=value&...``; each family is a
  small parser registered here;
* a plug-in (:mod:`agents.plugins`): an entry point of group ``ntp_gym.agents``, an import
  path ``module:name`` or a file ``path.py:name``, each with optional ``?key=value`` kwargs.

:func:`make_agent` resolves a name in that order; ``ntp-bench agents`` lists them
(:func:`describe_agents`). Modules with heavy dependencies (torch models, imitation,
transformers) are imported when their agent is first built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from agents.base import Agent, agent_config
from agents.chunk_hellinger import ChunkHellinger
from agents.chunk_kr import ChunkKR
from agents.chunk_rho import ChunkRho
from agents.chunked_bc import ChunkedBC
from agents.linear_ar import LinearAR
from agents.logloss_bc import LogLossBC
from agents.plugins import plugin_agent_names, resolve_plugin
from agents.rho_estimator import RhoEstimator
from agents.rho_select import RHO_SELECT_PREFIX, RhoSelect
from agents.robust_bc import RobustBC, RobustRho
from ntp_envs.chunk_tables import MAX_CHUNK_OUTCOMES
from ntp_envs.plugins import SPEC_FORMS, split_specs

__all__ = ["BUILT_IN", "FAMILIES", "NameFamily", "agent_names", "check_agent",
           "describe_agents", "make_agent"]


def _imitation_bc() -> Agent:
    from agents.imitation_agents import ImitationBC  # imitation/SB3: imported on first use

    return ImitationBC()


def _dagger() -> Agent:
    from agents.imitation_agents import DAgger

    return DAgger()


def _gpt(mode: str, large: bool = False) -> Callable[[], Agent]:
    """A factory of the path-star GPT agents (torch model code imported on first use)."""

    def make() -> Agent:
        from agents.gpt import CPU_CONFIG, LARGE_CONFIG, gpt_agent

        name = f"gpt-{mode}" + ("-large" if large else "")
        return gpt_agent(mode, LARGE_CONFIG if large else CPU_CONFIG, name)

    return make


def _mlp_ar() -> Agent:
    from agents.mlp_ar import MLPAR  # torch model code imported on first use

    return MLPAR()


BUILT_IN: dict[str, Callable[[], Agent]] = {
    "logloss": LogLossBC,
    "robust": RobustBC,
    "robust-rho": RobustRho,
    "rho": RhoEstimator,
    "imitation-bc": _imitation_bc,
    "dagger": _dagger,
    "gpt-tf": _gpt("tf"),  # path-star
    "gpt-reverse": _gpt("reverse"),
    "gpt-teacherless": _gpt("teacherless"),
    "gpt-teacherless-large": _gpt("teacherless", large=True),
    "linear-ar": LinearAR,  # CoT tasks (full-context learners)
    "mlp-ar": _mlp_ar,
}
"""Names without settings -> agent factory."""


@dataclass(frozen=True)
class NameFamily:
    """Agent names ``prefix:settings``: ``build(name, flag)`` parses one (ValueError naming
    ``flag`` and the accepted form otherwise)."""

    prefix: str
    form: str
    about: str
    build: Callable[[str, str], Agent]


def _chunk_size(name: str, flag: str) -> int:
    prefix, _, value = name.partition(":")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{flag}: {prefix} agent names are {prefix}:K with an integer K >= 1, "
                         f"got {name!r}") from None


def _chunk_family(prefix: str, cls: Callable[..., Agent], about: str) -> NameFamily:
    return NameFamily(prefix, f"{prefix}:K", about,
                      lambda name, flag: cls(chunk_size=_chunk_size(name, flag)))


def _rho_select(name: str, flag: str) -> Agent:
    names = tuple(split_specs(name.removeprefix(RHO_SELECT_PREFIX), "+"))
    if not names:
        raise ValueError(f"{flag}: {RHO_SELECT_PREFIX} needs at least one agent, e.g. "
                         f"{RHO_SELECT_PREFIX}logloss+robust")
    if any(n.startswith(RHO_SELECT_PREFIX) for n in names):
        raise ValueError(f"{flag}: {RHO_SELECT_PREFIX} cannot list another {RHO_SELECT_PREFIX} "
                         "agent")
    members = tuple(make_agent(n, flag) for n in names)
    return RhoSelect(candidates=names, name=name, _members=members)


def _hf(name: str, flag: str) -> Agent:
    from agents.hf_lm import hf_agent  # transformers: the hf extra, imported on first use

    return hf_agent(name, flag)


FAMILIES: dict[str, NameFamily] = {family.prefix: family for family in (
    _chunk_family("chunk", ChunkedBC, "chunk-level log loss (ChunkedBC), chunk size K in "
                  "[1, H]"),
    _chunk_family("chunk-rho", ChunkRho, "rho tournament on chunk log-likelihoods, chunk size "
                  "K in [1, H]"),
    _chunk_family("chunk-kr", ChunkKR, "ridge regression of the one-hot chunk outcome, chunk "
                  "size K in [1, H]"),
    _chunk_family("chunk-hellinger", ChunkHellinger, "the Hellinger projection of the chunk "
                  "laws onto the token class (proper), chunk size K in [1, H]"),
    NameFamily("rho-select", "rho-select:a+b+...", "the rho tournament over the fits of the "
               "listed agents", _rho_select),
    NameFamily("hf", "hf:<model_type>?key=value&...", "a transformers causal LM built from a "
               "config (random init; the hf extra)", _hf),
)}
"""Name families: ``prefix`` -> parser."""


def chunk_names(prefix: str = "chunk") -> list[str]:
    """``prefix:K`` for every ``K`` the outcome cap allows on binary tokens (listings)."""
    return [f"{prefix}:{k}" for k in range(1, int(math.log2(MAX_CHUNK_OUTCOMES)) + 1)]


def agent_names() -> list[str]:
    """Names that build an agent without settings to choose: the built-ins, the chunk
    families at K = 1..16, then installed plug-ins (entry-point group ``ntp_gym.agents``)."""
    names = list(BUILT_IN)
    for prefix in ("chunk", "chunk-rho", "chunk-kr"):
        names += chunk_names(prefix)
    return names + [n for n in plugin_agent_names() if n not in names]


def make_agent(name: str, flag: str = "agent") -> Agent:
    """The agent ``name`` describes (module doc); one-line ValueError naming ``flag`` and
    the accepted forms otherwise."""
    if name in BUILT_IN:
        return BUILT_IN[name]()
    prefix, colon, _ = name.partition(":")
    if colon and prefix in FAMILIES:
        return FAMILIES[prefix].build(name, flag)
    forms = ", ".join(f.form for f in FAMILIES.values())
    return resolve_plugin(name, f"{', '.join(BUILT_IN)}; {forms}; or a plug-in "
                                f"({', '.join(SPEC_FORMS)})", flag)


def check_agent(name: str, flag: str = "agent") -> None:
    """Check that ``name`` builds an agent (a plug-in is imported and constructed, nothing is
    fitted); one-line ValueError naming ``flag`` otherwise."""
    make_agent(name, flag)


def describe_agents() -> list[tuple[str, str, str]]:
    """``(name or form, class, settings)`` of every built-in name, family and installed
    plug-in, for ``ntp-bench agents``."""

    def settings(agent: Agent) -> str:
        config = agent_config(agent)
        cls = config.pop("class")
        config.pop("name", None)
        return cls, ", ".join(f"{k}={v}" for k, v in config.items())

    rows = []
    for name, factory in BUILT_IN.items():
        try:
            rows.append((name, *settings(factory())))
        except ImportError as err:  # an optional extra is missing
            rows.append((name, "-", f"needs an extra: {err}"))
    for family in FAMILIES.values():
        rows.append((family.form, "-", family.about))
    for name in plugin_agent_names():
        if name not in BUILT_IN:
            try:
                rows.append((name, *settings(make_agent(name))))
            except ValueError as err:
                rows.append((name, "-", str(err)))
    return rows

