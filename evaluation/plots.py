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
_NONE = FuncFormatter(lambda value, _pos: "")


def save_figure(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a PNG) and close it."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _label(agent: str, n_train: int) -> str:
    return f"{agent} ({'population' if n_train == 0 else f'n={n_train}'})"


def plot_divergence_vs_horizon(summary: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Log-log D_H^2 and C_apx against H per agent (seed mean, standard-error bars).

    One row of two panels per (env_id, env_kwargs) in ``summary``.
    """
    envs = list(summary.groupby(["env_id", "env_kwargs"], sort=True))
    agents = sorted(summary["agent"].unique())
    colours = {agent: f"C{i % 10}" for i, agent in enumerate(agents)}
    fig, axes = plt.subplots(len(envs), 2, figsize=(11, 4.2 * len(envs)), squeeze=False)
    for (env_id, env_kwargs), frame in envs:
        ax_d, ax_c = axes[[e[0] for e in envs].index((env_id, env_kwargs))]
        for (agent, n_train), group in frame.groupby(["agent", "n_train"], sort=True):
            group = group.sort_values("horizon")
            style = {"color": colours[agent], "capsize": 3, "label": _label(agent, int(n_train)),
                     "marker": "o" if n_train == 0 else "s",
                     "linestyle": "-" if n_train == 0 else "--"}
            ax_d.errorbar(group["horizon"], group["hellinger2_mean"],
                          yerr=group["hellinger2_se"], **style)
            if group["c_apx_mean"].notna().any():
                ax_c.errorbar(group["horizon"], group["c_apx_mean"], yerr=group["c_apx_se"],
                              **style)
        best = frame.groupby("horizon")["best_in_class_hellinger2_mean"].first()
        if best.notna().any() and (best > 0).any():
            ax_d.plot(best.index, best.to_numpy(), "k--", label="best in class")
        for ax, ylabel in ((ax_d, r"$D_H^2(\hat P, P^*)$"), (ax_c, r"$C_{apx}$")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("horizon H")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.xaxis.set_major_formatter(_PLAIN)
            ax.yaxis.set_major_formatter(_PLAIN)
            ax.yaxis.set_minor_formatter(_NONE)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        name = env_id.removeprefix("ntp_envs/")
        ax_d.set_title(f"{name} {env_kwargs}: squared Hellinger to the expert", fontsize=9)
        ax_c.set_title(f"{name}: approximation ratio vs best in class", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
