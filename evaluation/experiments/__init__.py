"""The experiments, one module each (bsuite's layout: sweeps per profile, analysis, claims).

Every module of this package (but the machinery: :data:`MACHINERY`) that defines ``EXPERIMENT`` (an
:class:`~evaluation.experiments.base.Experiment`) is registered under its name: adding an
experiment is adding one file. :data:`EXPERIMENTS` lists them in report order.
"""

from __future__ import annotations

import importlib
import pkgutil

from evaluation.experiments.base import PROFILES, Experiment

__all__ = ["EXPERIMENTS", "PROFILES", "Experiment", "experiment_names"]


MACHINERY = ("base", "claims", "presets", "report")
"""Modules of this package that hold no experiment: the experiment type, claims with their
verdicts, the presets built from the experiments, and the reproduction report."""


def _discover() -> dict[str, Experiment]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in MACHINERY:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        experiment = getattr(module, "EXPERIMENT", None)
        if isinstance(experiment, Experiment):
            found.append(experiment)
    names = [e.name for e in found]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names must be unique, got {sorted(names)}")
    return {e.name: e for e in sorted(found, key=lambda e: (e.rank, e.name))}


EXPERIMENTS: dict[str, Experiment] = _discover()


def experiment_names() -> list[str]:
    """Names accepted by ``ntp-bench reproduce --only`` (report order)."""
    return list(EXPERIMENTS)
