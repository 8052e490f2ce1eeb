"""Claims as data: what a paper says, what the suite measures, and whether it holds.

A :class:`Claim` names its source, the quantity it measures and the expected condition; its
``check`` reads the result rows of the experiment that owns it (a frame of result-store rows,
failed ones included) and returns the measured values with their standard errors and
whether the condition holds. :meth:`Claim.evaluate` turns that into a :class:`ClaimResult`
with a verdict: ``holds``, ``fails``, or ``not run`` (with why: the experiment was not in
the profile, an agent is not registered, a job failed, rows are missing).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from evaluation.bench.analysis import worst_case
from evaluation.bench.sweep import family_json
from ntp_envs import canonical_env_kwargs, env_defaults

__all__ = ["VERDICTS", "Claim", "ClaimResult", "Measured", "NotRun", "family_rows",
           "family_worst", "full_kwargs", "grid_instances", "instances_worst", "mean_se",
           "select_rows"]

Verdict = Literal["holds", "fails", "not run"]
VERDICTS: tuple[Verdict, ...] = ("holds", "fails", "not run")


class NotRun(Exception):
    """Raised by a claim's check when the rows it needs are not there (the message says why)."""


@dataclass(frozen=True)
class Measured:
    """One measured value: ``stderr`` 0 when exact, NaN when not estimated."""

    name: str
    value: float
    stderr: float = 0.0

    def text(self) -> str:
        """``name value ± se`` with 4 significant digits (``exact`` values without ``±``)."""
        if not math.isfinite(self.value):
            return f"{self.name} {self.value}"
        spread = f" ± {self.stderr:.2g}" if math.isfinite(self.stderr) and self.stderr > 0 else ""
        return f"{self.name} {self.value:.4g}{spread}"


@dataclass(frozen=True)
class ClaimResult:
    """A claim's verdict with what was measured (JSON-able through :meth:`as_dict`)."""

    claim: str
    experiment: str
    title: str
    source: str
    quantity: str
    expected: str
    verdict: Verdict
    measured: tuple[Measured, ...] = ()
    note: str = ""
    gated: bool = True

    def verdict_text(self) -> str:
        """The verdict, with ``(reported, not gated)`` for a claim that cannot fail a run."""
        return self.verdict if self.gated else f"{self.verdict} (reported, not gated)"

    def measured_text(self) -> str:
        """The measured values in one line (``-`` when none)."""
        return "; ".join(m.text() for m in self.measured) or "-"

    def as_dict(self) -> dict[str, Any]:
        """Plain values (``measured`` as a list of dicts; NaN as ``None``)."""
        out = asdict(self)
        out["measured"] = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                            for k, v in m.items()} for m in out["measured"]]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClaimResult:
        """Inverse of :meth:`as_dict` (ValueError on an unknown verdict)."""
        if values["verdict"] not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {values['verdict']!r}")
        measured = tuple(Measured(m["name"], math.nan if m["value"] is None else m["value"],
                                  math.nan if m["stderr"] is None else m["stderr"])
                         for m in values.get("measured", ()))
        return cls(**{**dict(values), "measured": measured})


Check = Callable[[pd.DataFrame], tuple[list[Measured], bool, str]]


@dataclass(frozen=True)
class Claim:
    """A checkable statement: ``check(rows) -> (measured, holds, note)``, or ``NotRun``.
    ``gated`` False: the verdict is reported but a failure does not fail the run (a finding
    whose expectation is open, e.g. R4b)."""

    id: str
    title: str
    source: str
    quantity: str
    expected: str
    check: Check = field(repr=False, compare=False)
    gated: bool = True

    def evaluate(self, frame: pd.DataFrame | None, experiment: str,
                 not_run: str = "") -> ClaimResult:
        """The verdict on ``frame`` (the owning experiment's rows); ``not run`` with
        ``not_run`` as the reason when ``frame`` is None."""
        base = dict(claim=self.id, experiment=experiment, title=self.title, source=self.source,
                    quantity=self.quantity, expected=self.expected, gated=self.gated)
        if frame is None:
            return ClaimResult(**base, verdict="not run", note=not_run or "experiment not run")
        try:
            measured, holds, note = self.check(frame)
        except NotRun as reason:
            return ClaimResult(**base, verdict="not run", note=str(reason))
        return ClaimResult(**base, verdict="holds" if holds else "fails",
                           measured=tuple(measured), note=note)


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the finite values (se 0 for one value; NaN for none)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not arr.size:
        return math.nan, math.nan
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), se


def full_kwargs(env_id: str, env_kwargs: str) -> dict[str, Any]:
    """A row's env kwargs (stored without defaults) with the env's defaults filled in."""
    defaults = env_defaults(env_id)
    defaults.pop("horizon", None)
    return {**defaults, **json.loads(env_kwargs)}


def _matches(env_id: str, env_kwargs: str, wanted: Mapping[str, Any], exact: bool) -> bool:
    kwargs = full_kwargs(env_id, env_kwargs)
    if exact:
        return canonical_env_kwargs(env_id, kwargs) == canonical_env_kwargs(env_id, dict(wanted))
    return all(kwargs.get(k) == v for k, v in wanted.items())


def select_rows(frame: pd.DataFrame, env_id: str, agent: str, *, horizon: int | None = None,
                n_train: int | None = None, kwargs: Mapping[str, Any] | None = None,
                exact_kwargs: bool = False) -> pd.DataFrame:
    """The ``ok`` rows of one setting: env, agent, horizon and training size where given, and
    env kwargs containing ``kwargs`` (equal to them with ``exact_kwargs``). ``NotRun`` when
    there are none, naming the failed jobs' first error line if there are some."""
    rows = frame[(frame["env_id"] == env_id) & (frame["agent"] == agent)]
    if horizon is not None:
        rows = rows[rows["horizon"] == horizon]
    if n_train is not None:
        rows = rows[rows["n_train"] == n_train]
    if kwargs is not None:
        keep = [_matches(env_id, k, kwargs, exact_kwargs) for k in rows["env_kwargs"]]
        rows = rows[np.asarray(keep, dtype=bool)] if len(rows) else rows
    ok = rows[rows["status"] == "ok"]
    where = (f"{env_id.removeprefix('ntp_envs/')} {agent}"
             + ("" if horizon is None else f" H={horizon}")
             + ("" if n_train is None else f" n_train={n_train}")
             + ("" if not kwargs else f" {json.dumps(dict(kwargs), sort_keys=True)}"))
    if ok.empty:
        failed = rows[rows["status"] != "ok"]
        if not failed.empty:
            first = str(failed["error"].iloc[0] or "").splitlines()[:1]
            raise NotRun(f"{len(failed)} failed job(s) for {where}: {''.join(first)}")
        raise NotRun(f"no rows for {where}")
    return ok


def family_rows(frame: pd.DataFrame, env_id: str, base: Mapping[str, Any],
                grid: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """:func:`evaluation.bench.analysis.worst_case` of ``frame`` restricted to the family ``base`` x
    ``grid`` (one row per agent, horizon, training size and settings)."""
    table = worst_case(frame)
    family = family_json(env_id, dict(base), {k: list(v) for k, v in grid.items()})
    return table[(table["env_id"] == env_id) & (table["family"] == family)]


def family_worst(frame: pd.DataFrame, env_id: str, agent: str, base: Mapping[str, Any],
                 grid: Mapping[str, Sequence[Any]], *, horizon: int, n_train: int = 0
                 ) -> tuple[float, dict[str, Any], int]:
    """Worst case of C_apx over the instances ``base`` x ``grid``: ``(max over instances of the
    seed-mean C_apx, the grid values attaining it, instances)``. ``NotRun`` unless every
    instance has an ``ok`` row with a finite C_apx."""
    expected = math.prod(len(list(values)) for values in grid.values())
    rows = frame[(frame["agent"] == agent) & (frame["horizon"] == horizon) &
                 (frame["n_train"] == n_train)]
    table = family_rows(rows, env_id, base, grid)
    found = int(table["instances"].max()) if len(table) else 0
    if found < expected:
        failed = rows[(rows["status"] != "ok") & (rows["env_id"] == env_id)]
        why = "" if failed.empty else \
            f" ({len(failed)} failed: {str(failed['error'].iloc[0] or '').splitlines()[:1]})"
        raise NotRun(f"{env_id.removeprefix('ntp_envs/')} {agent} H={horizon}: {found} of "
                     f"{expected} family instances have a C_apx{why}")
    row = table.loc[table["instances"].idxmax()]
    where = full_kwargs(env_id, row["worst_kwargs"])
    return float(row["worst_c_apx"]), {k: where[k] for k in grid}, found


def grid_instances(base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]
                   ) -> list[dict[str, Any]]:
    """The instances ``base`` x the cartesian product of ``grid`` as kwargs dicts."""
    keys = list(grid)
    return [{**dict(base), **dict(zip(keys, combo, strict=True))}
            for combo in itertools.product(*(list(grid[k]) for k in keys))]


def instances_worst(frame: pd.DataFrame, env_id: str, agent: str,
                    instances: Sequence[Mapping[str, Any]], *, horizon: int,
                    n_train: int = 0) -> tuple[float, dict[str, Any]]:
    """Worst case of C_apx over ``instances`` (kwargs of ``env_id``, defaults filled in; rows
    from any sweep that stored them): ``(max over instances of the seed-mean C_apx, the
    instance attaining it)``. ``NotRun`` unless every instance has a finite C_apx."""
    rows = frame[(frame["env_id"] == env_id) & (frame["agent"] == agent) &
                 (frame["horizon"] == horizon) & (frame["n_train"] == n_train) &
                 (frame["status"] == "ok")]
    rows = rows.assign(c_apx=pd.to_numeric(rows["c_apx"], errors="coerce"))
    per_instance = rows[np.isfinite(rows["c_apx"])].groupby("env_kwargs")["c_apx"].mean()
    def key(kwargs: Mapping[str, Any]) -> str:
        return json.dumps(canonical_env_kwargs(env_id, dict(kwargs)), sort_keys=True)

    by_key = {key(json.loads(k)): v for k, v in per_instance.items()}
    values = [by_key.get(key(kw)) for kw in instances]
    found = sum(v is not None for v in values)
    if found < len(instances):
        failed = frame[(frame["env_id"] == env_id) & (frame["agent"] == agent) &
                       (frame["horizon"] == horizon) & (frame["status"] != "ok")]
        why = "" if failed.empty else \
            f" ({len(failed)} failed: {str(failed['error'].iloc[0] or '').splitlines()[:1]})"
        raise NotRun(f"{env_id.removeprefix('ntp_envs/')} {agent} H={horizon}: {found} of "
                     f"{len(instances)} instances have a C_apx{why}")
    i = int(np.argmax(values))
    return float(values[i]), dict(instances[i])
