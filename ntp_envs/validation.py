"""Argument checks that fail with a ValueError naming the parameter and its accepted range."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; ValueError otherwise."""
    span = f"in [{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer {span}, got {value!r}")
    if int(value) < low or (high is not None and int(value) > high):
        raise ValueError(f"{name} must be an integer {span}, got {value!r}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the given interval; ValueError otherwise."""
    span = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    try:
        fvalue = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in {span}, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(fvalue):
        raise ValueError(f"{name} must be a number in {span}, got {value!r}")
    if fvalue < low or fvalue > high or (low_open and fvalue == low) or (
        high_open and fvalue == high
    ):
        raise ValueError(f"{name} must be a number in {span}, got {value!r}")
    return fvalue


def reject_unknown(env_name: str, unknown: Mapping[str, Any], accepted: list[str]) -> None:
    """ValueError listing unknown keyword arguments and the accepted ones."""
    if unknown:
        raise ValueError(
            f"{env_name}: unknown keyword argument(s) {sorted(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
