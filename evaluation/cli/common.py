"""What every ``ntp-bench`` subcommand shares: the usage error and flag parsers."""

from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path
from typing import NoReturn

__all__ = ["Parser", "UsageError", "check_out_folder", "count", "positive_int"]


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


def check_out_folder(text: str) -> Path:
    """The ``--out`` folder, checked before anything is written: one-line UsageError when it
    is empty, a file, below a file, not writable, or a name the file system refuses."""
    if not text.strip():
        raise UsageError(f"--out must name a folder, got {text!r}")
    out = Path(text)
    shown = f"{text[:80]!r}{'...' if len(text) > 80 else ''}"
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file, not a folder")
        existing = next(p for p in (out, *out.absolute().parents) if p.exists())
        store = out / "results.sqlite"
        store_read_only = store.exists() and not os.access(store, os.W_OK)
        name_max = os.pathconf(existing, "PC_NAME_MAX") if existing.is_dir() else None
    except OSError as err:  # e.g. ENAMETOOLONG: a name longer than the file system allows
        raise UsageError(f"--out {shown}: {err.strerror or err}") from None
    new_parts = out.absolute().parts[len(existing.absolute().parts):]  # folders to create
    if name_max is not None and any(len(os.fsencode(p)) > name_max for p in new_parts):
        raise UsageError(f"--out {shown}: {os.strerror(errno.ENAMETOOLONG)} (a name of more "
                         f"than {name_max} bytes)")
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable ({existing} is read-only)")
    if store_read_only:
        raise UsageError(f"--out {out}: its store {store} is read-only")
    return out
