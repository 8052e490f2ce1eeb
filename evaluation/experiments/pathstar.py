"""Path-star (Bachmann & Nagarajan, ICML 2024): teacher forcing learns the Clever-Hans
shortcut and stays at chance on the decision token; reverse targets learn the task;
teacherless training measured.

The cpu profile runs the registered ``gpt-tf`` and ``gpt-reverse`` (transformers' GPT-NeoX with
rotary positions, 3 layers, width 64, 10,000 Adam steps: 2,000 steps learn neither task) on
4,000 fresh graphs, and the
teacherless model, which the claim only reports, for :data:`TEACHERLESS_CPU_STEPS` steps
through :func:`budget_gpt` (a plug-in agent spec,
``evaluation.experiments.pathstar:budget_gpt?mode=teacherless&steps=N``); the full profile
runs the three registered agents on 20,000 graphs; the gpu profile adds
``gpt-teacherless-large`` (the paper's model size).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402

from agents.base import Agent  # noqa: E402
from evaluation.bench.plots import save_figure  # noqa: E402
from evaluation.bench.sweep import SweepConfig  # noqa: E402
from evaluation.experiments.base import Experiment, Figure, Table  # noqa: E402
from evaluation.experiments.claims import Claim, Measured, NotRun, mean_se  # noqa: E402
from evaluation.experiments.report import print_analysis  # noqa: E402
from ntp_envs.path_star import ENV_ID  # noqa: E402

PATHSTAR = {"degree": 2, "num_nodes": 20}  # path_length = the horizon, 4
PATHSTAR_TRAIN = 100_000
TEACHERLESS_CPU_STEPS = 2000
CPU_EVAL = 4000
CHANCE_TOLERANCE = 0.05
MIN_LEARNED = 0.95
BUDGET_SPEC = "evaluation.experiments.pathstar:budget_gpt"


def budget_gpt(mode: str, steps: int) -> Agent:
    """The registered GPT agent ``gpt-<mode>`` with a budget of ``steps`` Adam steps."""
    from agents.gpt import CPU_CONFIG, gpt_agent

    return gpt_agent(mode, replace(CPU_CONFIG, steps=int(steps)), f"gpt-{mode}")


def budget_agent(mode: str, steps: int) -> str:
    """The agent spec of :func:`budget_gpt` (what a sweep row's ``agent`` holds)."""
    return f"{BUDGET_SPEC}?mode={mode}&steps={steps}"


def agent_mode(agent: str) -> str:
    """``tf``, ``reverse``, ``teacherless`` or ``teacherless-large`` of a path-star agent."""
    if agent.startswith(BUDGET_SPEC):
        return agent.partition("mode=")[2].partition("&")[0]
    return agent.removeprefix("gpt-")


def agent_label(agent: str) -> str:
    """``gpt-tf`` for registered agents, ``gpt-tf (N steps)`` for budget specs."""
    if agent.startswith(BUDGET_SPEC):
        return f"gpt-{agent_mode(agent)} ({agent.partition('steps=')[2]} steps)"
    return agent


SUMMARY_KEYS = ["env_kwargs", "agent", "n_train", "horizon"]
MODE_ORDER = ["tf", "reverse", "teacherless", "teacherless-large"]
SCALARS = ["exact_path_accuracy", "decision_accuracy", "later_tf_accuracy",
           "later_given_correct_prev", "edge_following"]


def _label(env_kwargs: str, agent: str) -> str:
    order = json.loads(env_kwargs).get("target_order", "forward")
    return f"{agent_label(agent)} ({order})"


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
            row[f"{name}_mean"], row[f"{name}_se"] = mean_se([m[name] for m in metrics])
        if len(group) == 1:
            row["exact_path_accuracy_se"] = metrics[0]["exact_path_accuracy_stderr"]
            row["decision_accuracy_se"] = metrics[0]["decision_accuracy_stderr"]
        for name in ("path_accuracy", "tf_path_accuracy"):
            row[name] = np.mean([m[name] for m in metrics], axis=0).tolist()
        for column in ("hellinger2", "fit_seconds"):
            values = pd.to_numeric(group[column], errors="coerce").tolist()
            row[f"{column}_mean"], row[f"{column}_se"] = mean_se(values)
        if len(group) == 1:
            row["hellinger2_se"] = float(group["hellinger2_stderr"].iloc[0])
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    order = {name: i for i, name in enumerate(MODE_ORDER)}
    frame = pd.DataFrame(rows)
    rank = [(order.get(agent_mode(a), len(order)), a, k)
            for a, k in zip(frame["agent"], frame["env_kwargs"], strict=True)]
    return frame.iloc[sorted(range(len(frame)), key=rank.__getitem__)].reset_index(drop=True)


def plot_pathstar(summary: pd.DataFrame, path: Path) -> Path:
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


def pathstar_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as display strings (one row per agent and setting)."""
    rows = []
    for _, row in summary.iterrows():
        def cell(name: str, digits: int = 3, row: pd.Series = row) -> str:
            mean, se = row[f"{name}_mean"], row.get(f"{name}_se", 0.0)
            if pd.isna(mean):
                return "-"
            return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se and se > 0 else "")

        rows.append({"agent (order)": row["label"], "data": f"n={row['n_train']}",
                     "seeds": str(row["seeds"]), "graphs": str(row["prompts"]),
                     "exact path": cell("exact_path_accuracy"),
                     "1/degree": f"{row['chance']:.3f}",
                     "decision (tf)": cell("decision_accuracy"),
                     "later (tf)": cell("later_tf_accuracy"),
                     "edge-following": cell("edge_following"),
                     "D_H^2": cell("hellinger2"), "fit s": cell("fit_seconds", 0)})
    return pd.DataFrame(rows)


def analyse(frame: pd.DataFrame, out: Path) -> tuple[list[Table], list[Figure]]:
    """The Clever-Hans table and ``pathstar.png``."""
    summary = pathstar_summary(frame)
    if summary.empty:
        return [], []
    plot_pathstar(summary, out / "pathstar.png")
    return ([Table("pathstar", "Free-running vs teacher-forced accuracy (mean ± s.e.; "
                   "teacher-forced = given the true previous nodes)", pathstar_display(summary))],
            [Figure("pathstar", "Clever-Hans signature, per-node accuracy and D_H^2")])


def _metrics(frame: pd.DataFrame, mode: str, reverse: bool) -> list[dict[str, Any]]:
    ok = frame[(frame["status"] == "ok") & (frame["env_id"] == ENV_ID)]
    keep = [agent_mode(a) == mode and
            (json.loads(k).get("target_order", "forward") == "reverse") == reverse
            for a, k in zip(ok["agent"], ok["env_kwargs"], strict=True)]
    rows = ok[np.asarray(keep, dtype=bool)] if len(ok) else ok
    if rows.empty or rows["task_metrics"].isna().all():
        failed = frame[np.asarray([agent_mode(a) == mode for a in frame["agent"]], dtype=bool)]
        failed = failed[failed["status"] != "ok"]
        why = "" if failed.empty else \
            f": {len(failed)} failed ({str(failed['error'].iloc[0] or '').splitlines()[:1]})"
        raise NotRun(f"no PathStar rows of gpt-{mode}{' (reverse order)' if reverse else ''}"
                     f"{why}")
    return [json.loads(t) for t in rows["task_metrics"].dropna()]


def _stat(metrics: list[dict[str, Any]], name: str) -> tuple[float, float]:
    """Mean and standard error: over seeds, or the one fit's sampling error."""
    if len(metrics) == 1:
        stderr = metrics[0].get(f"{name}_stderr", math.nan)
        return float(metrics[0][name]), float(stderr)
    return mean_se([m[name] for m in metrics])


def _check_r5(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    tf = _metrics(frame, "tf", reverse=False)
    reverse = _metrics(frame, "reverse", reverse=True)
    chance = 1.0 / tf[0]["degree"]
    decision = _stat(tf, "decision_accuracy")
    later = _stat(tf, "later_tf_accuracy")
    solved = _stat(reverse, "exact_path_accuracy")
    measured = [Measured("tf decision (teacher-forced)", *decision),
                Measured("tf later nodes (teacher-forced)", *later),
                Measured("reverse exact path", *solved)]
    holds = (abs(decision[0] - chance) <= CHANCE_TOLERANCE and later[0] >= MIN_LEARNED
             and solved[0] >= MIN_LEARNED)
    note = f"chance 1/degree = {chance:g}"
    for mode in ("teacherless", "teacherless-large"):
        try:
            measured.append(Measured(f"{mode} exact path",
                                     *_stat(_metrics(frame, mode, False), "exact_path_accuracy")))
        except NotRun:
            note += f"; gpt-{mode} not run"
    return measured, holds, note


R5 = Claim(
    id="R5",
    title="Teacher forcing stays at chance on path-star; reverse targets learn it",
    source="Bachmann & Nagarajan, ICML 2024 (arXiv 2403.06963), the Clever-Hans failure",
    quantity="PathStar (degree 2, path length 4, 20 labels) greedy accuracies of the GPT "
             "agents on fresh graphs: tf decision token and later nodes (teacher-forced), "
             "reverse exact path; teacherless exact path (reported)",
    expected=f"tf decision within {CHANCE_TOLERANCE} of 1/degree with later nodes >= "
             f"{MIN_LEARNED} (the shortcut is learned); reverse exact path >= {MIN_LEARNED}",
    check=_check_r5,
)


def _configs(agents: dict[str, str], n_train: int, eval_samples: int) -> list[SweepConfig]:
    forward = tuple(a for mode, a in agents.items() if mode != "reverse")
    return [SweepConfig(ENV_ID, dict(PATHSTAR), forward, (4,), seeds=1, n_train=n_train,
                        eval_samples=eval_samples),
            SweepConfig(ENV_ID, {**PATHSTAR, "target_order": "reverse"}, (agents["reverse"],),
                        (4,), seeds=1, n_train=n_train, eval_samples=eval_samples)]


_REGISTERED = {"tf": "gpt-tf", "reverse": "gpt-reverse", "teacherless": "gpt-teacherless"}

EXPERIMENT = Experiment(
    name="pathstar",
    title="Path-star: when teacher forcing cannot learn",
    about="PathStar-v0 (degree 2, path length 4, 20 node labels): a transformers GPT "
          "(GPT-NeoX, rotary positions, 3 layers, width 64, 4 heads, random init) trained "
          "teacher-forced (gpt-tf), on reversed targets (gpt-reverse) and teacherless, "
          "10,000 Adam steps of 64 sequences from 100,000 demonstrations. cpu: measured on "
          f"{CPU_EVAL:,} fresh graphs, teacherless for {TEACHERLESS_CPU_STEPS:,} steps only "
          "(reported, not part of the claim); full: 20,000 graphs; gpu: adds "
          "gpt-teacherless-large.",
    profiles={
        "cpu": _configs({**_REGISTERED,
                         "teacherless": budget_agent("teacherless", TEACHERLESS_CPU_STEPS)},
                        PATHSTAR_TRAIN, CPU_EVAL),
        "full": _configs(_REGISTERED, PATHSTAR_TRAIN, 20_000),
        "gpu": _configs({**_REGISTERED, "teacherless-large": "gpt-teacherless-large"},
                        PATHSTAR_TRAIN, 20_000),
    },
    claims=(R5,),
    analyse=analyse,
    rank=40,
)


def report_pathstar(frame: pd.DataFrame, out: str | os.PathLike[str], console: Console
                    ) -> list[Path]:
    """Print the path-star table and write ``OUT/pathstar.png`` when ``frame`` holds PathStar
    rows (what ``ntp-bench report`` shows for any sweep)."""
    out = Path(out)
    return [out / f"{f.name}.png" for f in print_analysis(console, analyse, frame, out)[1]]
