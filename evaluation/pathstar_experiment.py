"""Path-star measurements (Bachmann & Nagarajan, ICML 2024): where teacher forcing fails.

For a policy fitted on ``PathStar-v0`` these are estimated on ``n_prompts`` fresh graphs
(every number is a sample mean; ``*_stderr`` its standard error):

* ``exact_path_accuracy``: free-running (greedy, own tokens in the context) decode equals
  the target; ``path_accuracy`` (list): per node of the source-to-goal path (index 0 = the
  source, whatever order the env emits it in);
* ``tf_path_accuracy`` (list): teacher-forced per-node accuracy (argmax given the true
  previous tokens);
* the Clever-Hans signature: ``decision_accuracy`` (teacher-forced accuracy of path node 1,
  the source's successor: the one choice that needs planning; chance is ``1 / degree``),
  ``later_tf_accuracy`` (teacher-forced accuracy of path nodes ``2..H-1``),
  ``later_given_correct_prev`` (free-running: a token after the decision is right given the
  token emitted before it is right) and ``edge_following`` (free-running: each token after
  the first is joined to the one emitted before it by an edge in the env's direction, right
  arm or not: a teacher-forced model that learned the Clever-Hans lookup follows the edges
  even after a wrong first choice).

The exact ``D_H^2 = 2 - 2 E_x sqrt(Q(path(x) | x))`` is the shared evaluator's
(:func:`evaluation.divergences.divergence`, method ``deterministic``).

In a sweep (``ntp-bench sweep --preset pathstar``) every ``PathStar-v0`` row stores these in
its ``task_metrics`` column (JSON; :data:`evaluation.accuracy.TASK_METRICS`), next to the
generic ``answer_accuracy`` (also the exact-path accuracy, on its own sample of graphs),
``hellinger2`` and ``fit_seconds``; :func:`report_pathstar` prints the table and draws
``OUT/pathstar.png``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from evaluation.accuracy import greedy_decode  # noqa: E402
from evaluation.plots import save_figure  # noqa: E402
from ntp_envs.path_star import ENV_ID, StarLayout, decode_prompts  # noqa: E402
from ntp_envs.sequence_model import SequenceModel  # noqa: E402
from ntp_envs.task import SequenceTask  # noqa: E402
from ntp_envs.type_aliases import BoolArray, IntArray  # noqa: E402
from ntp_envs.validation import check_int  # noqa: E402

__all__ = ["MAX_SWEEP_PROMPTS", "PathStarMetrics", "decode", "pathstar_metrics",
           "pathstar_summary", "plot_pathstar", "report_pathstar", "sweep_metrics",
           "teacher_forced_argmax"]

CHANCE_TOLERANCE = 0.07
"""The README's claim: a teacher-forced model's exact-path accuracy is within this of
``1 / degree``."""


@dataclass(frozen=True)
class PathStarMetrics:
    """The measurements of the module doc for one policy."""

    num_prompts: int
    degree: int
    exact_path_accuracy: float
    exact_path_accuracy_stderr: float
    path_accuracy: list[float]
    tf_path_accuracy: list[float]
    decision_accuracy: float
    decision_accuracy_stderr: float
    later_tf_accuracy: float
    later_given_correct_prev: float
    edge_following: float

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return asdict(self)


def decode(model: SequenceModel, prompts: IntArray) -> IntArray:
    """Greedy free-running decode: the model's own one-pass ``greedy`` where it has one
    (the teacherless GPT), else :func:`evaluation.accuracy.greedy_decode`."""
    own = getattr(model, "greedy", None)
    return own(prompts) if callable(own) else greedy_decode(model, prompts)


def teacher_forced_argmax(model: SequenceModel, prompts: IntArray, target: IntArray) -> IntArray:
    """Argmax token ``(B, H)`` at each step given the true previous target tokens."""
    out = np.empty(target.shape, dtype=np.int64)
    for h in range(target.shape[1]):
        out[:, h] = model.next_token_logprobs(prompts, target[:, :h]).argmax(axis=1)
    return out


def _stderr(values: BoolArray) -> float:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0


def _is_edge(prompts: IntArray, layout: StarLayout, tail: IntArray, head: IntArray) -> BoolArray:
    """Whether ``tail -> head`` is an edge of each prompt's graph, per column."""
    edges, _, _ = decode_prompts(layout, prompts)
    match = (edges[:, None, :, 0] == tail[:, :, None]) & (edges[:, None, :, 1] == head[:, :, None])
    return match.any(axis=2)


def pathstar_metrics(
    task: SequenceTask,
    model: SequenceModel,
    *,
    n_prompts: int = 10_000,
    rng: np.random.Generator | int | None = None,
) -> PathStarMetrics:
    """The module doc's measurements of ``model`` on ``n_prompts`` fresh graphs of ``task``."""
    if task.env_id != ENV_ID:
        raise ValueError(f"task must be a {ENV_ID} task, got {task.env_id}")
    n_prompts = check_int("n_prompts", n_prompts, 2)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    layout: StarLayout = task.extras["layout"]
    steps_to_path = np.asarray(task.extras["path_positions"])  # path index of each step
    path_to_step = np.argsort(steps_to_path)
    prompts = task.prompts.sample(n_prompts, generator)
    target = task.expert.deterministic_sequences(prompts)
    free = decode(model, prompts)
    forced = teacher_forced_argmax(model, prompts, target)
    free_ok, forced_ok = free == target, forced == target
    exact = free_ok.all(axis=1)
    decision_step = int(path_to_step[1])
    later_steps = path_to_step[2:]
    after = np.arange(decision_step + 1, task.horizon)  # emitted after the decision
    prev_ok = free_ok[:, after - 1]
    given = free_ok[:, after][prev_ok]
    if task.extras["target_order"] == "reverse":
        follows = _is_edge(prompts, layout, free[:, 1:], free[:, :-1])
    else:
        follows = _is_edge(prompts, layout, free[:, :-1], free[:, 1:])
    mean_by_path = free_ok.mean(axis=0)[path_to_step]
    return PathStarMetrics(
        num_prompts=n_prompts,
        degree=layout.degree,
        exact_path_accuracy=float(exact.mean()),
        exact_path_accuracy_stderr=_stderr(exact),
        path_accuracy=[float(v) for v in mean_by_path],
        tf_path_accuracy=[float(v) for v in forced_ok.mean(axis=0)[path_to_step]],
        decision_accuracy=float(forced_ok[:, decision_step].mean()),
        decision_accuracy_stderr=_stderr(forced_ok[:, decision_step]),
        later_tf_accuracy=float(forced_ok[:, later_steps].mean()) if len(later_steps) else
        math.nan,
        later_given_correct_prev=float(given.mean()) if given.size else math.nan,
        edge_following=float(follows.mean()),
    )


MAX_SWEEP_PROMPTS = 20_000
"""Graphs a sweep row's measurements use at most (``min(eval_samples, this)``)."""


def sweep_metrics(task: SequenceTask, model: SequenceModel, n_samples: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    """The ``task_metrics`` of a sweep row (:data:`evaluation.accuracy.TASK_METRICS`)."""
    n = min(int(n_samples), MAX_SWEEP_PROMPTS)
    return pathstar_metrics(task, model, n_prompts=n, rng=rng).as_dict()


# ------------------------------------------------------------------------- sweep report

SUMMARY_KEYS = ["env_kwargs", "agent", "n_train", "horizon"]
AGENT_ORDER = ["gpt-tf", "gpt-reverse", "gpt-teacherless", "gpt-teacherless-large"]
SCALARS = ["exact_path_accuracy", "decision_accuracy", "later_tf_accuracy",
           "later_given_correct_prev", "edge_following"]


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not arr.size:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 \
        else 0.0


def _label(env_kwargs: str, agent: str) -> str:
    order = json.loads(env_kwargs).get("target_order", "forward")
    return f"{agent} ({order})"


def pathstar_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (env kwargs, agent, n_train, H) over seeds: the measurements (mean and standard
    error), ``D_H^2``, the fit time and ``1 / degree``; per-node lists are seed means."""
    ok = frame[(frame["status"] == "ok") & (frame["env_id"] == ENV_ID)]
    if "task_metrics" not in ok:
        return pd.DataFrame()
    ok = ok[ok["task_metrics"].notna()]
    rows = []
    for key, group in ok.groupby(SUMMARY_KEYS, sort=True):
        metrics = [json.loads(text) for text in group["task_metrics"]]
        row: dict[str, Any] = dict(zip(SUMMARY_KEYS, key, strict=True))
        row.update(label=_label(row["env_kwargs"], row["agent"]), seeds=len(group),
                   chance=1.0 / metrics[0]["degree"], prompts=metrics[0]["num_prompts"])
        for name in SCALARS:
            row[f"{name}_mean"], row[f"{name}_se"] = _mean_se([m[name] for m in metrics])
        if len(group) == 1:
            row["exact_path_accuracy_se"] = metrics[0]["exact_path_accuracy_stderr"]
            row["decision_accuracy_se"] = metrics[0]["decision_accuracy_stderr"]
        for name in ("path_accuracy", "tf_path_accuracy"):
            row[name] = np.mean([m[name] for m in metrics], axis=0).tolist()
        for column in ("hellinger2", "fit_seconds"):
            values = pd.to_numeric(group[column], errors="coerce").tolist()
            row[f"{column}_mean"], row[f"{column}_se"] = _mean_se(values)
        if len(group) == 1:
            row["hellinger2_se"] = float(group["hellinger2_stderr"].iloc[0])
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    order = {name: i for i, name in enumerate(AGENT_ORDER)}
    frame = pd.DataFrame(rows)
    rank = [(order.get(a, len(order)), a, k) for a, k in zip(frame["agent"], frame["env_kwargs"],
                                                              strict=True)]
    return frame.iloc[sorted(range(len(frame)), key=rank.__getitem__)].reset_index(drop=True)


def print_pathstar_table(console: Console, summary: pd.DataFrame) -> None:
    """The summary as a table (one row per agent and setting)."""
    table = Table(title="PathStar: free-running vs teacher-forced accuracy (mean ± s.e.)")
    for column in ("agent (order)", "setting", "data", "seeds", "exact path", "1/degree",
                   "decision (tf)", "later (tf)", "later | prev ok", "edge-following",
                   "D_H^2", "fit s"):
        table.add_column(column, justify="right")
    for _, row in summary.iterrows():
        def cell(name: str, digits: int = 3, row: pd.Series = row) -> str:
            mean, se = row[f"{name}_mean"], row.get(f"{name}_se", 0.0)
            if pd.isna(mean):
                return "-"
            return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se and se > 0 else "")

        kwargs = json.loads(row["env_kwargs"])
        setting = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items())
                            if k != "target_order") or "defaults"
        table.add_row(row["label"], f"{setting}, H={row['horizon']}", f"n={row['n_train']}",
                      str(row["seeds"]), cell("exact_path_accuracy"), f"{row['chance']:.3f}",
                      cell("decision_accuracy"), cell("later_tf_accuracy"),
                      cell("later_given_correct_prev"), cell("edge_following"),
                      cell("hellinger2"), cell("fit_seconds", 0))
    console.print(table)


def plot_pathstar(summary: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Three panels per sweep: the Clever-Hans signature (bars per agent), accuracy along the
    path (free-running solid, teacher-forced dashed) and ``D_H^2``."""
    fig, (ax_sig, ax_pos, ax_h) = plt.subplots(1, 3, figsize=(16, 4.6),
                                               gridspec_kw={"width_ratios": [2.2, 1.6, 1]})
    bars = [("exact_path_accuracy", "exact path (free-running)"),
            ("decision_accuracy", "decision token (teacher-forced)"),
            ("later_tf_accuracy", "later tokens (teacher-forced)"),
            ("edge_following", "follows an edge (free-running)")]
    width = 0.8 / len(bars)
    x = np.arange(len(summary))
    for i, (name, text) in enumerate(bars):
        ax_sig.bar(x + (i - (len(bars) - 1) / 2) * width, summary[f"{name}_mean"], width,
                   yerr=summary[f"{name}_se"].fillna(0.0), capsize=2, label=text, color=f"C{i}")
    for i, chance in enumerate(summary["chance"]):
        ax_sig.hlines(chance, i - 0.45, i + 0.45, colors="k", linestyles=":",
                      label="chance 1/degree" if i == 0 else None)
    ax_sig.set_xticks(x, summary["label"], fontsize=8)
    ax_sig.set_ylim(0, 1.32)
    ax_sig.set_yticks(np.linspace(0, 1, 6))
    ax_sig.set_ylabel("accuracy")
    ax_sig.set_title("Clever-Hans signature: decision vs later tokens", fontsize=9)
    ax_sig.legend(fontsize=7, loc="upper center", ncol=3)
    for i, (_, row) in enumerate(summary.iterrows()):
        nodes = np.arange(len(row["path_accuracy"]))
        ax_pos.plot(nodes, row["path_accuracy"], "-o", color=f"C{i}", label=row["label"])
        ax_pos.plot(nodes, row["tf_path_accuracy"], "--x", color=f"C{i}")
    ax_pos.set_xticks(np.arange(len(summary["path_accuracy"].iloc[0])))
    ax_pos.set_xlabel("node along the path (0 = source, 1 = decision)")
    ax_pos.set_ylabel("per-node accuracy")
    ax_pos.set_ylim(0, 1.05)
    ax_pos.set_title("solid: free-running, dashed: teacher-forced", fontsize=9)
    ax_pos.legend(fontsize=7)
    ax_h.bar(x, summary["hellinger2_mean"], yerr=summary["hellinger2_se"].fillna(0.0),
             capsize=3, color=[f"C{i}" for i in range(len(summary))])
    ax_h.set_xticks(x, summary["label"], fontsize=7, rotation=20)
    ax_h.set_ylim(0, 2)
    ax_h.set_ylabel(r"$D_H^2 = 2 - 2\,E_x \sqrt{Q(\mathrm{path}\mid x)}$")
    ax_h.set_title("squared Hellinger to the expert", fontsize=9)
    for ax in (ax_sig, ax_pos, ax_h):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def report_pathstar(frame: pd.DataFrame, out: str | os.PathLike[str], console: Console
                    ) -> list[Path]:
    """Table and ``OUT/pathstar.png`` when ``frame`` holds PathStar rows."""
    summary = pathstar_summary(frame)
    if summary.empty:
        return []
    print_pathstar_table(console, summary)
    path = plot_pathstar(summary, Path(out) / "pathstar.png")
    console.print(f"wrote {path}")
    return [path]
