"""The barrier as a worst case: every NTP-style objective pays ~H on the FiniteClassBarrier
family (event_prob 1e-3, a log-spaced grid of ``bias``), while rho stays O(1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.bench.plots import plot_worst_case
from evaluation.bench.sweep import SweepConfig
from evaluation.experiments.base import (
    Experiment,
    Figure,
    Table,
    divergence_analysis,
    family_configs,
    fmt,
)
from evaluation.experiments.claims import Claim, Measured, family_rows, family_worst, full_kwargs

ENV = "ntp_envs/FiniteClassBarrier-v0"
MIX = "ntp_envs/MixtureProduct-v0"
FAMILY_BASE = {"event_prob": 1e-3}
BIASES = tuple(float(f"{b:.3g}") for b in np.geomspace(1e-3, 0.25, 30))
FAMILY = (f"FiniteClassBarrier family (event_prob {FAMILY_BASE['event_prob']:g}, "
          f"{len(BIASES)} log-spaced bias in [{min(BIASES):g}, {max(BIASES):g}])")
FAMILY_GRID = {"bias": BIASES}
CLAIM_HORIZON = 256
NTP_STYLE = ("logloss", "robust", "chunk-rho:1")
AGENTS = ("logloss", "robust", "rho", "chunk-rho:1")
MAX_RHO = 1.5


def _check_r3(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    h = CLAIM_HORIZON
    measured, holds, notes = [], True, []
    for agent in (*NTP_STYLE, "rho"):
        worst, where, _ = family_worst(frame, ENV, agent, FAMILY_BASE, FAMILY_GRID, horizon=h)
        measured.append(Measured(f"{agent} worst C_apx", worst))
        notes.append(f"{agent} worst at bias {where['bias']:g}")
        holds &= worst <= MAX_RHO if agent == "rho" else worst >= h / 4
    return measured, holds, "; ".join(notes)


R3 = Claim(
    id="R3",
    title="Every NTP-style objective pays ~H in the worst case; rho stays O(1)",
    source="Rohatgi et al. 2025 (arXiv 2502.12465): Omega(H) for NTP-style objectives, "
           "O(1) for the rho-estimator",
    quantity=f"worst-case exact population C_apx over the {FAMILY} at H = {CLAIM_HORIZON}",
    expected=f"logloss, robust, chunk-rho:1 >= H/4 = {CLAIM_HORIZON // 4}; rho <= {MAX_RHO}",
    check=_check_r3,
)


def _family(agents: tuple[str, ...], horizons: tuple[int, ...]) -> list[SweepConfig]:
    return family_configs(ENV, FAMILY_BASE, FAMILY_GRID, agents, horizons, seeds=1,
                          population=True)


def worst_case_display(table: pd.DataFrame) -> pd.DataFrame:
    """The worst-case table as display strings."""
    return pd.DataFrame([{
        "agent": row["agent"], "H": str(row["horizon"]), "instances": str(row["instances"]),
        "worst C_apx": fmt(row["worst_c_apx"], digits=3),
        "attained at bias": f"{full_kwargs(ENV, row['worst_kwargs'])['bias']:g}",
        "mean C_apx": fmt(row["mean_c_apx"], digits=3)}
        for _, row in table.sort_values(["agent", "horizon"]).iterrows()])


def analyse(frame: pd.DataFrame, out: Path) -> tuple[list[Table], list[Figure]]:
    """The worst case over the family (table and plot), then the per-instance summary of the
    other settings."""
    tables, figures = [], []
    worst = family_rows(frame, ENV, FAMILY_BASE, FAMILY_GRID)
    if not worst.empty:
        tables.append(Table("worst_case", f"Worst case of C_apx over the {FAMILY}; "
                            "population fits",
                            worst_case_display(worst)))
        written = plot_worst_case(worst, out / "worst_case.png", out / "worst_case_vs_k.png")
        figures.append(Figure("worst_case", "Worst-case C_apx over the family against H"))
        if len(written) > 1:
            figures.append(Figure("worst_case_vs_k", "Worst-case C_apx of the chunk learners "
                                                      "against K"))
    rest = frame[frame["env_id"] != ENV]
    more_tables, more_figures = divergence_analysis(rest, out)
    return tables + more_tables, figures + more_figures


EXPERIMENT = Experiment(
    name="barrier",
    title="The barrier: worst case over an instance family",
    about=f"The {FAMILY} (population fits, exact dp): logloss, robust (smoothed NTP), the "
          "token-level bounded tournament chunk-rho:1 and the sequence-level rho-estimator. "
          "The full profile adds more horizons and MixtureProduct.",
    profiles={
        "cpu": _family(AGENTS, (16, 64, CLAIM_HORIZON)),
        "full": [
            *_family(AGENTS, (8, 16, 32, 64, 128, 256, 512, 1024)),
            SweepConfig(MIX, {}, ("logloss", "robust", "rho"),
                        (8, 16, 32, 64, 128, 256, 512, 1024), seeds=1, population=True),
            SweepConfig(MIX, {}, ("logloss", "robust", "rho"),
                        (8, 16, 32, 64, 128, 256, 512, 1024), seeds=2, n_train=5000),
        ],
    },
    claims=(R3,),
    analyse=analyse,
    rank=20,
)
