"""Plots of sweep results (matplotlib, no display needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from evaluation.bench.analysis import chunk_size  # noqa: E402
from evaluation.bench.store import write_atomically  # noqa: E402
from ntp_envs import env_defaults  # noqa: E402

_PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")
_SHORT = FuncFormatter(lambda value, _pos: f"{value:.2g}")
_NONE = FuncFormatter(lambda value, _pos: "")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "*", "h", "p")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], mode: int | None = None) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a PNG) and close it;
    ``mode``: the file's permission bits (default: a plain new file's)."""
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"),
                                ".png", mode)
    finally:
        plt.close(fig)


def _label(agent: str, n_train: int) -> str:
    return f"{agent} ({'population' if n_train == 0 else f'n={n_train}'})"


def curve_styles(keys: list) -> dict:
    """A distinct (colour, marker, line style) per key, so overlapping curves stay visible."""
    return {key: {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)],
                  "linestyle": LINESTYLES[i % len(LINESTYLES)], "markerfacecolor": "none"}
            for i, key in enumerate(keys)}


def env_title(env_id: str, env_kwargs: str, names: tuple[str, ...] = ()) -> str:
    """``Name k=v, ...`` for an instance (its canonical kwargs JSON, plus each kwarg of
    ``names`` at its default when the canonical form left it out: a family's grid values),
    ``Name (defaults)`` when it has none."""
    name = env_id.removeprefix("ntp_envs/")
    kwargs = json.loads(env_kwargs) if env_kwargs else {}
    defaults = env_defaults(env_id)
    kwargs = {**{k: defaults[k] for k in names if k not in kwargs and k in defaults}, **kwargs}
    if not kwargs:
        return f"{name} (defaults)"
    return f"{name} " + ", ".join(f"{k}={v}" for k, v in kwargs.items())


def family_title(env_id: str, family: str) -> str:
    """``Name k=v, grid g=[...]`` for a family (:func:`evaluation.bench.sweep.family_json`)."""
    spec = json.loads(family)
    grid = ", ".join(f"{k} in {len(v)} values [{min(v)}..{max(v)}]"
                     if all(isinstance(x, int | float) for x in v) else f"{k} in {v}"
                     for k, v in spec["grid"].items())
    title = env_title(env_id, json.dumps(spec["kwargs"]))
    return f"{title}; {grid}" if grid else title


def log_y_labels(ax: plt.Axes) -> None:
    """Plain y tick labels on a log axis; minor ticks labelled too where the axis spans less
    than a decade (it may hold no major tick then)."""
    ax.yaxis.set_major_formatter(_PLAIN)
    low, high = ax.get_ylim()
    short = low > 0 and high / low < 10
    ax.yaxis.set_minor_formatter(_SHORT if short else _NONE)


def same_curves(frame: pd.DataFrame) -> dict[tuple[str, int], str]:
    """``(agent, n_train) -> agent`` for each curve of ``frame`` whose D_H^2 equals an earlier
    agent's at every horizon (same data): e.g. robust is NTP on MixtureProduct."""
    seen: list[tuple[tuple[str, int], pd.Series]] = []
    same: dict[tuple[str, int], str] = {}
    for (agent, n_train), group in frame.groupby(["agent", "n_train"], sort=True):
        values = group.set_index("horizon")["hellinger2_mean"].sort_index()
        for (other, other_n), earlier in seen:
            if other_n == n_train and earlier.index.equals(values.index) and np.allclose(
                    earlier.to_numpy(float), values.to_numpy(float), rtol=1e-9, atol=1e-15):
                same[(agent, n_train)] = other
                break
        else:
            seen.append(((agent, n_train), values))
    return same


def plot_divergence_vs_horizon(summary: pd.DataFrame, path: str | os.PathLike[str],
                               mode: int | None = None,
                               grids: dict[str, tuple[str, ...]] | None = None) -> Path:
    """Log-log D_H^2 and C_apx against H per agent (seed mean, standard-error bars).

    One row of two panels per (env_id, env_kwargs) in ``summary``; ``grids`` (env id ->
    the kwargs a family sweeps) names each instance's grid values in its title. A curve
    equal to an earlier agent's is labelled so (``robust = logloss here``).
    """
    envs = list(summary.groupby(["env_id", "env_kwargs"], sort=True))
    curves = sorted(summary[["agent", "n_train"]].drop_duplicates().itertuples(index=False,
                                                                              name=None))
    styles = curve_styles(curves)
    fig, axes = plt.subplots(len(envs), 2, figsize=(11, 4.2 * len(envs)), squeeze=False)
    for (env_id, env_kwargs), frame in envs:
        ax_d, ax_c = axes[[e[0] for e in envs].index((env_id, env_kwargs))]
        same = same_curves(frame)
        for (agent, n_train), group in frame.groupby(["agent", "n_train"], sort=True):
            group = group.sort_values("horizon")
            label = _label(agent, int(n_train))
            if (agent, n_train) in same:
                label += f" = {same[(agent, n_train)]} here"
            style = {**styles[(agent, n_train)], "capsize": 3, "label": label}
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
            log_y_labels(ax)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        title = env_title(env_id, env_kwargs, (grids or {}).get(env_id, ()))
        ax_d.set_title(f"{title}\nsquared Hellinger to the expert", fontsize=9)
        ax_c.set_title(f"{title}\napproximation ratio vs best in class", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, mode)


def _log_axes(ax: plt.Axes, xlabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"worst-case $C_{apx}$")
    ax.grid(True, which="both", alpha=0.3)
    ax.xaxis.set_major_formatter(_PLAIN)
    log_y_labels(ax)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def slope_one_guide(ax: plt.Axes, horizons: pd.Series, values: pd.Series) -> None:
    """A dotted line proportional to H (slope 1 on log-log axes) through the median of
    ``values`` at the smallest horizon: growth exponents read against it."""
    ok = np.isfinite(values.to_numpy(float)) & (values.to_numpy(float) > 0)
    if not ok.any() or horizons[ok].nunique() < 2:
        return
    h = np.array(sorted(horizons[ok].unique()), dtype=float)
    start = float(np.median(values[ok][horizons[ok] == h[0]]))
    ax.plot(h, start * h / h[0], "k:", alpha=0.6, label="slope 1 (proportional to H)")


def plot_worst_case(worst: pd.DataFrame, horizon_path: str | os.PathLike[str],
                    chunk_path: str | os.PathLike[str], mode: int | None = None) -> list[Path]:
    """Worst-case C_apx over each family (:func:`evaluation.bench.analysis.worst_case`): against H
    per agent (one panel per family), and, where chunk learners (``chunk:K``,
    ``chunk-rho:K``, ``chunk-kr:K``) were swept, against K per learner and H. Returns the
    files written (the second only where some chunk learner was swept at two or more K)."""
    families = list(worst.groupby(["env_id", "family"], sort=True))
    curves = sorted(worst[["agent", "n_train"]].drop_duplicates().itertuples(index=False,
                                                                            name=None))
    styles = curve_styles(curves)
    fig, axes = plt.subplots(len(families), 1, figsize=(7.5, 4.2 * len(families)),
                             squeeze=False)
    for ax, ((env_id, family), frame) in zip(axes[:, 0], families, strict=True):
        for (agent, n_train), group in frame.groupby(["agent", "n_train"], sort=True):
            group = group.sort_values("horizon")
            ax.plot(group["horizon"], group["worst_c_apx"], **styles[(agent, n_train)],
                    label=_label(agent, int(n_train)))
        slope_one_guide(ax, frame["horizon"], frame["worst_c_apx"])
        ax.set_title(f"{family_title(env_id, family)}\nworst case over "
                     f"{frame['instances'].max()} instances", fontsize=9)
        _log_axes(ax, "horizon H")
    fig.tight_layout()
    written = [save_figure(fig, horizon_path, mode)]
    parsed = worst["agent"].map(chunk_size)
    chunked = worst[parsed.notna()].assign(learner=parsed.dropna().map(lambda p: p[0]),
                                           chunk=parsed.dropna().map(lambda p: p[1]))
    if chunked.empty or chunked.groupby("learner")["chunk"].nunique().max() < 2:
        return written  # one K per learner: a single point, nothing to draw against K
    panels = list(chunked.groupby(["env_id", "family"], sort=True))
    lines = sorted(chunked[["learner", "horizon", "n_train"]].drop_duplicates()
                   .itertuples(index=False, name=None))
    styles = curve_styles(lines)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 4.2 * len(panels)), squeeze=False)
    for ax, ((env_id, family), frame) in zip(axes[:, 0], panels, strict=True):
        for (learner, horizon, n_train), group in frame.groupby(["learner", "horizon",
                                                                 "n_train"], sort=True):
            group = group.sort_values("chunk")
            ax.plot(group["chunk"], group["worst_c_apx"], **styles[(learner, horizon, n_train)],
                    label=f"{_label(learner + ':K', int(n_train))}, H={horizon}")
        ax.set_title(f"{family_title(env_id, family)}\nworst case vs chunk size", fontsize=9)
        _log_axes(ax, "chunk size K")
    fig.tight_layout()
    written.append(save_figure(fig, chunk_path, mode))
    return written
