"""The barrier as rates: worst cases over families whose parameters scale with H.

A claim about C_apx is a rate (docs/theory.md, "A claim is a rate"): the families here grid
every parameter the bounds depend on, so the worst case at each H has no ceiling below H.

* ``RATE``: FiniteClassBarrier over event_prob in [1e-9, 1e-2] x bias in [1e-4, 0.25]
  (min_prob 1e-30) at H = 16..1024: NTP-style objectives (``logloss``, ``robust``,
  ``chunk-rho:1``) grow like H (R3), the sequence-level rho stays O(1) (R3b), robust NTP
  is O~(H) across rarity (R8). ``robust-rho`` (a hybrid) is reported beside them.
* ``DELTA``: the same env over min_prob in [1e-300, 1e-5] at H = 64 and 256: NTP's worst
  grows with ln(1/delta), robust NTP's and the bounded token tournament's do not (R7).
* ``MIX``: MixtureProduct over weight x p0 x p1 (27 instances) at H = 16..4096: NTP's
  worst case grows (R2, with the closed form of :mod:`evaluation.experiments.quick` on every
  instance), rho's stays O(1) (R3b).

Every fit is a population fit (the exact expert law) and every score exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.bench.analysis import exponent_text, loglog_slope
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
from evaluation.experiments.claims import (
    Claim,
    Measured,
    NotRun,
    family_rows,
    full_kwargs,
    grid_instances,
    instances_worst,
    select_rows,
)
from evaluation.experiments.quick import mixture_ntp_c_apx

ENV = "ntp_envs/FiniteClassBarrier-v0"
MIX = "ntp_envs/MixtureProduct-v0"


def log_grid(low: float, high: float, n: int) -> tuple[float, ...]:
    """``n`` log-spaced values in ``[low, high]``, rounded to 3 significant digits."""
    return tuple(float(f"{v:.3g}") for v in np.geomspace(low, high, n))


RATE_GRID: dict[str, tuple[float, ...]] = {
    "event_prob": (1e-2, 1e-3, 1e-4, 1e-5, 1e-7, 1e-9),
    "bias": log_grid(1e-4, 0.25, 10),
}
RATE_HORIZONS = (16, 64, 256, 1024)
NTP_STYLE = ("logloss", "robust", "chunk-rho:1")
RATE_AGENTS = (*NTP_STYLE, "robust-rho", "rho")
MIN_NTP_EXPONENT = 0.8
MAX_RHO = 1.5
R8_HORIZON = 64
MAX_ROBUST_PER_H = 10.0

DELTA_GRID: dict[str, tuple[float, ...]] = {
    "min_prob": (1e-5, 1e-30, 1e-100, 1e-300),
    "event_prob": (1e-2, 1e-3, 1e-4, 1e-5),
    "bias": log_grid(1e-3, 0.25, 8),
}
DELTA_HORIZONS = (64, 256)
DELTA_AGENTS = NTP_STYLE
MIN_NTP_DELTA_GROWTH = 8.0  # worst at min_prob 1e-300 over worst at 1e-30
MAX_BOUNDED_CHANGE = 0.10  # max / min of the worst over min_prob, minus 1

MIX_GRID: dict[str, tuple[float, ...]] = {
    "weight": (0.02, 0.1, 0.3),
    "p0": (0.1, 0.2, 0.5),
    "p1": (0.3, 0.8, 0.9),
}
MIX_HORIZONS = (16, 64, 256, 1024, 4096)
MIX_AGENTS = ("logloss", "rho")
CLOSED_FORM_HORIZONS = (64, 1024)
RELATIVE_TOLERANCE = 1e-6
MIN_NTP_MIX_EXPONENT = 0.3
MIX_RHO_HORIZONS = (64, 256, 1024, 4096)
MAX_RHO_MIX = 6.0
MAX_RHO_MIX_EXPONENT = 0.1


def _describe(name: str, grid: Mapping[str, Sequence[float]]) -> str:
    parts = [f"{k} in {len(v)} values [{min(v):g}, {max(v):g}]" for k, v in grid.items()]
    return f"{name.removeprefix('ntp_envs/').removesuffix('-v0')} family ({', '.join(parts)})"


RATE = _describe(ENV, RATE_GRID) + " with min_prob 1e-30"
DELTA = _describe(ENV, DELTA_GRID)
MIXTURE = _describe(MIX, MIX_GRID)


def worst_curve(frame: pd.DataFrame, env_id: str, agent: str,
                instances: list[dict[str, Any]], horizons: Sequence[int]
                ) -> tuple[list[float], float, float]:
    """Worst C_apx over ``instances`` at each horizon, with its growth exponent in H and the
    exponent's standard error (``NotRun`` when an instance lacks a row)."""
    worst = [instances_worst(frame, env_id, agent, instances, horizon=h)[0] for h in horizons]
    slope, se, _ = loglog_slope(horizons, worst)
    return worst, slope, se


def _check_r3(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    instances = grid_instances({}, RATE_GRID)
    measured, holds, notes = [], True, []
    for agent in NTP_STYLE:
        worst, slope, se = worst_curve(frame, ENV, agent, instances, RATE_HORIZONS)
        measured += [Measured(f"{agent} exponent", slope, se),
                     Measured(f"{agent} min worst x 4 / H",
                              min(4 * w / h for w, h in zip(worst, RATE_HORIZONS, strict=True)))]
        holds &= slope >= MIN_NTP_EXPONENT and all(
            w >= h / 4 for w, h in zip(worst, RATE_HORIZONS, strict=True))
        notes.append(f"{agent} worst " + ", ".join(
            f"{w:.4g} (H={h})" for w, h in zip(worst, RATE_HORIZONS, strict=True)))
    return measured, holds, "; ".join(notes)


R3 = Claim(
    id="R3",
    title="Every NTP-style objective pays Omega(H) in the worst case",
    source="Rohatgi et al. 2025 (arXiv 2502.12465): Omega(H) for NTP-style (token-decomposable) "
           "objectives",
    quantity=f"worst-case exact population C_apx of logloss, robust and chunk-rho:1 over the "
             f"{RATE} at H = {', '.join(map(str, RATE_HORIZONS))}",
    expected=f"growth exponent of the worst case in H >= {MIN_NTP_EXPONENT} and worst >= H/4 "
             "at every H, for each of the three",
    check=_check_r3,
)


def _check_r3b(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    barrier = [instances_worst(frame, ENV, "rho", grid_instances({}, RATE_GRID), horizon=h)[0]
               for h in RATE_HORIZONS]
    mix, slope, se = worst_curve(frame, MIX, "rho", grid_instances({}, MIX_GRID),
                                 MIX_RHO_HORIZONS)
    measured = [Measured("barrier max over H", max(barrier)),
                Measured("MixtureProduct max over H", max(mix)),
                Measured("MixtureProduct exponent", slope, se)]
    holds = max(barrier) <= MAX_RHO and max(mix) <= MAX_RHO_MIX and slope <= MAX_RHO_MIX_EXPONENT
    note = ("rho worst on the barrier family " + ", ".join(
        f"{w:.4g} (H={h})" for w, h in zip(barrier, RATE_HORIZONS, strict=True))
        + "; on MixtureProduct " + ", ".join(
        f"{w:.4g} (H={h})" for w, h in zip(mix, MIX_RHO_HORIZONS, strict=True)))
    return measured, holds, note


R3B = Claim(
    id="R3b",
    title="The sequence-level rho-estimator stays O(1)",
    source="Rohatgi et al. 2025 (arXiv 2502.12465): C_apx = O(1) is possible (a rho-estimator)",
    quantity=f"worst-case exact population C_apx of rho over the {RATE} at H = "
             f"{', '.join(map(str, RATE_HORIZONS))}, and over the {MIXTURE} at H = "
             f"{', '.join(map(str, MIX_RHO_HORIZONS))}",
    expected=f"barrier: <= {MAX_RHO} at every H; MixtureProduct: <= {MAX_RHO_MIX:g} at every H "
             f"and growth exponent <= {MAX_RHO_MIX_EXPONENT}",
    check=_check_r3b,
)


def _check_r7(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    measured, holds, notes = [], True, []
    rest = {k: v for k, v in DELTA_GRID.items() if k != "min_prob"}
    for h in DELTA_HORIZONS:
        for agent in DELTA_AGENTS:
            worst = {d: instances_worst(frame, ENV, agent,
                                        grid_instances({"min_prob": d}, rest), horizon=h)[0]
                     for d in DELTA_GRID["min_prob"]}
            notes.append(f"{agent} H={h}: " + ", ".join(f"{w:.4g} ({d:g})"
                                                       for d, w in worst.items()))
            if agent == "logloss":
                growth = worst[1e-300] / worst[1e-30]
                measured.append(Measured(f"logloss H={h} worst(1e-300) / worst(1e-30)", growth))
                holds &= growth >= MIN_NTP_DELTA_GROWTH
            else:
                change = max(worst.values()) / min(worst.values()) - 1.0
                measured.append(Measured(f"{agent} H={h} change over min_prob", change))
                holds &= change <= MAX_BOUNDED_CHANGE
    return measured, holds, "worst C_apx (min_prob): " + "; ".join(notes)


R7 = Claim(
    id="R7",
    title="NTP is unbounded in ln(1/delta); robust NTP and a bounded token objective are not",
    source="Rohatgi et al. 2025 (arXiv 2502.12465): NTP's C_apx can be unbounded, robust NTP "
           "reaches O~(H)",
    quantity=f"worst-case exact population C_apx over the {DELTA}, per min_prob, at H = "
             f"{' and '.join(map(str, DELTA_HORIZONS))}",
    expected=f"logloss: worst at min_prob 1e-300 >= {MIN_NTP_DELTA_GROWTH:g} x worst at 1e-30; "
             f"robust and chunk-rho:1: worst changes by <= {MAX_BOUNDED_CHANGE:.0%} across "
             "min_prob 1e-5..1e-300",
    check=_check_r7,
)


def _check_r8(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    h = R8_HORIZON
    worst, where = instances_worst(frame, ENV, "robust", grid_instances({}, RATE_GRID),
                                   horizon=h)
    return ([Measured(f"robust worst / H at H={h}", worst / h)], worst <= MAX_ROBUST_PER_H * h,
            f"robust worst {worst:.4g} at event_prob {where['event_prob']:g}, bias "
            f"{where['bias']:g}")


R8 = Claim(
    id="R8",
    title="Robust NTP is O~(H) across rarity",
    source="Rohatgi et al. 2025 (arXiv 2502.12465): NTP made robust reaches C_apx = O~(H)",
    quantity=f"worst-case exact population C_apx of robust over the {RATE} at H = {R8_HORIZON}",
    expected=f"<= {MAX_ROBUST_PER_H:g} H = {MAX_ROBUST_PER_H * R8_HORIZON:g}",
    check=_check_r8,
)


def _check_r2(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    instances = grid_instances({}, MIX_GRID)
    worst, slope, se = worst_curve(frame, MIX, "logloss", instances, MIX_HORIZONS)
    agree, largest = True, 0.0
    for h in CLOSED_FORM_HORIZONS:
        for kwargs in instances:
            rows = select_rows(frame, MIX, "logloss", horizon=h, n_train=0, kwargs=kwargs,
                               exact_kwargs=True)
            closed, _, _ = mixture_ntp_c_apx(h, **kwargs)
            error = abs(float(rows["c_apx"].mean()) - closed) / closed
            largest = max(largest, error)
            agree &= error <= RELATIVE_TOLERANCE
    measured = [Measured(f"worst H={h}", w) for h, w in zip(MIX_HORIZONS, worst, strict=True)]
    measured += [Measured("exponent", slope, se),
                 Measured("largest relative gap to the closed form", largest)]
    return measured, agree and slope >= MIN_NTP_MIX_EXPONENT, ""


R2 = Claim(
    id="R2",
    title="NTP's worst-case C_apx grows with H under misspecification",
    source="Rohatgi et al. 2025 (arXiv 2502.12465), the Omega(H) barrier for NTP",
    quantity=f"worst-case exact population C_apx of logloss over the {MIXTURE} at H = "
             f"{', '.join(map(str, MIX_HORIZONS))}",
    expected=f"growth exponent of the worst case in H >= {MIN_NTP_MIX_EXPONENT}; every "
             f"instance equal to the closed form (evaluation.experiments.quick) within "
             f"{RELATIVE_TOLERANCE:g} relative at H = "
             f"{' and '.join(map(str, CLOSED_FORM_HORIZONS))}",
    check=_check_r2,
)


def _worst_table(frame: pd.DataFrame, env_id: str, grid: Mapping[str, Sequence[float]]
                 ) -> pd.DataFrame:
    """Display rows of the worst case over a family against H, with growth exponents."""
    worst = family_rows(frame, env_id, {}, grid)
    return pd.DataFrame([{
        "agent": row["agent"], "H": str(row["horizon"]), "instances": str(row["instances"]),
        "worst C_apx": fmt(row["worst_c_apx"], digits=4),
        "worst / H": fmt(row["worst_c_apx"] / row["horizon"], digits=3),
        "attained at": ", ".join(f"{k} {full_kwargs(env_id, row['worst_kwargs'])[k]:g}"
                                 for k in grid),
        "exponent in H": exponent_text(row)}
        for _, row in worst.sort_values(["agent", "horizon"]).iterrows()])


def _slice_table(frame: pd.DataFrame, knob: str) -> pd.DataFrame:
    """Worst C_apx over the rest of the family at each value of ``knob`` (one column per
    value), per agent and H; ``-`` where rows are missing."""
    grid = DELTA_GRID if knob == "min_prob" else RATE_GRID
    horizons = DELTA_HORIZONS if knob == "min_prob" else RATE_HORIZONS
    agents = DELTA_AGENTS if knob == "min_prob" else RATE_AGENTS
    rest = {k: v for k, v in grid.items() if k != knob}
    rows = []
    for agent in agents:
        for h in horizons:
            row = {"agent": agent, "H": str(h)}
            for value in grid[knob]:
                try:
                    worst, _ = instances_worst(frame, ENV, agent,
                                               grid_instances({knob: value}, rest), horizon=h)
                except NotRun:  # a missing slice shows as "-"
                    worst = math.nan
                row[f"{knob} {value:g}"] = fmt(worst, digits=4)
            rows.append(row)
    return pd.DataFrame(rows)


def analyse(frame: pd.DataFrame, out: Path) -> tuple[list[Table], list[Figure]]:
    """Worst case against H (tables with exponents, log-log plot with a slope-1 guide), worst
    case against min_prob and against event_prob."""
    tables, figures = [], []
    worst = pd.concat([family_rows(frame, ENV, {}, RATE_GRID),
                       family_rows(frame, MIX, {}, MIX_GRID)])
    if not worst.empty:
        tables.append(Table("worst_case", f"Worst case of C_apx over the {RATE}, against H "
                            "(population fits, exact)", _worst_table(frame, ENV, RATE_GRID)))
        tables.append(Table("worst_case_mixture", f"Worst case of C_apx over the {MIXTURE}, "
                            "against H", _worst_table(frame, MIX, MIX_GRID)))
        plot_worst_case(worst, out / "worst_case.png", out / "worst_case_vs_k.png")
        figures.append(Figure("worst_case", "Worst-case C_apx over each family against H "
                                            "(log-log; dotted: slope 1)"))
    if (frame["env_id"] == ENV).any():
        tables.append(Table("worst_vs_delta", f"Worst case over the {DELTA} at each min_prob "
                            "(delta)", _slice_table(frame, "min_prob")))
        tables.append(Table("worst_vs_event_prob", f"Worst case over the {RATE} at each "
                            "event_prob (over the biases)", _slice_table(frame, "event_prob")))
    more_tables, more_figures = divergence_analysis(frame[frame["n_train"] > 0], out)
    return tables + more_tables, figures + more_figures


def _configs(horizon_scale: int = 1) -> list[SweepConfig]:
    """The three families (population fits; ``horizon_scale`` 4 adds H = 4096 to RATE)."""
    rate = RATE_HORIZONS + ((4096,) if horizon_scale > 1 else ())
    return [*family_configs(ENV, {}, RATE_GRID, RATE_AGENTS, rate, seeds=1, population=True),
            *family_configs(ENV, {}, DELTA_GRID, DELTA_AGENTS, DELTA_HORIZONS, seeds=1,
                            population=True),
            *family_configs(MIX, {}, MIX_GRID, MIX_AGENTS, MIX_HORIZONS, seeds=1,
                            population=True)]


EXPERIMENT = Experiment(
    name="barrier",
    title="The barrier as rates: worst cases over families that scale with H",
    about=f"Population fits, exact scores. The {RATE} at H = 16..1024 (logloss, robust, "
          f"chunk-rho:1, robust-rho, rho); the {DELTA} at H = 64 and 256 (logloss, robust, "
          f"chunk-rho:1); the {MIXTURE} at H = 16..4096 (logloss, rho). The full profile adds "
          "H = 4096 on the first family and MixtureProduct from demonstrations.",
    profiles={
        "cpu": _configs(),
        "full": [
            *_configs(horizon_scale=4),
            SweepConfig(MIX, {}, ("logloss", "robust", "rho"), (16, 64, 256, 1024), seeds=2,
                        n_train=5000),
        ],
    },
    claims=(R2, R3, R3B, R7, R8),
    analyse=analyse,
    rank=20,
)

__all__ = ["DELTA_GRID", "ENV", "EXPERIMENT", "MIX", "MIX_GRID", "R2", "R3", "R3B", "R7", "R8",
           "RATE_GRID", "log_grid", "worst_curve"]
