"""``ntp-bench``: run sweeps, export and plot results.

    ntp-bench sweep --env ntp_envs/ARLinear-v0 --env-kwargs '{"misspecification": 0.5}' \\
        --agents logloss --horizons 4,8,16,32,64,128,256 --seeds 3 --n-train 2000 --out runs/demo
    ntp-bench sweep --preset quick
    ntp-bench report --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from agents import agent_names
from evaluation.analysis import growth_exponent, summarise
from evaluation.plots import plot_divergence_vs_horizon
from evaluation.presets import PRESETS, preset_names
from evaluation.store import ResultStore
from evaluation.sweep import SweepConfig, output_paths, run_sweep
from ntp_envs import make_task, registered_env_ids


class UsageError(ValueError):
    """A bad command line: reported in one line, exit status 2, nothing written."""


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise UsageError(f"{name} must be a positive integer, got {text!r}")
    return value


def _parse_horizons(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError("--horizons must list at least one horizon, e.g. 4,8,16")
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
    return [SweepConfig(
        env_id=args.env,
        env_kwargs=_parse_env_kwargs(args.env_kwargs or "{}"),
        agents=agents,
        horizons=_parse_horizons(args.horizons or "4,8,16,32,64"),
        seeds=_positive_int("--seeds", args.seeds),
        n_train=_positive_int("--n-train", args.n_train),
        population=args.population,
        eval_samples=_positive_int("--eval-samples", args.eval_samples),
        oracle_starts=_positive_int("--oracle-starts", args.oracle_starts),
    )]


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
    console.print(f"wrote {paths['store']}, {paths['csv']}" +
                  (f", {paths['plot']}" if not ok.empty else ""))
    failed = frame[frame["status"] != "ok"]
    if not failed.empty:
        console.print(f"[red]{len(failed)} job(s) failed:[/red]")
        for _, row in failed.iterrows():
            first = str(row["error"]).splitlines()[0] if row["error"] else ""
            console.print(f"  {row['agent']} H={row['horizon']} seed={row['seed']}: {first}")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ntp-bench`` argument parser."""
    parser = argparse.ArgumentParser(prog="ntp-bench", description=__doc__,
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
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    report = sub.add_parser("report", help="re-export CSV, plot and summary from a store")
    report.add_argument("--out", required=True, help="folder holding results.sqlite")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ntp-bench``; returns the exit status."""
    args = build_parser().parse_args(argv)
    console = Console(width=max(110, Console().width))
    try:
        if args.command == "report":
            out = Path(args.out)
            if not output_paths(out)["store"].is_file():
                raise UsageError(f"--out: no results.sqlite in {out}")
            return _report(out, None, console)
        configs = _configs_from_args(args)
        _validate(configs)
        out = Path(args.out or (f"runs/{args.preset}" if args.preset else "runs/sweep"))
        keys: list[str] = []
        with ResultStore(output_paths(out)["store"]) as store:
            for config in configs:
                keys += run_sweep(config, store, progress=not args.quiet)
        return _report(out, keys, console)
    except UsageError as err:
        print(f"ntp-bench: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"ntp-bench: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
