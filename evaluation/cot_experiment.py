"""Answer accuracy of sweeps over tasks with a right answer (the CoT experiments).

``ntp-bench sweep --preset cot`` stores, next to the divergences, each fit's greedy answer
accuracy on held-out prompts (:mod:`evaluation.accuracy`). This module summarises it over
seeds, prints the table and draws ``answer_accuracy.png``: for ParityCoT, accuracy against
the chain-of-thought length (the length-complexity plot: ``cot_stride`` m gives
``ceil(num_bits / m)`` CoT tokens; no CoT is length 0); for every other task, one bar per
setting and agent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from evaluation.plots import save_figure  # noqa: E402
from ntp_envs import make_task  # noqa: E402

PARITY = "ntp_envs/ParityCoT-v0"
GROUP = ["env_id", "env_kwargs", "agent", "n_train", "horizon"]


def _mean_se(values: pd.Series) -> tuple[float, float]:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if not len(values):
        return np.nan, np.nan
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), se


def answer_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (env, kwargs, agent, n_train, H): seeds, CoT length, answer accuracy, D_H^2, KL
    (mean and standard error over seeds; the stored per-fit standard error when one seed)."""
    ok = frame[(frame["status"] == "ok") & frame["answer_accuracy"].notna()]
    answer_lengths: dict[tuple[str, str, int], int] = {}
    rows = []
    for key, group in ok.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, key, strict=True))
        task_key = (row["env_id"], row["env_kwargs"], row["horizon"])
        if task_key not in answer_lengths:
            task = make_task(row["env_id"], **{**json.loads(row["env_kwargs"]),
                                               "horizon": int(row["horizon"])})
            answer_lengths[task_key] = int(task.answer_length or 0)
        row["cot_tokens"] = int(row["horizon"]) - answer_lengths[task_key]
        row["seeds"] = len(group)
        for column in ("answer_accuracy", "hellinger2", "kl"):
            row[f"{column}_mean"], row[f"{column}_se"] = _mean_se(group[column])
        if len(group) == 1:
            row["answer_accuracy_se"] = float(group["answer_accuracy_stderr"].iloc[0])
        row["split"] = str(group["answer_split"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def _setting(env_kwargs: str) -> str:
    kwargs = json.loads(env_kwargs)
    kwargs.pop("horizon", None)
    return ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items())) or "defaults"


def _bar_label(env_kwargs: str) -> str:
    """A short bar label: ``2x2 long, lsd`` for multiplication, the settings otherwise."""
    kwargs = json.loads(env_kwargs)
    if "num_digits" not in kwargs:
        return _setting(env_kwargs)
    digits, cot = kwargs["num_digits"], kwargs.get("cot", "long")
    order = f", {kwargs.get('answer_order', 'msd')}" if cot != "none" else ""
    return f"{digits}x{digits} {cot}{order}"


def _data_label(n_train: int) -> str:
    if n_train == 0:
        return "pop."
    return f"n={n_train // 1000}k" if n_train % 1000 == 0 else f"n={n_train}"


def plot_answer_accuracy(summary: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """ParityCoT: accuracy vs CoT length per (agent, cot, n); other tasks: bars."""
    envs = sorted(summary["env_id"].unique(), key=lambda e: (e != PARITY, e))
    fig, axes = plt.subplots(1, len(envs), figsize=(7.5 * len(envs), 4.6), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        frame = summary[summary["env_id"] == env_id].copy()
        name = env_id.removeprefix("ntp_envs/")
        if env_id == PARITY:
            frame["cot"] = [json.loads(k).get("cot", "count") for k in frame["env_kwargs"]]
            for (agent, n_train, cot), group in frame.groupby(["agent", "n_train", "cot"]):
                group = group.sort_values("cot_tokens")
                data = "population" if n_train == 0 else f"n={n_train}"
                ax.errorbar(group["cot_tokens"], group["answer_accuracy_mean"],
                            yerr=group["answer_accuracy_se"], marker="o", capsize=3,
                            linestyle="-" if cot != "none" else "none",
                            label=f"{agent}, cot={cot} ({data})")
            ax.axhline(0.5, color="grey", linestyle=":", label="chance")
            ax.set_xlabel("chain-of-thought length (tokens before the answer)")
            ax.set_title(f"{name}: answer accuracy vs CoT length", fontsize=9)
        else:
            frame = frame.assign(_order=[_bar_label(k) for k in frame["env_kwargs"]])
            frame = frame.sort_values(["_order", "agent"], kind="stable")
            labels = [f"{_bar_label(k)}\n{a} ({_data_label(n)})" for k, a, n in
                      zip(frame["env_kwargs"], frame["agent"], frame["n_train"], strict=True)]
            ax.bar(range(len(frame)), frame["answer_accuracy_mean"],
                   yerr=frame["answer_accuracy_se"], capsize=3, color="C0")
            ax.set_xticks(range(len(frame)), labels, fontsize=7)
            ax.set_title(f"{name}: exact-answer accuracy "
                         f"({', '.join(sorted(frame['split'].unique()))} prompts)", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("answer accuracy (greedy decoding)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def print_answer_table(console: Console, summary: pd.DataFrame) -> None:
    """The summary as a table (one row per setting, agent and data size)."""
    table = Table(title="Answer accuracy (greedy decoding; mean ± s.e. over seeds)")
    for column in ("env", "setting", "agent", "data", "seeds", "CoT tokens", "accuracy",
                   "prompts", "D_H^2", "KL"):
        table.add_column(column, justify="right")
    for _, row in summary.iterrows():
        def cell(name: str, digits: int, row: pd.Series = row) -> str:
            mean, se = row[f"{name}_mean"], row[f"{name}_se"]
            if pd.isna(mean):
                return "-"
            return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se > 0 else "")

        table.add_row(row["env_id"].removeprefix("ntp_envs/"), _setting(row["env_kwargs"]),
                      row["agent"], "population" if row["n_train"] == 0 else f"n={row['n_train']}",
                      str(row["seeds"]), str(row["cot_tokens"]), cell("answer_accuracy", 4),
                      row["split"], cell("hellinger2", 4), cell("kl", 3))
    console.print(table)


def report_answers(frame: pd.DataFrame, out: str | os.PathLike[str], console: Console
                   ) -> list[Path]:
    """Table and ``OUT/answer_accuracy.png`` when ``frame`` holds answer accuracies."""
    if "answer_accuracy" not in frame or not frame["answer_accuracy"].notna().any():
        return []
    summary = answer_summary(frame)
    print_answer_table(console, summary)
    path = plot_answer_accuracy(summary, Path(out) / "answer_accuracy.png")
    console.print(f"wrote {path}")
    return [path]
