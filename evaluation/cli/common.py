"""What every ``ntp-bench`` subcommand shares: the usage error and flag parsers."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["Parser", "UsageError", "count", "positive_int"]


class UsageError(ValueError):
    """A bad command line: reported in one line, exit status 2, nothing written."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (``main`` reports them)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(message)


def positive_int(name: str, text: str, high: int | None = None) -> int:
    """``text`` as an integer in ``[1, high]``; UsageError naming ``name`` otherwise."""
    span = "a positive integer" if high is None else f"an integer in [1, {high}]"
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be {span}, got {text!r}") from None
    if value < 1 or (high is not None and value > high):
        raise UsageError(f"{name} must be {span}, got {text!r}")
    return value


def count(name: str, text: str) -> int:
    """``text`` as an integer >= 0; UsageError naming ``name`` otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"{name} must be an integer >= 0, got {text!r}")
    return value
