"""What an experiment is: sweep configurations per profile, an analysis, and claims.

An experiment (bsuite's layout) is one module of :mod:`evaluation.experiments` holding one
:class:`Experiment`: the sweep configurations of each profile (``cpu``: every claim at
CPU-sized settings; ``full``: the larger CPU settings, what ``--preset NAME`` runs; ``gpu``:
settings for an accelerator), the analysis of its rows (display tables, saved as CSV, and
figures) and its :class:`~evaluation.experiments.claims.Claim` objects.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.bench.analysis import summarise
from evaluation.bench.plots import plot_divergence_vs_horizon
from evaluation.bench.sweep import SweepConfig
from evaluation.experiments.claims import Claim

__all__ = ["PROFILES", "Experiment", "Figure", "Table", "data_label", "divergence_analysis",
           "family_configs", "fmt", "setting_label"]

PROFILES = ("cpu", "full", "gpu")


@dataclass(frozen=True)
class Table:
    """A display table (cells are strings), written as ``<experiment>/<name>.csv``."""

    name: str
    caption: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class Figure:
    """A figure the analysis wrote as ``<experiment>/<name>.png``."""

    name: str
    caption: str


Analysis = Callable[[pd.DataFrame, Path], tuple[list[Table], list[Figure]]]


def fmt(mean: float, se: float = 0.0, digits: int = 4) -> str:
    """``mean ± se`` with ``digits`` significant digits (``-`` for NaN, no ``±`` when se is 0)."""
    if mean is None or not math.isfinite(mean):
        return "-"
    spread = f" ± {se:.2g}" if se is not None and math.isfinite(se) and se > 0 else ""
    return f"{mean:.{digits}g}{spread}"


def data_label(n_train: int) -> str:
    """``population`` for exact-law fits, ``n=N`` otherwise."""
    return "population" if int(n_train) == 0 else f"n={int(n_train)}"


def setting_label(env_id: str, env_kwargs: str) -> str:
    """``Env k=v, ...`` (``Env`` alone at the defaults)."""
    kwargs = json.loads(env_kwargs)
    text = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    name = env_id.removeprefix("ntp_envs/")
    return f"{name} {text}" if text else name


def divergence_analysis(frame: pd.DataFrame, out: Path) -> tuple[list[Table], list[Figure]]:
    """The generic analysis: D_H^2 and C_apx per setting, agent, data and H (mean ± s.e. over
    seeds) and the log-log plot against H."""
    summary = summarise(frame)
    if summary.empty:
        return [], []
    rows = []
    order = ["env_id", "env_kwargs", "agent", "n_train", "horizon"]
    for _, row in summary.sort_values(order).iterrows():
        rows.append({
            "setting": setting_label(row["env_id"], row["env_kwargs"]), "agent": row["agent"],
            "data": data_label(row["n_train"]), "H": str(row["horizon"]),
            "seeds": str(row["seeds"]),
            "D_H^2": fmt(row["hellinger2_mean"], row["hellinger2_se"]),
            "best in class": fmt(row["best_in_class_hellinger2_mean"]),
            "C_apx": fmt(row["c_apx_mean"], row["c_apx_se"], 3)})
    table = Table("divergence", "D_H^2 and C_apx against H (mean ± s.e. over seeds)",
                  pd.DataFrame(rows))
    plot_divergence_vs_horizon(summary, out / "divergence.png")
    return [table], [Figure("divergence", "D_H^2 and C_apx against H per agent")]


def family_configs(env_id: str, base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]],
                   agents: tuple[str, ...], horizons: tuple[int, ...], **config: Any
                   ) -> list[SweepConfig]:
    """The sweep of an instance family (``base`` kwargs x the cartesian product of ``grid``):
    one config with ``env_grid`` where :class:`SweepConfig` has it, else one per instance."""
    if "env_grid" in {f.name for f in fields(SweepConfig)}:
        return [SweepConfig(env_id, dict(base), agents, horizons,
                            env_grid={k: tuple(v) for k, v in grid.items()}, **config)]
    keys = sorted(grid)
    return [SweepConfig(env_id, {**base, **dict(zip(keys, combo, strict=True))}, agents,
                        horizons, **config)
            for combo in itertools.product(*(grid[k] for k in keys))]


@dataclass(frozen=True)
class Experiment:
    """Sweeps per profile, an analysis and claims (see the module doc)."""

    name: str
    title: str
    about: str
    profiles: Mapping[str, list[SweepConfig]]
    claims: tuple[Claim, ...] = ()
    analyse: Analysis = field(default=divergence_analysis, repr=False, compare=False)
    rank: int = 100

    def __post_init__(self) -> None:
        unknown = set(self.profiles) - set(PROFILES)
        if unknown:
            raise ValueError(f"{self.name}: profiles must be among {PROFILES}, got "
                             f"{sorted(unknown)}")

    def configs(self, profile: str) -> list[SweepConfig]:
        """The sweep configurations of ``profile`` (empty when it runs nothing there)."""
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        return list(self.profiles.get(profile, []))
