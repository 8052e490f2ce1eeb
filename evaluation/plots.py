"""Plots of sweep results (matplotlib, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

_PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")


def _label(row: pd.Series) -> str:
    data = "population" if row["n_train"] == 0 else f"n={row['n_train']}"
    return f"{row['agent']} ({data})"


def plot_divergence_vs_horizon(summary: pd.DataFrame, path: str | os.PathLike[str],
                               title: str = "") -> Path:
    """Log-log D_H^2 and C_apx against H per agent (seed mean, standard-error bars)."""
    fig, (ax_d, ax_c) = plt.subplots(1, 2, figsize=(11, 4.2))
    best_drawn = set()
    for (env_kwargs, _agent, _n_train), group in summary.groupby(
        ["env_kwargs", "agent", "n_train"], sort=True
    ):
        group = group.sort_values("horizon")
        label = _label(group.iloc[0])
        ax_d.errorbar(group["horizon"], group["hellinger2_mean"], yerr=group["hellinger2_se"],
                      marker="o", capsize=3, label=label)
        if group["c_apx_mean"].notna().any():
            ax_c.errorbar(group["horizon"], group["c_apx_mean"], yerr=group["c_apx_se"],
                          marker="o", capsize=3, label=label)
        if env_kwargs not in best_drawn and group["best_in_class_hellinger2_mean"].notna().any():
            best_drawn.add(env_kwargs)
            ax_d.plot(group["horizon"], group["best_in_class_hellinger2_mean"], "k--",
                      label="best in class")
    for ax, ylabel in ((ax_d, r"$D_H^2(\hat P, P^*)$"), (ax_c, r"$C_{apx}$")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("horizon H")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax_d.set_title("squared Hellinger to the expert")
    ax_c.set_title("approximation ratio vs best in class")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
