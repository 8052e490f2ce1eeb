"""The chunking experiment: C_apx and fit time against the chunk size K at a fixed horizon.

    python -m evaluation.chunking_experiment [--out runs/chunking] [--quiet]

Runs (or resumes) the ``chunking`` preset (:mod:`evaluation.presets`: ChunkedBC ``chunk:K``
for ``K`` in 1, 2, 4, 8, 16 as far as ``V**K`` allows, at ``H = 256``) through the sweep into
``OUT/results.sqlite`` (the store of ``ntp-bench sweep --preset chunking``, so either
command reuses the other's rows), then writes ``OUT/results.csv`` (every row),
``OUT/chunking.png`` (per env and data: C_apx and fit seconds against K, the
compute/statistics tradeoff), ``OUT/chunking.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from evaluation.plots import save_figure  # noqa: E402
from evaluation.presets import PRESETS  # noqa: E402
from evaluation.store import ResultStore  # noqa: E402
from evaluation.sweep import SweepConfig, output_paths, run_sweep  # noqa: E402

PRESET = "chunking"
_PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")


def chunk_size_of(agent: str) -> int | None:
    """``K`` of an agent named ``chunk:K`` (``None`` for other agents)."""
    prefix, _, value = agent.partition(":")
    return int(value) if prefix == "chunk" and value.isdigit() else None


def chunking_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed means (and standard errors) per (env, data, K) of the ``chunk:K`` rows of a store."""
    ok = frame[frame["status"] == "ok"].copy()
    ok["K"] = [chunk_size_of(a) for a in ok["agent"]]
    ok = ok[ok["K"].notna()]
    rows = []
    keys = ["env_id", "env_kwargs", "n_train", "horizon", "K"]
    for key, group in ok.groupby(keys, sort=True):
        row = dict(zip(keys, key, strict=True))
        row["K"] = int(row["K"])
        row["seeds"] = len(group)
        for column in ("hellinger2", "c_apx", "kl", "fit_seconds", "eval_seconds"):
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            row[column] = float(values.mean()) if len(values) else np.nan
            row[f"{column}_se"] = (float(values.std(ddof=1) / np.sqrt(len(values)))
                                   if len(values) > 1 else 0.0)
        row["best_in_class_hellinger2"] = float(group["best_in_class_hellinger2"].iloc[0])
        row["eval_method"] = ",".join(sorted(set(group["eval_method"])))
        rows.append(row)
    return pd.DataFrame(rows)


def _panel_title(env_id: str, env_kwargs: str, n_train: int, horizon: int) -> str:
    kwargs = "" if env_kwargs in ("{}", "") else f" {env_kwargs}"
    data = "population" if n_train == 0 else f"n={n_train}"
    return f"{env_id.removeprefix('ntp_envs/')}{kwargs}, H={horizon}, {data}"


def plot_chunking(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """C_apx (left axis) and fit seconds (right axis) against K, one panel per env/data."""
    panels = list(table.groupby(["env_id", "env_kwargs", "n_train", "horizon"], sort=True))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (key, group) in zip(axes.ravel(), panels, strict=False):
        group = group.sort_values("K")
        ax.errorbar(group["K"], group["c_apx"], yerr=group["c_apx_se"], color="C0",
                    marker="o", capsize=3, label=r"$C_{apx}$")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("chunk size K")
        ax.set_ylabel(r"$C_{apx}$ (vs best in token class)", color="C0")
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.grid(True, which="both", alpha=0.3)
        twin = ax.twinx()
        twin.errorbar(group["K"], group["fit_seconds"], yerr=group["fit_seconds_se"],
                      color="C3", marker="s", linestyle="--", capsize=3, label="fit seconds")
        twin.set_yscale("log")
        twin.set_ylabel("fit time (s)", color="C3")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=8, loc="best")
        ax.set_title(_panel_title(*key), fontsize=9)
    fig.suptitle("ChunkedBC: approximation ratio vs compute as the chunk size K grows",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def print_table(console: Console, table: pd.DataFrame) -> None:
    """The chunking table (one row per env, data, K)."""
    out = Table(title="ChunkedBC: C_apx and fit time vs chunk size K (mean ± s.e. over seeds)")
    for column in ("env", "kwargs", "data", "H", "K", "D_H^2", "best in class", "C_apx", "KL",
                   "fit s", "eval"):
        out.add_column(column, justify="right")
    for _, row in table.sort_values(["env_id", "env_kwargs", "n_train", "K"]).iterrows():
        se = row["seeds"] > 1

        def cell(name: str, digits: int, row: pd.Series = row, se: bool = se) -> str:
            if pd.isna(row[name]):
                return "-"
            spread = f" ± {row[f'{name}_se']:.2g}" if se else ""
            return f"{row[name]:.{digits}g}{spread}"

        env = row["env_id"].removeprefix("ntp_envs/")
        data = "population" if row["n_train"] == 0 else f"n={row['n_train']}"
        out.add_row(env, row["env_kwargs"], data, str(row["horizon"]), str(row["K"]),
                    cell("hellinger2", 4), f"{row['best_in_class_hellinger2']:.4g}",
                    cell("c_apx", 3), cell("kl", 4), cell("fit_seconds", 3),
                    row["eval_method"])
    console.print(out)


def report(out: str | os.PathLike[str], console: Console | None = None) -> pd.DataFrame:
    """Write ``chunking.png`` and ``chunking.csv`` from ``OUT/results.sqlite``; print the table."""
    out = Path(out)
    paths = output_paths(out)
    with ResultStore(paths["store"]) as store:
        store.export_csv(paths["csv"])
        table = chunking_table(store.results())
    if table.empty:
        raise ValueError(f"{out}: no successful chunk:K rows in the store")
    tmp = out / ".chunking.csv.tmp"
    table.to_csv(tmp, index=False, float_format="%.17g")
    os.replace(tmp, out / "chunking.csv")
    plot_chunking(table, out / "chunking.png")
    console = console or Console(width=max(150, Console().width))
    print_table(console, table)
    console.print(f"wrote {paths['csv']}, {out / 'chunking.png'}, {out / 'chunking.csv'}")
    return table


def run(out: str | os.PathLike[str], configs: list[SweepConfig] | None = None,
        progress: bool = True) -> pd.DataFrame:
    """Run (or resume) ``configs`` (default: the chunking preset) into ``OUT``, then report."""
    out = Path(out)
    with ResultStore(output_paths(out)["store"]) as store:
        for config in PRESETS[PRESET] if configs is None else configs:
            run_sweep(config, store, progress=progress)
    return report(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m evaluation.chunking_experiment``."""
    parser = argparse.ArgumentParser(prog="python -m evaluation.chunking_experiment",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=f"runs/{PRESET}", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-export the plot and table from OUT/results.sqlite")
    args = parser.parse_args(argv)
    try:
        if args.report_only:
            report(args.out)
        else:
            run(args.out, progress=not args.quiet)
    except ValueError as err:
        print(f"chunking_experiment: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
