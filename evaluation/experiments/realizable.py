"""Well-specified vs misspecified LogLossBC on ARLinear: the error does not grow with H when
the expert is in the class (Foster, Block, Misra 2024), and does when it is not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.bench.analysis import growth_exponent, summarise
from evaluation.bench.sweep import SweepConfig
from evaluation.experiments.base import Experiment
from evaluation.experiments.claims import Claim, Measured, NotRun, mean_se, select_rows

ENV = "ntp_envs/ARLinear-v0"
WELL_SPECIFIED = {"misspecification": 0.0}
HORIZONS = (8, 16, 32, 64, 128, 256, 512)
SEEDS = 10
N_TRAIN = 2000
MAX_GROWTH = 0.25


def _check_r1(frame: pd.DataFrame) -> tuple[list[Measured], bool, str]:
    rows = select_rows(frame, ENV, "logloss", n_train=N_TRAIN, kwargs=WELL_SPECIFIED)
    summary = summarise(rows)
    slopes = growth_exponent(summary, "hellinger2_mean")
    if slopes.empty or not np.isfinite(slopes["slope"].iloc[0]):
        raise NotRun("fewer than two horizons of well-specified ARLinear logloss")
    measured = []
    for horizon in (summary["horizon"].min(), summary["horizon"].max()):
        at = rows[rows["horizon"] == horizon]
        measured.append(Measured(f"D_H^2 H={horizon}", *mean_se(at["hellinger2"])))
    slope, se = float(slopes["slope"].iloc[0]), float(slopes["slope_se"].iloc[0])
    measured.append(Measured(f"growth exponent over {int(slopes['horizons'].iloc[0])} horizons",
                             slope, se))
    return measured, slope <= MAX_GROWTH, ""


R1 = Claim(
    id="R1",
    title="Well-specified LogLossBC: D_H^2 does not grow with H",
    source="Foster, Block, Misra 2024 (arXiv 2407.15007), horizon-independent BC",
    quantity=f"D_H^2 of logloss on ARLinear (misspecification 0) from n = {N_TRAIN} "
             f"demonstrations, {SEEDS} seeds, H = {', '.join(map(str, HORIZONS))}",
    expected=f"growth exponent of D_H^2 in H (least squares, log-log) <= {MAX_GROWTH}",
    check=_check_r1,
)

_WELL = SweepConfig(ENV, dict(WELL_SPECIFIED), ("logloss",), HORIZONS, seeds=SEEDS,
                    n_train=N_TRAIN)
_MIS = {"misspecification": 0.5}

EXPERIMENT = Experiment(
    name="realizable",
    title="Well-specified vs misspecified LogLossBC on ARLinear",
    about="ARLinear-v0 (expert memory 3, learner memory 1): logloss from 2,000 demonstrations "
          "at knob 0 (well-specified: the expert is in the class) and, in the full profile, "
          "at knob 0.5 with population fits.",
    profiles={
        "cpu": [_WELL],
        "full": [
            _WELL,
            SweepConfig(ENV, _MIS, ("logloss",), (4, 8, 16, 32, 64, 128, 256), seeds=3,
                        n_train=N_TRAIN),
            SweepConfig(ENV, _MIS, ("logloss",), (4, 8, 16, 32, 64, 128, 256), seeds=1,
                        population=True),
        ],
    },
    claims=(R1,),
    rank=10,
)
