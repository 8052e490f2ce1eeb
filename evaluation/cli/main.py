"""``ntp-bench``: run sweeps, report them, score saved policies, reproduce the claims.

    ntp-bench sweep --preset quick                  # fit and score; see ntp-bench sweep -h
    ntp-bench report --out runs/quick               # summary, CSV and plots of a store
    ntp-bench evaluate --policy runs/fit/logloss.npz
    ntp-bench reproduce --profile cpu               # every experiment, every claim
    ntp-bench agents                                # the names --agents accepts
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

import evaluation.cli.agents as agents
import evaluation.cli.evaluate as evaluate
import evaluation.cli.report as report
import evaluation.cli.reproduce as reproduce
import evaluation.cli.sweep as sweep
from evaluation.cli.common import Parser, UsageError
from evaluation.cli.sweep import SweepPlan

__all__ = ["build_parser", "main", "plan_sweep"]

COMMANDS = {"sweep": sweep, "report": report, "evaluate": evaluate, "reproduce": reproduce,
            "agents": agents}
"""Each subcommand's module: ``add_parser(subparsers)`` and ``run(args, console)``."""


def plan_sweep(argv: Sequence[str]) -> SweepPlan:
    """Check the arguments of ``ntp-bench sweep`` (``argv`` without ``sweep``): UsageError
    (a ValueError) naming the flag for any bad one. Starts no worker and writes nothing."""
    return sweep.plan(build_parser().parse_args(["sweep", *argv]))


def build_parser() -> argparse.ArgumentParser:
    """The ``ntp-bench`` argument parser."""
    parser = Parser(prog="ntp-bench", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ntp-bench``; returns the exit status."""
    console = Console(width=max(110, Console().width))
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command].run(args, console)
    except KeyboardInterrupt:
        print("ntp-bench: interrupted; finished jobs are stored, rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    except UsageError as err:
        print(f"ntp-bench: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"ntp-bench: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
