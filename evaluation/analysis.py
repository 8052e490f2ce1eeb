"""Analysis of sweep results: per-horizon summaries and growth exponents in H."""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["env_id", "env_kwargs", "agent", "n_train", "horizon"]


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over seeds of D_H^2 and C_apx per (env, agent, n_train, H)."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for key, group in ok.groupby(GROUP, sort=True):
        n = len(group)
        row = dict(zip(GROUP, key, strict=True))
        row["seeds"] = n
        for column in ("hellinger2", "c_apx", "kl", "best_in_class_hellinger2"):
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            row[f"{column}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{column}_se"] = (float(values.std(ddof=1) / np.sqrt(len(values)))
                                   if len(values) > 1 else 0.0 if len(values) else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def growth_exponent(summary: pd.DataFrame, column: str = "c_apx_mean") -> pd.DataFrame:
    """Least-squares slope of ``log column`` against ``log H`` per (env, agent, n_train).

    ``C ~ H^slope``; ``slope_se`` is the OLS standard error (NaN with fewer than 3 horizons).
    """
    rows = []
    for key, group in summary.groupby(GROUP[:-1], sort=True):
        good = group[np.isfinite(group[column]) & (group[column] > 0)]
        row = dict(zip(GROUP[:-1], key, strict=True))
        row.update(slope=np.nan, slope_se=np.nan, horizons=len(good))
        if len(good) >= 2:
            x = np.log(good["horizon"].to_numpy(float))
            y = np.log(good[column].to_numpy(float))
            slope, intercept = np.polyfit(x, y, 1)
            row["slope"] = float(slope)
            if len(good) >= 3:
                resid = y - (slope * x + intercept)
                row["slope_se"] = float(
                    np.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
                )
        rows.append(row)
    return pd.DataFrame(rows)
