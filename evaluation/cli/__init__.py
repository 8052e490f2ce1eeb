"""The ``ntp-bench`` command: one module per subcommand (:mod:`~evaluation.cli.sweep`,
:mod:`~evaluation.cli.report`, :mod:`~evaluation.cli.evaluate`, :mod:`~evaluation.cli.reproduce`),
:mod:`~evaluation.cli.main` dispatching to them."""

from evaluation.cli.common import UsageError
from evaluation.cli.main import build_parser, main, plan_sweep

__all__ = ["UsageError", "build_parser", "main", "plan_sweep"]
