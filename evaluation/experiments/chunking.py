"""Chunking trades compute for accuracy: bounded chunk-level objectives reach worst-case
C_apx ~ H/K at chunk size K (``chunk-rho:K``), measured next to chunk-level log loss
(``chunk:K``) and chunked kernel regression (``chunk-kr:K``, our reading of "ChunkKR").

C_apx is against the best member of the *token* class; an improper chunk class can go below 1.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from evaluation.bench.analysis import chunk_size  # noqa: E402
from evaluation.bench.plots import save_figure  # noqa: E402
from evaluation.bench.sweep import SweepConfig  # noqa: E402
from evaluation.experiments.barrier import ENV, log_grid  # noqa: E402
from evaluation.experiments.base import (  # noqa: E402
    Experiment,
    Figure,
    Table,
    data_label,
    family_configs,
    fmt,
    setting_label,
)
from evaluation.experiments.claims import (  # noqa: E402
    Claim,
    Measured,
    family_rows,
    family_worst,
    grid_instances,
    instances_worst,
)

MIX = "ntp_envs/MixtureProduct-v0"
FAMILY_BASE = {"event_prob": 1e-3}
BIASES = tuple(float(f"{b:.3g}") for b in np.geomspace(1e-3, 0.25, 30))
FAMILY = (f"FiniteClassBarrier family (event_prob {FAMILY_BASE['event_prob']:g}, "
          f"{len(BIASES)} log-spaced bias in [{min(BIASES):g}, {max(BIASES):g}])")
FAMILY_GRID = {"bias": BIASES}
CLAIM_HORIZON = 256
CHUNK_SIZES = tuple(2**i for i in range(9))  # 1, 2, 4, ..., 256 = H
RATIO_RANGE = (0.4, 1.5)
BOUNDED = tuple(f"chunk-rho:{k}" for k in CHUNK_SIZES)
LOG_LOSS_TERNARY = tuple(f"chunk:{k}" for k in (1, 2, 4, 8))  # 3**8 outcomes at most
LOG_LOSS_BINARY = tuple(f"chunk:{k}" for k in (1, 2, 4, 8, 16))  # 2**16 outcomes at most
KERNEL_TERNARY = tuple(f"chunk-kr:{k}" for k in (1, 2, 4, 8))
KERNEL_BINARY = tuple(f"chunk-kr:{k}" for k in (1, 2, 4, 8, 16))
_PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")


def _check_r4(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    h, (low, high) = CLAIM_HORIZON, RATIO_RANGE
    measured, holds = [], True
    for k in CHUNK_SIZES:
        worst, _, _ = family_worst(frame, ENV, f"chunk-rho:{k}", FAMILY_BASE, FAMILY_GRID,
                                   horizon=h)
        ratio = worst * k / h
        measured.append(Measured(f"K={k}", ratio))
        holds &= low <= ratio <= high
    return measured, holds, "measured: worst-case C_apx x K / H per K"


R4A = Claim(
    id="R4a",
    title="Bounded chunk-level objectives trade K for H/K on a finite class",
    source="Rohatgi et al. 2025 (arXiv 2502.12465): chunking gives C_apx ~ H/K at cost "
           "exponential in K; the chunk-level rho tournament is our reading",
    quantity=f"worst-case exact population C_apx of chunk-rho:K x K / H over the "
             f"{FAMILY} at H = {CLAIM_HORIZON}",
    expected=f"in [{RATIO_RANGE[0]}, {RATIO_RANGE[1]}] for every K = 1, 2, 4, ..., "
             f"{CLAIM_HORIZON}",
    check=_check_r4,
)


TIED = "ntp_envs/TiedLogitBarrier-v0"
TIED_GRID: dict[str, tuple[float, ...]] = {
    "event_prob": log_grid(1e-5, 0.1, 6),
    "beta": log_grid(1e-3, 1.0, 7),
    "normal_logit": (0.1, 0.3),
}
TIED_HORIZONS = (64, 256)
TIED_CHUNKS = (1, 2, 3, 4, 5, 6, 7, 8, 16)
HELLINGER = tuple(f"chunk-hellinger:{k}" for k in TIED_CHUNKS)
TIED_RATIO = (0.25, 2.0)
TIED_FAMILY = (f"TiedLogitBarrier family (event_prob in 6 values [1e-05, 0.1], beta in 7 "
               f"values [0.001, 1], normal_logit in {list(TIED_GRID['normal_logit'])})")


def _check_r4b(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    low, high = TIED_RATIO
    instances = grid_instances({}, TIED_GRID)
    measured, holds, notes = [], True, []
    for h in TIED_HORIZONS:
        ratios = []
        for k in TIED_CHUNKS:
            worst, _ = instances_worst(frame, TIED, f"chunk-hellinger:{k}", instances,
                                       horizon=h)
            ratios.append(worst * k / h)
        measured += [Measured(f"H={h} min over K", min(ratios)),
                     Measured(f"H={h} max over K", max(ratios))]
        holds &= all(low <= r <= high for r in ratios)
        notes.append(f"H={h}: " + ", ".join(f"K={k} {r:.3g}"
                                            for k, r in zip(TIED_CHUNKS, ratios, strict=True)))
    return measured, holds, "worst C_apx x K / H: " + "; ".join(notes)


R4B = Claim(
    id="R4b",
    title="On a binary linear class, a bounded chunk-level learner trades K for H/K",
    source="Rohatgi et al. 2025 (arXiv 2502.12465): chunking gives C_apx ~ H/K for binary "
           "autoregressive linear models; the learner (chunk-hellinger:K) and the family are ours",
    quantity=f"worst-case exact population C_apx of chunk-hellinger:K x K / H over the "
             f"{TIED_FAMILY} at H = {' and '.join(map(str, TIED_HORIZONS))}",
    expected=f"in [{TIED_RATIO[0]}, {TIED_RATIO[1]:g}] for every K = "
             f"{', '.join(map(str, TIED_CHUNKS))} at both H",
    check=_check_r4b,
)


def chunking_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed means and standard errors per (env, kwargs, data, H, learner, K) of the chunk
    learners' rows."""
    ok = frame[frame["status"] == "ok"].copy()
    parsed = [chunk_size(a) for a in ok["agent"]]
    ok["learner"] = [p[0] if p else None for p in parsed]
    ok["K"] = [p[1] if p else None for p in parsed]
    ok = ok[ok["K"].notna()]
    rows = []
    keys = ["env_id", "env_kwargs", "n_train", "horizon", "learner", "K"]
    for key, group in ok.groupby(keys, sort=True):
        row = dict(zip(keys, key, strict=True))
        row["K"] = int(row["K"])
        row["seeds"] = len(group)
        for column in ("hellinger2", "c_apx", "kl", "fit_seconds"):
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            row[column] = float(values.mean()) if len(values) else np.nan
            row[f"{column}_se"] = (float(values.std(ddof=1) / np.sqrt(len(values)))
                                   if len(values) > 1 else 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_against_k(worst: pd.DataFrame, path: Path, family: str = FAMILY) -> Path:
    """Worst-case C_apx (with H/K) and fit seconds against K per chunk learner and H."""
    fig, (ax_c, ax_t) = plt.subplots(1, 2, figsize=(12, 4.5))
    markers, styles = "osD^v", ("-", "--", ":", "-.")
    for i, ((learner, horizon), group) in enumerate(worst.groupby(["learner", "horizon"])):
        group = group.sort_values("K")
        style = {"marker": markers[i % len(markers)], "linestyle": styles[i % len(styles)],
                 "label": f"{learner}:K, H={horizon}"}
        ax_c.plot(group["K"], group["worst_c_apx"], **style)
        ax_t.plot(group["K"], group["fit_seconds"], **style)
    for horizon in sorted(worst["horizon"].unique()):
        ks = np.array(sorted(worst["K"].unique()), dtype=float)
        ax_c.plot(ks, horizon / ks, "k:", alpha=0.5, label=f"H/K, H={horizon}")
    for ax, label in ((ax_c, "worst-case C_apx over the family"), (ax_t, "fit seconds")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("chunk size K")
        ax.set_ylabel(label)
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{family}: C_apx and compute against K (population)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _against_k(frame: pd.DataFrame, out: Path, env_id: str, base: dict, grid: dict,
               family: str, name: str) -> tuple[list[Table], list[Figure]]:
    """The worst case over one family against K (table ``worst_case_<name>``, figure
    ``<name>``: worst C_apx and mean fit seconds per chunk learner and H)."""
    worst = family_rows(frame, env_id, base, grid).copy()
    if worst.empty:
        return [], []
    parsed = [chunk_size(a) for a in worst["agent"]]
    worst["learner"] = [p[0] if p else None for p in parsed]
    worst["K"] = [p[1] if p else None for p in parsed]
    ok = frame[(frame["status"] == "ok") & (frame["env_id"] == env_id)]
    seconds = ok.groupby(["agent", "horizon"])["fit_seconds"].mean()
    worst["fit_seconds"] = [seconds.get((a, h), np.nan)
                            for a, h in zip(worst["agent"], worst["horizon"], strict=True)]
    chunked = worst[worst["K"].notna()].copy()
    chunked["K"] = chunked["K"].astype(int)
    rows = [{"learner": r["learner"], "H": str(r["horizon"]), "K": str(r["K"]),
             "instances": str(r["instances"]),
             "worst C_apx": fmt(r["worst_c_apx"], digits=3),
             "x K / H": fmt(r["worst_c_apx"] * r["K"] / r["horizon"], digits=3),
             "mean C_apx": fmt(r["mean_c_apx"], digits=3),
             "fit s": fmt(r["fit_seconds"], digits=2)}
            for _, r in chunked.sort_values(["learner", "horizon", "K"]).iterrows()]
    others = worst[worst["K"].isna()].sort_values(["agent", "horizon"])
    rows += [{"learner": r["agent"], "H": str(r["horizon"]), "K": "-",
              "instances": str(r["instances"]),
              "worst C_apx": fmt(r["worst_c_apx"], digits=3), "x K / H": "-",
              "mean C_apx": fmt(r["mean_c_apx"], digits=3),
              "fit s": fmt(r["fit_seconds"], digits=2)} for _, r in others.iterrows()]
    tables = [Table(f"worst_case_{name}", f"Worst case over the {family} against the chunk "
                    "size K", pd.DataFrame(rows))]
    if chunked.empty:
        return tables, []
    plot_against_k(chunked, out / f"{name}.png", family)
    return tables, [Figure(name, f"Worst-case C_apx and fit time against K: {family}")]


def analyse(frame: pd.DataFrame, out: Path) -> tuple[list[Table], list[Figure]]:
    """Worst case against K over the barrier family and the tied-logit family (tables,
    plots), then per-instance values on the other settings."""
    tables, figures = _against_k(frame, out, ENV, FAMILY_BASE, FAMILY_GRID, FAMILY, "vs_k")
    more_tables, more_figures = _against_k(frame, out, TIED, {}, TIED_GRID, TIED_FAMILY,
                                           "linear_vs_k")
    tables += more_tables
    figures += more_figures
    rest = chunking_table(frame[~frame["env_id"].isin([ENV, TIED])])
    if not rest.empty:
        tables.append(Table("per_instance", "Chunk learners on single instances (mean ± s.e. "
                            "over seeds)", pd.DataFrame([{
                                "setting": setting_label(r["env_id"], r["env_kwargs"]),
                                "data": data_label(r["n_train"]), "H": str(r["horizon"]),
                                "learner": r["learner"], "K": str(r["K"]),
                                "D_H^2": fmt(r["hellinger2"], r["hellinger2_se"]),
                                "C_apx": fmt(r["c_apx"], r["c_apx_se"], 3),
                                "fit s": fmt(r["fit_seconds"], digits=2)}
                                for _, r in rest.iterrows()])))
    return tables, figures


def _family(agents: tuple[str, ...], horizons: tuple[int, ...]) -> list[SweepConfig]:
    return family_configs(ENV, FAMILY_BASE, FAMILY_GRID, agents, horizons, seeds=1,
                          population=True)


EXPERIMENT = Experiment(
    name="chunking",
    title="Chunking: compute for accuracy",
    about="chunk-rho:K (the rho tournament over chunks of K tokens) for K = 1, 2, 4, ..., H "
          "on the FiniteClassBarrier family at H = 256, and chunk-hellinger:K (the Hellinger "
          f"projection of chunk laws onto the class) for K = 1..8, 16 on the {TIED_FAMILY} "
          "(a binary linear class) at H = 64 and 256, beside logloss and rho (population "
          "fits). The full profile adds H = 64 on the first family, chunk-level log loss "
          "(chunk:K), chunked kernel regression (chunk-kr:K), chunk-rho:K on the linear "
          "family with normal_logit 0 and 1 too, and MixtureProduct at H = 256 and 1024.",
    profiles={
        "cpu": [*_family(BOUNDED, (CLAIM_HORIZON,)),
                *family_configs(TIED, {}, TIED_GRID, ("logloss", "rho", *HELLINGER),
                                TIED_HORIZONS, seeds=1, population=True)],
        "full": [
            *family_configs(TIED, {}, TIED_GRID, ("logloss", "rho", *HELLINGER,
                                                  "chunk-rho:1", "chunk-rho:4", "chunk-rho:16"),
                            TIED_HORIZONS, seeds=1, population=True),
            *family_configs(TIED, {}, {**TIED_GRID, "normal_logit": (0.0, 1.0)},
                            ("logloss", "rho", *HELLINGER, "chunk-rho:1", "chunk-rho:4",
                             "chunk-rho:16"), TIED_HORIZONS, seeds=1, population=True),
            *_family(("logloss", "robust", "rho", *BOUNDED[:7], *LOG_LOSS_TERNARY,
                      *KERNEL_TERNARY), (64,)),
            *_family(("logloss", "robust", "rho", *BOUNDED, *LOG_LOSS_TERNARY,
                      *KERNEL_TERNARY), (CLAIM_HORIZON,)),
            SweepConfig(MIX, {}, ("logloss", "robust", "rho", *BOUNDED, *LOG_LOSS_BINARY,
                                  *KERNEL_BINARY), (256,), seeds=1, population=True),
            SweepConfig(MIX, {}, ("logloss", "rho", *LOG_LOSS_BINARY, *KERNEL_BINARY),
                        (1024,), seeds=1, population=True),
        ],
    },
    claims=(R4A, R4B),
    analyse=analyse,
    rank=30,
)
