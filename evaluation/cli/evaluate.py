"""``ntp-bench evaluate``: score one saved policy against a task's expert.

    ntp-bench evaluate --env ntp_envs/ARLinear-v0 --env-kwargs '{"horizon": 8}' \\
        --policy ppo.zip --out runs/scored
    ntp-bench evaluate --policy runs/fit/logloss.npz

``--policy`` reads (:func:`evaluation.adapters.load_policy_file`, no code from the file runs):
a suite policy ``.npz`` (it names its task: ``--env`` optional for a suite env, needed for a
plug-in task, and when given it must be the file's env id and kwargs), an SB3 algorithm
``.zip`` (PPO, A2C), or an imitation / SB3 policy file written by ``torch.save`` (imitation's
``util.save_policy``, SB3's ``policy.save``). The row is a sweep's (:mod:`evaluation.score`);
with ``--out`` (checked before anything is read or written) it is written to
``OUT/results.sqlite`` beside sweep rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evaluation.cli.common import UsageError, check_out_folder

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to ``ntp-bench``'s subparsers."""
    parser = subparsers.add_parser("evaluate", help="score a saved policy (suite .npz, SB3 "
                                                    ".zip, imitation policy file)")
    parser.add_argument("--policy", required=True, help="policy file: .npz, .zip, or a "
                                                        "torch-saved SB3/imitation policy")
    parser.add_argument("--env", help="env id or plug-in task (optional for a suite .npz of a "
                                      "suite env; must then be the file's task)")
    parser.add_argument("--env-kwargs", default="{}", help="JSON object of env kwargs "
                                                           "(horizon included)")
    parser.add_argument("--label", help="the row's agent column (default: the file name)")
    parser.add_argument("--seed", default="0", help="seed of Monte Carlo estimates")
    parser.add_argument("--n-train", default="-1",
                        help="the policy's training-set size, if known (-1: unknown)")
    parser.add_argument("--eval-samples", default="100000",
                        help="Monte Carlo samples where exact evaluation is impossible")
    parser.add_argument("--oracle-starts", default="16",
                        help="random starts of the best-in-class search")
    parser.add_argument("--out", help="folder whose results.sqlite receives the row")
    return parser


def _int(flag: str, text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise ValueError(f"{flag} must be an integer >= {low}, got {text!r}")
    return value


def _cell(value: Any, stderr: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    spread = f" ± {stderr:.2g}" if stderr else ""
    return f"{value:.6g}{spread}"


def _print_row(console: Console, row: dict[str, Any]) -> None:
    table = Table(title=f"{row['agent']} on {row['env_id']} {row['env_kwargs']}, "
                        f"H={row['horizon']}")
    for column in ("D_H^2", "KL", "TV", "best in class", "C_apx", "eval method"):
        table.add_column(column, justify="right", overflow="fold")
    table.add_row(_cell(row["hellinger2"], row["hellinger2_stderr"]),
                  _cell(row["kl"], row["kl_stderr"]), _cell(row["tv"], row["tv_stderr"]),
                  _cell(row["best_in_class_hellinger2"]), _cell(row["c_apx"]),
                  str(row["eval_method"]))
    console.print(table)


def _score(args: argparse.Namespace, console: Console) -> int:
    from evaluation.adapters import load_policy_file
    from evaluation.bench.store import ResultStore
    from evaluation.bench.sweep import output_paths
    from evaluation.score import score
    from ntp_envs import make_task

    try:
        kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise ValueError(f"--env-kwargs must be a JSON object: {err}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {type(kwargs).__name__}")
    numbers = {"seed": _int("--seed", args.seed, 0), "n_train": _int("--n-train", args.n_train, -1),
               "eval_samples": _int("--eval-samples", args.eval_samples, 2),
               "oracle_starts": _int("--oracle-starts", args.oracle_starts, 1)}
    out = None if args.out is None else check_out_folder(args.out)
    task = None
    if args.env is not None:
        try:
            task = make_task(args.env, **kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"--env / --env-kwargs: {err}") from None
    elif kwargs:
        raise ValueError("--env-kwargs needs --env")
    model, task, kind = load_policy_file(args.policy, task, "--policy")
    label = args.label or Path(args.policy).name
    config = {"file": str(Path(args.policy).resolve()), "format": kind}
    if out is None:
        row = score(task, model, label=label, config=config, flag="--policy", **numbers)
    else:
        try:
            with ResultStore(output_paths(out)["store"]) as store:
                row = score(task, model, label=label, config=config, flag="--policy",
                            store=store, **numbers)
        except (OSError, sqlite3.Error) as err:  # e.g. the disk is full
            raise ValueError(f"--out {out}: {getattr(err, 'strerror', None) or err}") from None
    _print_row(console, row)
    if out is not None:
        console.print(f"wrote the row to {output_paths(out)['store']}")
    return 0 if row["status"] == "ok" else 1


def run(args: argparse.Namespace, console: Console) -> int:
    """Run ``ntp-bench evaluate``; bad input is a one-line UsageError naming the flag."""
    try:
        return _score(args, console)
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(str(err)) from None
