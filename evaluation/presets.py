"""Named sweeps: one command reproduces each experiment (``ntp-bench sweep --preset NAME``)."""

from __future__ import annotations

from evaluation.sweep import SweepConfig

POWERS_8_TO_1024 = (8, 16, 32, 64, 128, 256, 512, 1024)
BARRIER_AGENTS = ("logloss", "robust", "rho")
PATHSTAR = {"degree": 2, "num_nodes": 20}  # path_length = the horizon, 4
PATHSTAR_TRAIN = 100_000

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
    # Issue 6: path-star, teacher forcing vs reverse targets vs teacherless (about 10 minutes
    # per agent on 2 CPU cores; the reverse agent needs the env's reverse target order).
    "pathstar": [
        SweepConfig("ntp_envs/PathStar-v0", PATHSTAR, ("gpt-tf", "gpt-teacherless"), (4,),
                    seeds=1, n_train=PATHSTAR_TRAIN, eval_samples=20_000),
        SweepConfig("ntp_envs/PathStar-v0", {**PATHSTAR, "target_order": "reverse"},
                    ("gpt-reverse",), (4,), seeds=1, n_train=PATHSTAR_TRAIN,
                    eval_samples=20_000),
    ],
}


def preset_names() -> list[str]:
    """Names accepted by ``--preset``."""
    return list(PRESETS)
