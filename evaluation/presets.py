"""Named sweeps: one command reproduces each experiment (``ntp-bench sweep --preset NAME``)."""

from __future__ import annotations

from evaluation.sweep import SweepConfig

PRESETS: dict[str, list[SweepConfig]] = {
    # The headline: NTP under misspecification on ARLinear, finite samples and infinite data.
    "quick": [
        SweepConfig(
            env_id="ntp_envs/ARLinear-v0",
            env_kwargs={"misspecification": 0.5},
            agents=("logloss",),
            horizons=(4, 8, 16, 32, 64, 128, 256),
            seeds=3,
            n_train=2000,
        ),
        SweepConfig(
            env_id="ntp_envs/ARLinear-v0",
            env_kwargs={"misspecification": 0.5},
            agents=("logloss",),
            horizons=(4, 8, 16, 32, 64, 128, 256),
            seeds=1,
            population=True,
        ),
    ],
}


def preset_names() -> list[str]:
    """Names accepted by ``--preset``."""
    return list(PRESETS)
