"""Chain of thought (Malach 2023): a linear next-token predictor learns parity with the
counting CoT and is at chance without it; the long CoT lets ``mlp-ar`` multiply 2 x 2 digits.

Answer accuracy is greedy decoding (:mod:`evaluation.metrics.accuracy`) on prompts the learner
did not train on: MultiplicationCoT's test split of operand pairs, and for ParityCoT the
prompts not in the demonstrations (exact over the rest of the ``2^num_bits``; a population
fit sees every prompt, so there it is over all prompts). The ``prompts`` column says which:
``test``, ``held-out`` (not in the demonstrations) or ``all`` (training prompts included;
``train`` in results stored before this split existed). For ParityCoT the plot is accuracy
against the CoT length (``cot_stride`` m gives ``ceil(num_bits / m)`` CoT tokens; no CoT is
length 0); for other tasks one bar per setting.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402

from evaluation.bench.plots import save_figure  # noqa: E402
from evaluation.bench.sweep import SweepConfig  # noqa: E402
from evaluation.experiments.base import Experiment, Figure, Table  # noqa: E402
from evaluation.experiments.claims import Claim, Measured, NotRun, mean_se, select_rows  # noqa: E402
from evaluation.experiments.report import print_analysis  # noqa: E402
from ntp_envs import make_task  # noqa: E402
from ntp_envs.multiplication_cot import multiplication_horizon  # noqa: E402
from ntp_envs.parity_cot import parity_horizon  # noqa: E402

PARITY = "ntp_envs/ParityCoT-v0"
GROUP = ["env_id", "env_kwargs", "agent", "n_train", "horizon"]


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
            row[f"{column}_mean"], row[f"{column}_se"] = mean_se(group[column])
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


def plot_answer_accuracy(summary: pd.DataFrame, path: Path) -> Path:
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


def answer_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as display strings (one row per setting, agent and data size)."""
    def cell(row: pd.Series, name: str, digits: int) -> str:
        mean, se = row[f"{name}_mean"], row[f"{name}_se"]
        if pd.isna(mean):
            return "-"
        return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se > 0 else "")

    return pd.DataFrame([{
        "task": row["env_id"].removeprefix("ntp_envs/"), "setting": _setting(row["env_kwargs"]),
        "agent": row["agent"], "data": _data_label(int(row["n_train"])),
        "seeds": str(row["seeds"]), "CoT tokens": str(row["cot_tokens"]),
        "accuracy": cell(row, "answer_accuracy", 4), "prompts": row["split"],
        "D_H^2": cell(row, "hellinger2", 4)} for _, row in summary.iterrows()])


def analyse(frame: pd.DataFrame, out: Path) -> tuple[list[Table], list[Figure]]:
    """The answer-accuracy table and ``answer_accuracy.png`` (nothing without answers)."""
    if "answer_accuracy" not in frame or not frame["answer_accuracy"].notna().any():
        return [], []
    summary = answer_summary(frame)
    plot_answer_accuracy(summary, out / "answer_accuracy.png")
    return ([Table("answer_accuracy", "Answer accuracy (greedy decoding; mean ± s.e. over "
                   "seeds, or the prompt-sampling error of one seed; prompts: test = the held-out "
                   "split, held-out = not in the demonstrations, all = training prompts "
                   "included)", answer_display(summary))],
            [Figure("answer_accuracy", "Answer accuracy against CoT length (parity) and per "
                    "setting (multiplication)")])


def report_answers(frame: pd.DataFrame, out: str | os.PathLike[str], console: Console
                   ) -> list[Path]:
    """Print the answer-accuracy table and write ``OUT/answer_accuracy.png`` when ``frame``
    holds answer accuracies (what ``ntp-bench report`` shows for any sweep)."""
    out = Path(out)
    return [out / f"{f.name}.png" for f in print_analysis(console, analyse, frame, out)[1]]


# ----------------------------------------------------------------- sweeps and the claim

COT_PARITY = {"num_bits": 16, "subset_size": 8}
COT_PARITY_TRAIN = 4000
COT_STRIDES = (1, 2, 4, 8, 16)
COT_MULT_TRAIN_3X3 = 20_000
PARITY_MIN = 0.95
CHANCE_TOLERANCE = 0.05
MULT_MIN = 0.9
MULT = "ntp_envs/MultiplicationCoT-v0"


def _cot_parity(cot: str, stride: int) -> SweepConfig:
    kwargs = {**COT_PARITY, "cot": cot, "cot_stride": stride}
    horizon = parity_horizon(COT_PARITY["num_bits"], cot, stride)
    return SweepConfig(PARITY, kwargs, ("linear-ar",), (horizon,), seeds=2,
                       n_train=COT_PARITY_TRAIN)


def _cot_mult(num_digits: int, cot: str, agents: tuple[str, ...], answer_order: str = "msd",
              **config: Any) -> SweepConfig:
    kwargs = {"num_digits": num_digits, "cot": cot, "answer_order": answer_order}
    return SweepConfig(MULT, kwargs, agents, (multiplication_horizon(num_digits, cot),),
                       eval_samples=5000, **config)


def _accuracy(frame: pd.DataFrame, env_id: str, agent: str, kwargs: dict[str, Any]
              ) -> tuple[float, float]:
    rows = select_rows(frame, env_id, agent, kwargs=kwargs)
    if len(rows) == 1:
        return float(rows["answer_accuracy"].iloc[0]), float(
            rows["answer_accuracy_stderr"].iloc[0])
    return mean_se(rows["answer_accuracy"])


SPLIT_WORDS = {"test": "held-out test pairs", "held-out": "prompts not in the demonstrations",
               "all": "all prompts (training ones included)",
               "train": "all prompts (training ones included)"}
"""What each ``answer_split`` value measures (``train``: rows stored before the split)."""


def _prompts(frame: pd.DataFrame, env_id: str, agent: str, kwargs: dict[str, Any]) -> str:
    """The prompts the accuracy of one setting was measured on, in words."""
    rows = select_rows(frame, env_id, agent, kwargs=kwargs)
    if "answer_split" not in rows:
        return "prompts not recorded"
    splits = sorted({str(s) for s in rows["answer_split"].dropna()})
    return " / ".join(SPLIT_WORDS.get(s, s) for s in splits) or "prompts not recorded"


def _check_r6(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    count_kwargs = {**COT_PARITY, "cot": "count", "cot_stride": 1}
    mult_kwargs = {"num_digits": 2, "cot": "long", "answer_order": "lsd"}
    count = _accuracy(frame, PARITY, "linear-ar", count_kwargs)
    none = _accuracy(frame, PARITY, "linear-ar", {**COT_PARITY, "cot": "none"})
    mult = _accuracy(frame, MULT, "mlp-ar", mult_kwargs)
    measured = [Measured("parity linear-ar count CoT", *count),
                Measured("parity linear-ar no CoT", *none),
                Measured("2x2 mlp-ar long CoT (lsd)", *mult)]
    with contextlib.suppress(NotRun):  # reported when it ran, not part of the condition
        measured.append(Measured("2x2 mlp-ar no CoT", *_accuracy(
            frame, MULT, "mlp-ar", {"num_digits": 2, "cot": "none"})))
    holds = (count[0] >= PARITY_MIN and abs(none[0] - 0.5) <= CHANCE_TOLERANCE
             and mult[0] >= MULT_MIN)
    note = (f"parity answer accuracy on {_prompts(frame, PARITY, 'linear-ar', count_kwargs)}"
            f" (exact); multiplication on {_prompts(frame, MULT, 'mlp-ar', mult_kwargs)}")
    return measured, holds, note


R6 = Claim(
    id="R6",
    title="A linear AR model learns parity with the counting CoT; mlp-ar multiplies with the "
          "long CoT",
    source="Malach 2023 (arXiv 2309.06979), universality of linear next-token predictors "
           "with chain of thought",
    quantity="greedy answer accuracy on prompts not trained on: ParityCoT 16 bits, subset 8, "
             "linear-ar from 4,000 demonstrations with the running count (stride 1) and "
             "without CoT, exact over the prompts not in the demonstrations; "
             "MultiplicationCoT 2 x 2, mlp-ar with the long CoT (answer lsd first)",
    expected=f"count CoT >= {PARITY_MIN}; no CoT within {CHANCE_TOLERANCE} of 1/2; "
             f"2 x 2 long CoT >= {MULT_MIN} on held-out pairs",
    check=_check_r6,
)

EXPERIMENT = Experiment(
    name="cot",
    title="Chain of thought: one expert, inside or outside the linear class",
    about="ParityCoT-v0 (16 bits, parity of a hidden subset of 8) with linear-ar: no CoT, "
          "the running count, the running parities (full profile: every stride); "
          "MultiplicationCoT-v0 2 x 2 (and 3 x 3 in the full profile) with linear-ar and "
          "mlp-ar, with and without Malach's long CoT.",
    profiles={
        "cpu": [
            _cot_parity("none", 1),
            _cot_parity("count", 1),
            _cot_mult(2, "none", ("mlp-ar",), seeds=1, population=True),
            _cot_mult(2, "long", ("mlp-ar",), "lsd", seeds=1, population=True),
        ],
        "full": [
            _cot_parity("none", 1),
            *[_cot_parity(cot, stride) for cot in ("count", "xor") for stride in COT_STRIDES],
            _cot_mult(2, "none", ("linear-ar", "mlp-ar"), seeds=2, population=True),
            _cot_mult(2, "long", ("mlp-ar",), seeds=2, population=True),
            _cot_mult(2, "long", ("mlp-ar",), "lsd", seeds=2, population=True),
            _cot_mult(3, "none", ("linear-ar", "mlp-ar"), seeds=1, n_train=COT_MULT_TRAIN_3X3),
            _cot_mult(3, "long", ("mlp-ar",), "lsd", seeds=1, n_train=COT_MULT_TRAIN_3X3),
        ],
    },
    claims=(R6,),
    analyse=analyse,
    rank=50,
)
