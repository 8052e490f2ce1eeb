"""Named sweeps (``ntp-bench sweep --preset NAME``): each experiment's ``full`` profile.

The experiments (:mod:`evaluation.experiments`) hold the configurations; a preset is the
larger CPU setting of one of them (``ntp-bench reproduce --profile cpu`` runs the CPU-sized
ones and checks the claims).
"""

from __future__ import annotations

from evaluation.bench.sweep import SweepConfig
from evaluation.experiments import EXPERIMENTS

__all__ = ["PRESETS", "preset_names"]

PRESETS: dict[str, list[SweepConfig]] = {
    name: experiment.configs("full") for name, experiment in EXPERIMENTS.items()
    if experiment.configs("full")
}


def preset_names() -> list[str]:
    """Names accepted by ``--preset``."""
    return list(PRESETS)
