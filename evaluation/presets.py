"""Named sweeps: one command reproduces each experiment (``ntp-bench sweep --preset NAME``)."""

from __future__ import annotations

from evaluation.sweep import SweepConfig

POWERS_8_TO_1024 = (8, 16, 32, 64, 128, 256, 512, 1024)
BARRIER_AGENTS = ("logloss", "robust", "rho")

PRESETS: dict[str, list[SweepConfig]] = {
    # The headline: NTP's error amplification on MixtureProduct and the two ways around it.
    "quick": [
        SweepConfig("ntp_envs/MixtureProduct-v0", {}, BARRIER_AGENTS, POWERS_8_TO_1024,
                    seeds=1, population=True),
        SweepConfig("ntp_envs/MixtureProduct-v0", {}, BARRIER_AGENTS, POWERS_8_TO_1024,
                    seeds=2, n_train=5000),
    ],
    # Both barrier tasks (exact at every H), population and finite-sample fits.
    "barrier": [
        SweepConfig("ntp_envs/MixtureProduct-v0", {}, BARRIER_AGENTS, POWERS_8_TO_1024,
                    seeds=1, population=True),
        SweepConfig("ntp_envs/MixtureProduct-v0", {}, BARRIER_AGENTS, POWERS_8_TO_1024,
                    seeds=2, n_train=5000),
        SweepConfig("ntp_envs/FiniteClassBarrier-v0", {}, BARRIER_AGENTS, POWERS_8_TO_1024,
                    seeds=1, population=True),
        SweepConfig("ntp_envs/FiniteClassBarrier-v0", {}, BARRIER_AGENTS, (8, 32, 128),
                    seeds=2, n_train=50_000),
    ],
    # Issue 3's demo: LogLossBC on ARLinear, misspecification 0.5.
    "arlinear": [
        SweepConfig("ntp_envs/ARLinear-v0", {"misspecification": 0.5}, ("logloss",),
                    (4, 8, 16, 32, 64, 128, 256), seeds=3, n_train=2000),
        SweepConfig("ntp_envs/ARLinear-v0", {"misspecification": 0.5}, ("logloss",),
                    (4, 8, 16, 32, 64, 128, 256), seeds=1, population=True),
    ],
}


def preset_names() -> list[str]:
    """Names accepted by ``--preset``."""
    return list(PRESETS)
