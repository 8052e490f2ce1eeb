"""``ntp-bench agents``: every agent name, name family and installed plug-in, with its
settings (:func:`agents.registry.describe_agents`)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from agents.registry import describe_agents

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``agents`` subcommand to ``ntp-bench``'s subparsers."""
    return sub.add_parser("agents", help="list the agent names --agents accepts, with their "
                                         "settings")


def run(args: argparse.Namespace, console: Console) -> int:
    """Print the table of agents."""
    table = Table(title="agents (--agents NAME; plug-ins: module:name, path.py:name, "
                        "entry points of ntp_gym.agents)")
    for column in ("name", "class", "settings"):
        table.add_column(column, overflow="fold")
    for name, cls, settings in describe_agents():
        table.add_row(name, cls, settings)
    console.print(table)
    return 0
