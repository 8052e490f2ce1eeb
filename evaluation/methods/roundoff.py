"""Clipping exact divergences to their ranges, after checking the excess is only round-off.

Exact methods compute ``D_H^2 = -2 expm1(log BC)``, ``KL(P || Q) = sum P log(P / Q)`` and
``TV = -expm1(log overlap)`` from sums that rounding can push a hair outside ``[0, 2]``,
``[0, inf]`` and ``[0, 1]``. They clip into the range only when the raw value lies within
:data:`ROUNDOFF_TOLERANCE` of it. A raw value farther out (or NaN) is no round-off: a model
whose probabilities do not sum to one, or a bug; it raises a ``ValueError`` naming the
quantity and the raw value instead of passing as a plausible number.
"""

from __future__ import annotations

import math

__all__ = [
    "ROUNDOFF_TOLERANCE",
    "checked_in_range",
    "checked_kl",
    "hellinger2_from_log_bc",
    "tv_from_log_overlap",
]

ROUNDOFF_TOLERANCE = 1e-6
"""Largest distance (absolute) outside its range that a raw exact value may lie and still be
read as round-off. It covers float64 sums over millions of terms and float32 learners whose
per-token probabilities sum to ``1 +- 1e-7`` over tens of tokens; a model whose mass is off
by more than this, or a sign error, is reported."""


def checked_in_range(name: str, raw: float, low: float, high: float) -> float:
    """``raw`` clipped to ``[low, high]``; ``ValueError`` if it is NaN or lies farther than
    :data:`ROUNDOFF_TOLERANCE` outside."""
    if math.isnan(raw) or raw < low - ROUNDOFF_TOLERANCE or raw > high + ROUNDOFF_TOLERANCE:
        raise ValueError(f"{name} computed exactly is {raw!r}, outside [{low}, {high}] by more "
                         f"than the round-off tolerance {ROUNDOFF_TOLERANCE} (are both models' "
                         "probabilities normalised?)")
    return min(max(raw, low), high) + 0.0  # + 0.0: never -0.0


def hellinger2_from_log_bc(log_bc: float) -> float:
    """``D_H^2 = 2 - 2 BC`` computed as ``-2 expm1(log BC)``, checked and clipped to ``[0, 2]``."""
    return checked_in_range("D_H^2", 2.0 * _one_minus_exp(log_bc), 0.0, 2.0)


def tv_from_log_overlap(log_overlap: float) -> float:
    """``TV = 1 - sum min(P, Q)`` computed as ``-expm1(log overlap)``, checked and clipped to
    ``[0, 1]``."""
    return checked_in_range("TV", _one_minus_exp(log_overlap), 0.0, 1.0)


def _one_minus_exp(log_x: float) -> float:
    """``1 - exp(log_x)`` without cancellation (``-inf`` where ``exp`` overflows)."""
    return -math.inf if log_x > 700.0 else -math.expm1(log_x)


def checked_kl(raw: float) -> float:
    """``KL`` checked and clipped to ``[0, inf]``."""
    return checked_in_range("KL", raw, 0.0, math.inf)
