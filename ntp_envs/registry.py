"""The suite's env ids: their entry points, Gymnasium registration, defaults and the
canonical form of an instance's kwargs. ``import ntp_envs`` registers them all."""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

__all__ = ["ENTRY_POINTS", "RENDER_KWARGS", "canonical_env_kwargs", "env_defaults",
           "registered_env_ids", "vector_entry_point"]

ENTRY_POINTS: dict[str, str] = {
    "ntp_envs/ARLinear-v0": "ntp_envs.ar_linear:ARLinearEnv",
    "ntp_envs/MixtureProduct-v0": "ntp_envs.mixture_product:MixtureProductEnv",
    "ntp_envs/FiniteClassBarrier-v0": "ntp_envs.finite_class_barrier:FiniteClassBarrierEnv",
    "ntp_envs/TiedLogitBarrier-v0": "ntp_envs.tied_logit_barrier:TiedLogitBarrierEnv",
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


RENDER_KWARGS = ("render_mode",)
"""Keyword arguments that change only rendering, never a number: dropped from an instance."""


def env_defaults(env_id: str) -> dict[str, Any]:
    """The default value of every keyword argument of ``env_id`` (``horizon`` included);
    ``{}`` for an env this package does not register (a plug-in: no defaults known)."""
    if env_id not in ENTRY_POINTS:
        return {}
    module = importlib.import_module(ENTRY_POINTS[env_id].split(":")[0])
    return dict(module.DEFAULTS)


def _is_default(value: Any, default: Any) -> bool:
    try:
        same = bool(value == default)
    except (TypeError, ValueError):  # e.g. an array compared with None
        return False
    return same and isinstance(value, bool) == isinstance(default, bool)


def canonical_env_kwargs(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without rendering-only ones and those equal to the env's defaults, so each
    distinct instance has one form (``{}``, ``{"weight": 0.05}`` and ``{"render_mode":
    "ansi"}`` are one MixtureProduct instance). Unknown kwargs are kept (``make_task``
    rejects them)."""
    defaults = env_defaults(env_id)
    return {k: v for k, v in sorted(kwargs.items()) if k not in RENDER_KWARGS
            and not (k in defaults and _is_default(v, defaults[k]))}


