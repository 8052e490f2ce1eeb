"""Analysis of sweep results: per-horizon summaries, growth exponents in H, and the worst case
of C_apx over a family of instances.

Rows are grouped by every setting in their identity (:data:`evaluation.bench.store.SETTING_COLUMNS`
included), so rows computed with other settings are never pooled; rows of older stores,
where a setting is NULL, form their own groups.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd

from evaluation.bench.store import SETTING_COLUMNS, canonical_json
from ntp_envs import env_defaults

GROUP = ["env_id", "env_kwargs", "agent", "n_train", *SETTING_COLUMNS, "horizon"]
WORST_CASE_COLUMNS = ["env_id", "family", "agent", "horizon", "n_train", "instances",
                      "worst_c_apx", "worst_kwargs", "mean_c_apx", "growth_exponent",
                      "growth_exponent_se", "growth_horizons", *SETTING_COLUMNS]
CHUNK_AGENT = re.compile(r"^(chunk|chunk-rho|chunk-kr|chunk-hellinger):(\d+)$")


def with_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every setting column present (NULL where a row predates it)."""
    frame = frame.copy()
    for name in SETTING_COLUMNS:
        if name not in frame.columns:
            frame[name] = None
    return frame


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over seeds of D_H^2 and C_apx per (env, agent, n_train,
    settings, H), status ``ok`` rows only."""
    ok = with_settings(frame[frame["status"] == "ok"])
    rows = []
    for key, group in ok.groupby(GROUP, sort=True, dropna=False):
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


def loglog_slope(horizons: Any, values: Any) -> tuple[float, float, int]:
    """Least-squares slope of ``log values`` against ``log horizons`` over the finite positive
    values: ``(slope, standard error, points used)``; slope NaN with fewer than 2 distinct
    horizons, standard error NaN with fewer than 3 points (OLS, residual variance on n - 2)."""
    h = np.asarray(horizons, dtype=float)
    y = np.asarray(values, dtype=float)
    keep = np.isfinite(y) & (y > 0) & np.isfinite(h) & (h > 0)
    x, y = np.log(h[keep]), np.log(y[keep])
    n = int(keep.sum())
    if n < 2 or np.ptp(x) == 0:
        return np.nan, np.nan, n
    centred = x - x.mean()
    slope = float(centred @ (y - y.mean()) / (centred @ centred))
    if n < 3:
        return slope, np.nan, n
    resid = y - y.mean() - slope * centred
    return slope, float(np.sqrt(resid @ resid / (n - 2) / (centred @ centred))), n


def growth_exponent(summary: pd.DataFrame, column: str = "c_apx_mean") -> pd.DataFrame:
    """Least-squares slope of ``log column`` against ``log H`` per (env, agent, n_train).

    ``C ~ H^slope``; ``slope_se`` is the OLS standard error (NaN with fewer than 3 horizons).
    """
    rows = []
    for key, group in with_settings(summary).groupby(GROUP[:-1], sort=True, dropna=False):
        slope, se, n = loglog_slope(group["horizon"], group[column])
        rows.append({**dict(zip(GROUP[:-1], key, strict=True)), "slope": slope,
                     "slope_se": se, "horizons": n})
    return pd.DataFrame(rows)


def exponent_text(row: pd.Series) -> str:
    """A worst-case row's growth exponent in H as ``slope ± se (n H)``; ``-`` without one."""
    slope, se = row["growth_exponent"], row["growth_exponent_se"]
    if pd.isna(slope):
        return "-"
    spread = "" if pd.isna(se) else f" ± {se:.2g}"
    return f"{slope:.3f}{spread} ({int(row['growth_horizons'])} H)"


def chunk_size(agent: str) -> tuple[str, int] | None:
    """``(learner, K)`` for a chunk learner's name (``chunk:K``, ``chunk-rho:K``,
    ``chunk-kr:K``, ``chunk-hellinger:K``); None for any other agent."""
    found = CHUNK_AGENT.match(agent)
    return None if found is None else (found.group(1), int(found.group(2)))


def _equal(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def in_family(env_id: str, family: str, env_kwargs: str) -> bool:
    """Whether the instance ``env_kwargs`` (canonical JSON) belongs to ``family``
    (:func:`evaluation.bench.sweep.family_json`): its kwargs outside the grid are the family's, and
    each grid kwarg takes one of the grid's values (an absent kwarg its default)."""
    spec = json.loads(family)
    grid, base = spec["grid"], spec["kwargs"]
    kwargs = json.loads(env_kwargs)
    if {k: v for k, v in kwargs.items() if k not in grid} != base:
        return False
    defaults = env_defaults(env_id)
    return all(any(_equal(kwargs.get(k, defaults.get(k)), v) for v in values)
               for k, values in grid.items())


def _family(row: pd.Series) -> str:
    family = row.get("family")
    if isinstance(family, str) and family:
        return family
    return canonical_json({"grid": {}, "kwargs": json.loads(row["env_kwargs"])})


def worst_case(frame: pd.DataFrame) -> pd.DataFrame:
    """The worst case of C_apx over each family of instances swept (docs/theory.md).

    Per family (every instance of ``frame`` that belongs to it, whichever sweep stored it),
    agent, horizon, training-set size and settings: the seed mean of C_apx per instance
    (status ``ok`` rows with a finite C_apx), then ``worst_c_apx`` (their maximum, attained by
    ``worst_kwargs``), ``mean_c_apx`` and ``instances`` (how many were measured); and, per
    family, agent, training-set size and settings, the growth exponent of the worst case in H
    (:func:`loglog_slope` over the horizons swept: ``growth_exponent``, ``growth_exponent_se``,
    ``growth_horizons``). Columns :data:`WORST_CASE_COLUMNS`.
    """
    ok = with_settings(frame[frame["status"] == "ok"])
    ok = ok.assign(c_apx=pd.to_numeric(ok["c_apx"], errors="coerce"))
    ok = ok[np.isfinite(ok["c_apx"])]
    if ok.empty:
        return pd.DataFrame(columns=WORST_CASE_COLUMNS)
    families = ok[["env_id"]].assign(family=ok.apply(_family, axis=1)).drop_duplicates()
    per_instance = ok.groupby(["env_id", "env_kwargs", "agent", "horizon", "n_train",
                               *SETTING_COLUMNS], sort=True, dropna=False)["c_apx"].mean()
    per_instance = per_instance.reset_index()
    rows = []
    for env_id, family in families.itertuples(index=False):
        candidates = per_instance[per_instance["env_id"] == env_id]
        members = candidates[[in_family(env_id, family, k) for k in candidates["env_kwargs"]]]
        keys = ["agent", "horizon", "n_train", *SETTING_COLUMNS]
        for key, group in members.groupby(keys, sort=True, dropna=False):
            worst = group.loc[group["c_apx"].idxmax()]
            rows.append({"env_id": env_id, "family": family, **dict(zip(keys, key, strict=True)),
                         "instances": len(group), "worst_c_apx": float(worst["c_apx"]),
                         "worst_kwargs": worst["env_kwargs"],
                         "mean_c_apx": float(group["c_apx"].mean())})
    result = pd.DataFrame(rows, columns=WORST_CASE_COLUMNS)
    curve = ["env_id", "family", "agent", "n_train", *SETTING_COLUMNS]
    for _, group in result.groupby(curve, sort=False, dropna=False):
        slope, se, n = loglog_slope(group["horizon"], group["worst_c_apx"])
        result.loc[group.index, ["growth_exponent", "growth_exponent_se", "growth_horizons"]] = \
            [slope, se, n]
    result["growth_horizons"] = result["growth_horizons"].astype(int)
    return result.sort_values(["env_id", "family", "agent", "n_train", "horizon"],
                              kind="stable").reset_index(drop=True)
