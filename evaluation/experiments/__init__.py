"""The experiments, one module each (bsuite's layout: sweeps per profile, analysis, claims).

Every module of this package that defines ``EXPERIMENT`` (an
:class:`~evaluation.experiments.base.Experiment`) is registered under its name: adding an
experiment is adding one file. :data:`EXPERIMENTS` lists them in report order.
"""

from __future__ import annotations

import importlib
import pkgutil

from evaluation.experiments.base import PROFILES, Experiment

__all__ = ["EXPERIMENTS", "PROFILES", "Experiment", "experiment_names"]


def _discover() -> dict[str, Experiment]:
    found = []
    for info in pkgutil.iter_modules(__path__):
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
