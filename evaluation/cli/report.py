"""``ntp-bench report`` and the report every sweep ends with: summary tables, CSV, plots,
worst case over families, failed and unconverged jobs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from evaluation.bench.analysis import exponent_text, growth_exponent, summarise, worst_case
from evaluation.bench.plots import family_title, plot_divergence_vs_horizon, plot_worst_case
from evaluation.bench.store import KEY_COLUMNS, SETTING_COLUMNS, ResultStore, write_atomically
from evaluation.bench.sweep import output_paths
from evaluation.cli.common import UsageError
from evaluation.experiments.cot import report_answers
from evaluation.experiments.pathstar import report_pathstar
from ntp_envs import env_defaults

__all__ = ["add_parser", "report", "run"]


def _env_name(row: pd.Series, grids: dict[str, tuple[str, ...]] | None = None) -> str:
    """``Name {kwargs}`` of a row's instance, a family's grid kwargs shown at their default
    too (``grids``: :func:`grid_names`)."""
    kwargs = json.loads(row["env_kwargs"]) if row["env_kwargs"] else {}
    defaults = env_defaults(row["env_id"])
    names = (grids or {}).get(row["env_id"], ())
    kwargs = dict(sorted({**{k: defaults[k] for k in names if k in defaults}, **kwargs}.items()))
    shown = f" {json.dumps(kwargs, separators=(',', ':'))}" if kwargs else ""
    return f"{row['env_id'].removeprefix('ntp_envs/')}{shown}"


def _data(row: pd.Series) -> str:
    return "population" if row["n_train"] == 0 else f"n={row['n_train']}"


def _settings_key(frame: pd.DataFrame) -> pd.Series:
    return frame[SETTING_COLUMNS].apply(lambda row: " ".join(map(str, row)), axis=1)


def _settings_labels(summary: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """A short label per set of settings (``eval_samples``, ``oracle_starts``,
    ``agent_config``; keyed by :func:`_settings_key`) and a legend, both empty when every
    row has the same settings."""
    keys = _settings_key(summary)
    distinct = list(dict.fromkeys(keys))
    if not summary.duplicated(["env_id", "env_kwargs", "agent", "n_train", "horizon"]).any():
        return {}, []  # one set of settings per agent and horizon: nothing to tell apart
    number = {key: f"#{i + 1}" for i, key in enumerate(distinct)}
    legend = []
    for key in distinct:
        row = summary.loc[keys[keys == key].index[0]]
        legend.append(f"settings {number[key]}: " + ", ".join(
            f"{name}={'NULL (older store)' if pd.isna(row[name]) else row[name]}"
            for name in SETTING_COLUMNS))
    return number, legend


def _print_summary(console: Console, frame: pd.DataFrame) -> None:
    grids = grid_names(frame)
    summary = summarise(frame)
    if summary.empty:
        console.print("no successful jobs to summarise")
        return
    order = ["env_id", "env_kwargs", "agent", "n_train", *SETTING_COLUMNS, "horizon"]
    summary = summary.sort_values(order, kind="stable").reset_index(drop=True)
    number, legend = _settings_labels(summary)
    labels = _settings_key(summary).map(number)
    table = Table(title="D_H^2 and C_apx vs horizon (mean ± s.e. over seeds)")
    columns = ["env", "agent", "data", *(["settings"] if legend else []), "H", "seeds", "D_H^2",
               "best in class", "C_apx"]
    for column in columns:
        table.add_column(column, justify="right", overflow="fold")
    for index, row in summary.iterrows():
        def cell(name: str, digits: int, row: pd.Series = row, se: bool = True) -> str:
            mean = row[f"{name}_mean"]
            if pd.isna(mean):
                return "-"
            spread = f" ± {row[f'{name}_se']:.2g}" if se and row["seeds"] > 1 else ""
            return f"{mean:.{digits}g}{spread}"

        settings = [labels[index]] if legend else []
        table.add_row(_env_name(row, grids), row["agent"], _data(row), *settings,
                      str(row["horizon"]), str(row["seeds"]), cell("hellinger2", 4),
                      cell("best_in_class_hellinger2", 4, se=False), cell("c_apx", 3))
    console.print(table)
    for line in legend:
        console.print(line, highlight=False, markup=False)
    growth = growth_exponent(summary)
    growth_labels = _settings_key(growth).map(number) if legend else None
    for index, row in growth.iterrows():
        if pd.isna(row["slope"]):  # fewer than two horizons with a finite C_apx: no slope
            continue
        se = "" if pd.isna(row["slope_se"]) else f" ± {row['slope_se']:.2g}"
        label = f", settings {growth_labels[index]}" if legend else ""
        console.print(f"growth exponent of C_apx in H, {_env_name(row, grids)}, {row['agent']} "
                      f"({_data(row)}{label}): {row['slope']:.3f}{se} over {row['horizons']} "
                      "horizons", highlight=False)


def _attained(row: pd.Series) -> str:
    """The grid kwargs of the instance attaining the worst case, e.g. ``bias=0.05``."""
    grid = json.loads(row["family"])["grid"]
    kwargs = {**env_defaults(row["env_id"]), **json.loads(row["worst_kwargs"])}
    return ", ".join(f"{name}={kwargs.get(name)}" for name in grid)


def _print_worst_case(console: Console, worst: pd.DataFrame) -> None:
    for (env_id, family), frame in worst.groupby(["env_id", "family"], sort=False):
        table = Table(title=f"worst case of C_apx over the family {family_title(env_id, family)}"
                            " (seed mean per instance)")
        for column in ("agent", "data", "H", "instances", "worst C_apx", "attained at",
                       "mean C_apx", "worst's exponent in H"):
            table.add_column(column, justify="right", overflow="fold")
        for _, row in frame.iterrows():
            table.add_row(row["agent"], _data(row), str(row["horizon"]), str(row["instances"]),
                          f"{row['worst_c_apx']:.4g}", _attained(row),
                          f"{row['mean_c_apx']:.4g}", exponent_text(row))
        console.print(table)


def grid_names(frame: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Env id -> the kwargs its families in ``frame`` sweep (``family`` column)."""
    names: dict[str, dict[str, None]] = {}
    for env_id, family in frame[["env_id", "family"]].drop_duplicates().itertuples(
            index=False, name=None):
        grid = json.loads(family)["grid"] if isinstance(family, str) and family else {}
        names.setdefault(env_id, {}).update(dict.fromkeys(grid))
    return {env_id: tuple(found) for env_id, found in names.items()}


def _writable(out: Path) -> bool:
    """Whether this process may write in ``out`` (and to its store, if there is one)."""
    store = output_paths(out)["store"]
    return os.access(out, os.W_OK | os.X_OK) and (not store.exists()
                                                 or os.access(store, os.W_OK))


def _write_outputs(out: Path, frame: pd.DataFrame, console: Console) -> list[Path]:
    """Write the CSV (every stored row), the plots and the worst-case table, each with the
    store's permission bits; return them."""
    paths = output_paths(out)
    with ResultStore(paths["store"], create=False) as store:
        mode = store.file_mode()
        written = [store.export_csv(paths["csv"])]
    ok = frame[frame["status"] == "ok"]
    if not ok.empty:
        written.append(plot_divergence_vs_horizon(summarise(ok), paths["plot"], mode,
                                                  grid_names(ok)))
    worst = worst_case(frame)
    worst = worst[worst["family"].map(lambda f: bool(json.loads(f)["grid"]))]
    if not worst.empty:
        written.append(write_atomically(paths["worst_case"], lambda tmp: worst.to_csv(
            tmp, index=False, float_format="%.17g"), mode=mode))
        written += plot_worst_case(worst, paths["worst_plot"], paths["chunk_plot"], mode)
        _print_worst_case(console, worst)
    return written


def report(out: Path, keys: list[str] | None, console: Console, summary: bool = True) -> int:
    """Export and summarise every row of the store in ``out`` (with ``summary`` False: one
    line, no table, CSV or plot); the exit status counts the failed and unconverged rows
    among ``keys`` (this sweep's jobs; all rows when None)."""
    paths = output_paths(out)
    readonly = not _writable(out)
    with ResultStore(paths["store"], readonly=readonly, create=False) as store:
        frame = store.results()
    if frame.empty:
        console.print(f"no results in {paths['store']}")
        return 1
    mine = "" if keys is None else f", {frame['job_key'].isin(set(keys)).sum()} from this sweep"
    if not summary:
        console.print(f"stored {len(frame)} row(s) in {paths['store']}{mine}; ntp-bench report "
                      f"--out {out} summarises them", highlight=False)
    else:
        _print_summary(console, frame)
    if summary and readonly:
        console.print(f"{out} is read-only: summary read from {paths['store']}; no CSV, "
                      "table or plot written (copy the folder to write them)", highlight=False)
    elif summary:
        written = _write_outputs(out, frame, console)
        ok = frame[frame["status"] == "ok"]
        report_answers(ok, out, console)  # tasks with a right answer (CoT): accuracy, plot
        report_pathstar(ok, out, console)  # PathStar: Clever-Hans table, OUT/pathstar.png
        console.print(f"wrote {paths['store']} ({len(frame)} row(s){mine}), "
                      f"{', '.join(str(p) for p in written)}", highlight=False)
    ours = frame if keys is None else frame[frame["job_key"].isin(set(keys))]
    bad = ours[ours["status"] != "ok"].sort_values(KEY_COLUMNS, kind="stable")
    failed, unconverged = bad[bad["status"] == "failed"], bad[bad["status"] == "unconverged"]
    if not failed.empty:
        console.print(f"[red]{len(failed)} job(s) failed[/red] (rerun the same command to retry "
                      "them; finished jobs are kept):", highlight=False)
    if not unconverged.empty:
        console.print(f"[red]{len(unconverged)} job(s) unconverged[/red]: the solver reported "
                      "converged: false; their numbers are stored with status unconverged, left "
                      "out of the summary and not retried (the fit is deterministic: change the "
                      "agent's settings):", highlight=False)
    for _, row in bad.iterrows():
        first = str(row["error"]).splitlines()[0] if row["error"] else ""
        console.print(f"  {row['status']}: {_env_name(row)} {row['agent']} H={row['horizon']} "
                      f"seed={row['seed']} {_data(row)}: {first}", highlight=False, markup=False,
                      soft_wrap=True)
    return 1 if not bad.empty else 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to ``ntp-bench``'s subparsers."""
    parser = sub.add_parser("report", help="re-export CSV, plot and summary from a store")
    parser.add_argument("--out", required=True, help="folder holding results.sqlite")
    return parser


def run(args: argparse.Namespace, console: Console) -> int:
    """Run ``ntp-bench report`` on the store in ``--out``."""
    out = Path(args.out)
    if not args.out.strip() or not output_paths(out)["store"].is_file():
        raise UsageError(f"--out: no results.sqlite in {args.out!r}")
    return report(out, None, console)
