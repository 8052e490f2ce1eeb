"""``ntp-bench``: run sweeps, export and plot results.

    ntp-bench sweep --env ntp_envs/ARLinear-v0 --env-kwargs '{"misspecification": 0.5}' \\
        --agents logloss --horizons 4,8,16,32,64,128,256 --seeds 3 --n-train 2000 --out runs/demo
    ntp-bench sweep --preset quick --backend local --workers 2
    ntp-bench sweep --preset quick --backend ray --address auto
    ntp-bench report --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pandas as pd
from rich.console import Console
from rich.table import Table

from agents import agent_names
from agents.base import DEVICE_ENV
from evaluation.analysis import growth_exponent, summarise
from evaluation.backends import BACKENDS, MAX_WORKERS, Backend, make_backend
from evaluation.cot_experiment import report_answers
from evaluation.pathstar_experiment import report_pathstar
from evaluation.plots import plot_divergence_vs_horizon
from evaluation.presets import PRESETS, preset_names
from evaluation.store import KEY_COLUMNS, ResultStore
from evaluation.sweep import SweepConfig, output_paths, run_sweep
from ntp_envs import make_task, registered_env_ids

MAX_HORIZONS = 64
MAX_SEEDS = 10_000
MAX_EVAL_SAMPLES = 10**8
MAX_ORACLE_STARTS = 10_000
MAX_DEMONSTRATION_TOKENS = 2**28


class UsageError(ValueError):
    """A bad command line: reported in one line, exit status 2, nothing written."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (``main`` reports them)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(message)


def _positive_int(name: str, text: str, high: int | None = None) -> int:
    span = "a positive integer" if high is None else f"an integer in [1, {high}]"
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be {span}, got {text!r}") from None
    if value < 1 or (high is not None and value > high):
        raise UsageError(f"{name} must be {span}, got {text!r}")
    return value


def _parse_horizons(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError("--horizons must list at least one horizon, e.g. 4,8,16")
    if len(parts) > MAX_HORIZONS:
        raise UsageError(f"--horizons must list at most {MAX_HORIZONS} values, got {len(parts)}")
    horizons = tuple(_positive_int("--horizons (each H >= 1)", p) for p in parts)
    return tuple(sorted(set(horizons)))


def _parse_env_kwargs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--env-kwargs must be a JSON object: {err}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--env-kwargs must be a JSON object, got {type(value).__name__}")
    if "horizon" in value:
        raise UsageError("--env-kwargs must not set horizon: use --horizons")
    return value


def _configs_from_args(args: argparse.Namespace) -> list[SweepConfig]:
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise UsageError(f"--preset must be one of {preset_names()}, got {args.preset!r}")
        explicit = [f for f in ("env", "agents", "horizons", "env_kwargs") if
                    getattr(args, f) is not None]
        if explicit:
            raise UsageError(f"--preset cannot be combined with --{explicit[0].replace('_', '-')}")
        return PRESETS[args.preset]
    if args.env is None:
        raise UsageError("give --env (or --preset)")
    if args.env not in registered_env_ids():
        raise UsageError(f"--env must be one of {registered_env_ids()}, got {args.env!r}")
    agents = tuple(a.strip() for a in (args.agents or "logloss").split(",") if a.strip())
    if not agents:
        raise UsageError("--agents must name at least one agent")
    for agent in agents:
        if agent not in agent_names():
            raise UsageError(f"--agents: unknown agent {agent!r}; accepted: {agent_names()}")
    config = SweepConfig(
        env_id=args.env,
        env_kwargs=_parse_env_kwargs(args.env_kwargs or "{}"),
        agents=agents,
        horizons=_parse_horizons(args.horizons or "4,8,16,32,64"),
        seeds=_positive_int("--seeds", args.seeds, MAX_SEEDS),
        n_train=_positive_int("--n-train", args.n_train),
        population=args.population,
        eval_samples=_positive_int("--eval-samples", args.eval_samples, MAX_EVAL_SAMPLES),
        oracle_starts=_positive_int("--oracle-starts", args.oracle_starts, MAX_ORACLE_STARTS),
    )
    tokens = config.n_train * max(config.horizons)
    if not config.population and tokens > MAX_DEMONSTRATION_TOKENS:
        raise UsageError(f"--n-train x the largest horizon must be <= {MAX_DEMONSTRATION_TOKENS} "
                         f"demonstration tokens (they are held in memory), got {tokens}")
    return [config]


def _backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend named on the command line (UsageError for bad flags)."""
    workers = None if args.workers is None else _positive_int("--workers", args.workers,
                                                                MAX_WORKERS)
    if args.address is not None and args.backend != "ray":
        raise UsageError("--address applies to --backend ray only")
    if args.backend == "serial" and workers not in (None, 1):
        raise UsageError("--workers must be 1 with --backend serial")
    if args.backend == "ray" and args.address is not None and workers is not None:
        raise UsageError("--workers sizes a local Ray instance only: drop it with --address")
    try:
        return make_backend(args.backend, workers, args.address)
    except ValueError as err:
        raise UsageError(f"--backend {args.backend}: {err}") from None


def _validate(configs: list[SweepConfig]) -> None:
    """Build every (env, kwargs, horizon) task once so bad kwargs fail before any write."""
    for config in configs:
        for horizon in config.horizons:
            try:
                make_task(config.env_id, **{**config.env_kwargs, "horizon": horizon})
            except (ValueError, TypeError) as err:
                raise UsageError(f"--env-kwargs / --horizons: {err}") from None


def _env_name(row: pd.Series) -> str:
    kwargs = "" if row["env_kwargs"] in ("{}", "") else f" {row['env_kwargs']}"
    return f"{row['env_id'].removeprefix('ntp_envs/')}{kwargs}"


def _print_summary(console: Console, frame: pd.DataFrame) -> None:
    summary = summarise(frame)
    if summary.empty:
        console.print("no successful jobs to summarise")
        return
    table = Table(title="D_H^2 and C_apx vs horizon (mean ± s.e. over seeds)")
    for column in ("env", "agent", "data", "H", "seeds", "D_H^2", "best in class", "C_apx"):
        table.add_column(column, justify="right")
    order = ["env_id", "env_kwargs", "agent", "n_train", "horizon"]
    for _, row in summary.sort_values(order).iterrows():
        data = "population" if row["n_train"] == 0 else f"n={row['n_train']}"
        def cell(name: str, digits: int, row: pd.Series = row, se: bool = True) -> str:
            mean = row[f"{name}_mean"]
            if pd.isna(mean):
                return "-"
            spread = f" ± {row[f'{name}_se']:.2g}" if se and row["seeds"] > 1 else ""
            return f"{mean:.{digits}g}{spread}"

        table.add_row(_env_name(row), row["agent"], data, str(row["horizon"]), str(row["seeds"]),
                      cell("hellinger2", 4), cell("best_in_class_hellinger2", 4, se=False),
                      cell("c_apx", 3))
    console.print(table)
    for _, row in growth_exponent(summary).iterrows():
        if pd.isna(row["slope"]):  # fewer than two horizons with a finite C_apx: no slope
            continue
        data = "population" if row["n_train"] == 0 else f"n={row['n_train']}"
        se = "" if pd.isna(row["slope_se"]) else f" ± {row['slope_se']:.2g}"
        console.print(f"growth exponent of C_apx in H, {_env_name(row)}, {row['agent']} ({data}): "
                      f"{row['slope']:.3f}{se} over {row['horizons']} horizons")


def _report(out: Path, keys: list[str] | None, console: Console) -> int:
    paths = output_paths(out)
    with ResultStore(paths["store"]) as store:
        store.export_csv(paths["csv"], keys)
        frame = store.results(keys)
    if frame.empty:
        console.print(f"no results in {paths['store']}")
        return 1
    ok = frame[frame["status"] == "ok"]
    if not ok.empty:
        plot_divergence_vs_horizon(summarise(ok), paths["plot"])
    _print_summary(console, frame)
    report_answers(ok, out, console)  # tasks with a right answer (CoT): accuracy table, plot
    report_pathstar(ok, out, console)  # PathStar: Clever-Hans table, OUT/pathstar.png
    console.print(f"wrote {paths['store']}, {paths['csv']}" +
                  (f", {paths['plot']}" if not ok.empty else ""))
    failed = frame[frame["status"] != "ok"].sort_values(KEY_COLUMNS, kind="stable")
    if not failed.empty:
        console.print(f"[red]{len(failed)} job(s) failed[/red] (rerun the same command to retry "
                      "them; finished jobs are kept):", highlight=False)
        for _, row in failed.iterrows():
            first = str(row["error"]).splitlines()[0] if row["error"] else ""
            data = "population" if row["n_train"] == 0 else f"n={row['n_train']}"
            console.print(f"  {_env_name(row)} {row['agent']} H={row['horizon']} "
                          f"seed={row['seed']} {data}: {first}", highlight=False, markup=False)
        return 1
    return 0


@dataclass(frozen=True)
class SweepPlan:
    """A checked ``ntp-bench sweep`` command: what runs, where, and the output folder."""

    configs: list[SweepConfig]
    backend: Backend
    out: Path
    progress: bool
    device: str | None = None


def _plan(args: argparse.Namespace) -> SweepPlan:
    configs = _configs_from_args(args)
    _validate(configs)
    device = None
    if args.device is not None:
        from agents.gpt import parse_device

        try:
            device = str(parse_device(args.device.strip(), "--device"))
        except ValueError as err:
            raise UsageError(str(err)) from None
    backend = _backend_from_args(args)
    out = Path(args.out or (f"runs/{args.preset}" if args.preset else "runs/sweep"))
    return SweepPlan(configs, backend, out, not args.quiet, device)


def plan_sweep(argv: Sequence[str]) -> SweepPlan:
    """Check the arguments of ``ntp-bench sweep`` (``argv`` without ``sweep``): UsageError
    (a ValueError) naming the flag for any bad one. Starts no worker and writes nothing."""
    return _plan(build_parser().parse_args(["sweep", *argv]))


def build_parser() -> argparse.ArgumentParser:
    """The ``ntp-bench`` argument parser."""
    parser = _Parser(prog="ntp-bench", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="fit agents across horizons and score them")
    sweep.add_argument("--preset", help=f"a named sweep: {', '.join(preset_names())}")
    sweep.add_argument("--env", help="registered env id, e.g. ntp_envs/ARLinear-v0")
    sweep.add_argument("--env-kwargs", help="JSON object of env kwargs (not horizon)")
    sweep.add_argument("--agents", help=f"comma-separated: {', '.join(agent_names())}")
    sweep.add_argument("--horizons", help="comma-separated H values, e.g. 4,8,16")
    sweep.add_argument("--seeds", default="3", help="number of seeds (default 3)")
    sweep.add_argument("--n-train", default="2000", help="demonstrations per fit")
    sweep.add_argument("--population", action="store_true",
                       help="fit on the exact expert law (infinite data)")
    sweep.add_argument("--eval-samples", default="100000",
                       help="Monte Carlo samples where exact evaluation is impossible")
    sweep.add_argument("--oracle-starts", default="16",
                       help="random starts of the best-in-class search")
    sweep.add_argument("--out", help="output folder (default runs/<preset> or runs/sweep)")
    sweep.add_argument("--backend", default="local", choices=BACKENDS,
                       help="where jobs run: local (process pool, default), ray, serial "
                            "(this process)")
    sweep.add_argument("--workers", help="parallel workers (local: processes, default "
                                         "min(cores, jobs); ray: CPUs of a local instance)")
    sweep.add_argument("--address", help="Ray cluster address (host:port or auto); "
                                         "default: start a local Ray instance")
    sweep.add_argument("--device", help="torch device of the neural agents (cpu, cuda, cuda:1, "
                                        "mps); default: $NTP_GYM_DEVICE or cpu")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    report = sub.add_parser("report", help="re-export CSV, plot and summary from a store")
    report.add_argument("--out", required=True, help="folder holding results.sqlite")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ntp-bench``; returns the exit status."""
    console = Console(width=max(110, Console().width))
    try:
        args = build_parser().parse_args(argv)
        if args.command == "report":
            out = Path(args.out)
            if not output_paths(out)["store"].is_file():
                raise UsageError(f"--out: no results.sqlite in {out}")
            return _report(out, None, console)
        plan = _plan(args)
        if plan.device is not None:  # inherited by the worker processes
            os.environ[DEVICE_ENV] = plan.device
        with ResultStore(output_paths(plan.out)["store"]) as store, plan.backend:
            keys = run_sweep(plan.configs, store, backend=plan.backend, progress=plan.progress)
        return _report(plan.out, keys, console)
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
