"""Named sweeps: one command reproduces each experiment (``ntp-bench sweep --preset NAME``)."""

from __future__ import annotations

from typing import Any

from evaluation.sweep import SweepConfig
from ntp_envs.multiplication_cot import multiplication_horizon
from ntp_envs.parity_cot import parity_horizon

POWERS_8_TO_1024 = (8, 16, 32, 64, 128, 256, 512, 1024)
BARRIER_AGENTS = ("logloss", "robust", "rho")
PATHSTAR = {"degree": 2, "num_nodes": 20}  # path_length = the horizon, 4
PATHSTAR_TRAIN = 100_000
CHUNKS_BINARY = ("chunk:1", "chunk:2", "chunk:4", "chunk:8", "chunk:16")  # V**K <= 2**16
CHUNKS_TERNARY = ("chunk:1", "chunk:2", "chunk:4", "chunk:8")  # 3**8 (3**16 is over the cap)

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
    # Issue 5: ChunkedBC, C_apx and fit time vs chunk size K at H = 256 (about 2 minutes);
    # plot and table: python -m evaluation.chunking_experiment --out runs/chunking.
    "chunking": [
        SweepConfig("ntp_envs/MixtureProduct-v0", {}, ("logloss", *CHUNKS_BINARY), (256,),
                    seeds=1, population=True),
        SweepConfig("ntp_envs/MixtureProduct-v0", {}, CHUNKS_BINARY, (256,), seeds=2,
                    n_train=5000),
        SweepConfig("ntp_envs/ARLinear-v0", {"misspecification": 0.5},
                    ("logloss", *CHUNKS_BINARY), (256,), seeds=1, population=True),
        SweepConfig("ntp_envs/ARLinear-v0", {"misspecification": 0.5}, CHUNKS_BINARY, (256,),
                    seeds=2, n_train=2000),
        SweepConfig("ntp_envs/FiniteClassBarrier-v0", {}, ("logloss", *CHUNKS_TERNARY), (256,),
                    seeds=1, population=True),
    ],
}


# Issue 7: chain of thought (Malach 2023). ParityCoT 16 bits, subset 8: linear-ar without CoT,
# with the running count (every m bits: the length-complexity sweep) and with running
# parities; MultiplicationCoT 2 x 2 and 3 x 3 digits: linear-ar and mlp-ar without CoT and
# with the long CoT (answer most or least significant digit first), held-out accuracy.
COT_PARITY = {"num_bits": 16, "subset_size": 8}
COT_PARITY_TRAIN = 4000
COT_STRIDES = (1, 2, 4, 8, 16)
COT_MULT_TRAIN_3X3 = 20_000


def _cot_parity(cot: str, stride: int) -> SweepConfig:
    kwargs = {**COT_PARITY, "cot": cot, "cot_stride": stride}
    horizon = parity_horizon(COT_PARITY["num_bits"], cot, stride)
    return SweepConfig("ntp_envs/ParityCoT-v0", kwargs, ("linear-ar",), (horizon,), seeds=2,
                       n_train=COT_PARITY_TRAIN)


def _cot_mult(num_digits: int, cot: str, agents: tuple[str, ...], answer_order: str = "msd",
              **config: Any) -> SweepConfig:
    kwargs = {"num_digits": num_digits, "cot": cot, "answer_order": answer_order}
    return SweepConfig("ntp_envs/MultiplicationCoT-v0", kwargs, agents,
                       (multiplication_horizon(num_digits, cot),), eval_samples=5000, **config)


PRESETS["cot"] = [
    _cot_parity("none", 1),
    *[_cot_parity(cot, stride) for cot in ("count", "xor") for stride in COT_STRIDES],
    _cot_mult(2, "none", ("linear-ar", "mlp-ar"), seeds=2, population=True),
    _cot_mult(2, "long", ("mlp-ar",), seeds=2, population=True),
    _cot_mult(2, "long", ("mlp-ar",), "lsd", seeds=2, population=True),
    _cot_mult(3, "none", ("linear-ar", "mlp-ar"), seeds=1, n_train=COT_MULT_TRAIN_3X3),
    _cot_mult(3, "long", ("mlp-ar",), "lsd", seeds=1, n_train=COT_MULT_TRAIN_3X3),
]


def preset_names() -> list[str]:
    """Names accepted by ``--preset``."""
    return list(PRESETS)
