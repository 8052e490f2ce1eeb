"""Claims: the closed form behind R2, and every claim's verdict on small synthetic results (a
claim that should fail fails; ``not run`` when its rows are missing or its jobs failed)."""

from __future__ import annotations

import functools
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from evaluation.bench.store import ResultStore, canonical_json
from evaluation.bench.sweep import SweepConfig, family_json, run_sweep
from evaluation.experiments import EXPERIMENTS, barrier, chunking, cot, pathstar, quick, realizable
from evaluation.experiments.claims import Claim, ClaimResult, Measured, NotRun, family_worst
from ntp_envs import canonical_env_kwargs

MIX = quick.ENV
BARRIER = barrier.ENV


def row(env_id: str, kwargs: dict, agent: str, horizon: int, **values) -> dict:
    """One result-store row as a sweep writes it (canonical kwargs; ``ok`` unless told)."""
    out = {"env_id": env_id, "env_kwargs": canonical_json(canonical_env_kwargs(env_id, kwargs)),
           "horizon": horizon, "agent": agent, "seed": 0, "n_train": 0, "status": "ok",
           "error": None, "hellinger2": math.nan, "hellinger2_stderr": 0.0, "c_apx": math.nan,
           "fit_seconds": 0.1, "answer_accuracy": math.nan, "answer_accuracy_stderr": 0.0,
           "task_metrics": None, "family": None, "best_in_class_hellinger2": math.nan,
           "kl": math.nan, "eval_samples": 100_000, "oracle_starts": 16, "agent_config": "{}"}
    out.update(values)
    return out


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------ R2's closed form

def brute_hellinger2(horizon: int, weight: float, p0: float, p1: float, q) -> np.ndarray:
    """D_H^2 for each ``q`` by enumerating all 2^H sequences (independent of the closed form's
    sum over counts)."""
    k = np.array(list(itertools.product((0, 1), repeat=horizon))).sum(axis=1)[:, None]
    q = np.atleast_1d(np.asarray(q, dtype=float))[None, :]
    mix = (1 - weight) * p0**k * (1 - p0) ** (horizon - k) + weight * p1**k * (1 - p1) ** (
        horizon - k)
    prod = q**k * (1 - q) ** (horizon - k)
    return ((np.sqrt(mix) - np.sqrt(prod)) ** 2).sum(axis=0)


@pytest.mark.parametrize("params", [(0.05, 0.2, 0.8), (0.1, 0.5, 0.9), (0.3, 0.1, 0.6)])
def test_closed_form_matches_enumeration(params) -> None:
    horizon = 10
    c_apx, fit, best = quick.mixture_ntp_c_apx(horizon, *params)
    weight, p0, p1 = params
    mean = (1 - weight) * p0 + weight * p1
    assert fit == pytest.approx(brute_hellinger2(horizon, *params, mean)[0], rel=1e-10)
    grid = np.linspace(1e-4, 1 - 1e-4, 20_001)  # brute force over q
    brute_best = float(brute_hellinger2(horizon, *params, grid).min())
    assert best == pytest.approx(brute_best, rel=1e-6)
    assert best <= brute_best + 1e-15  # golden section refines the grid's best point
    assert c_apx == pytest.approx(fit / best)


def test_r2_on_a_real_sweep(tmp_path) -> None:
    """The sweep's exact population C_apx (oracle + LogLossBC) meets the closed form."""
    config = SweepConfig(MIX, dict(quick.MIXTURE), ("logloss",), quick.CHECKED_HORIZONS, seeds=1,
                         population=True, oracle_starts=4)
    with ResultStore(tmp_path / "r.sqlite") as store:
        rows = store.results(run_sweep(config, store, progress=False))
    result = quick.R2.evaluate(rows, "quick")
    assert result.verdict == "holds", result
    assert [m.name for m in result.measured][:4] == ["C_apx H=64", "closed form H=64",
                                                     "C_apx H=1024", "closed form H=1024"]


@functools.cache
def closed_form(horizon: int) -> float:
    return quick.mixture_ntp_c_apx(horizon, **quick.MIXTURE)[0]


def r2_rows(scale: float = 1.0, growth: bool = True) -> pd.DataFrame:
    rows = []
    for h in quick.HORIZONS:
        value = closed_form(h) if growth else 2.0
        if h == 64:
            value *= scale
        rows.append(row(MIX, quick.MIXTURE, "logloss", h, c_apx=value))
    return frame(rows)


def test_r2_verdicts() -> None:
    assert quick.R2.evaluate(r2_rows(), "quick").verdict == "holds"
    off = quick.R2.evaluate(r2_rows(scale=1.01), "quick")  # 1% off the closed form
    assert off.verdict == "fails" and off.measured[0].value != off.measured[1].value
    assert quick.R2.evaluate(r2_rows(growth=False), "quick").verdict == "fails"
    missing = quick.R2.evaluate(r2_rows()[lambda f: f["horizon"] != 1024], "quick")
    assert missing.verdict == "not run" and "H=1024" in missing.note
    broken = r2_rows()
    broken.loc[broken["horizon"] == 64, ["status", "error"]] = ["failed", "fit: boom\ntrace"]
    failed = quick.R2.evaluate(broken, "quick")
    assert failed.verdict == "not run" and "1 failed job(s)" in failed.note and "boom" in \
        failed.note


# ------------------------------------------------------------------------------- R1

def test_r1_verdicts() -> None:
    def rows(exponent: float) -> pd.DataFrame:
        rng = np.random.default_rng(0)
        return frame([row(realizable.ENV, realizable.WELL_SPECIFIED, "logloss", h, seed=s,
                          n_train=realizable.N_TRAIN,
                          hellinger2=1e-3 * h**exponent * (1 + 0.05 * rng.standard_normal()))
                      for h in realizable.HORIZONS for s in range(3)])

    flat = realizable.R1.evaluate(rows(0.0), "realizable")
    assert flat.verdict == "holds" and abs(flat.measured[-1].value) < 0.1
    growing = realizable.R1.evaluate(rows(0.5), "realizable")
    assert growing.verdict == "fails" and growing.measured[-1].value == pytest.approx(0.5,
                                                                                    abs=0.05)
    other_n = rows(0.0).assign(n_train=500)  # rows at another training size do not count
    assert realizable.R1.evaluate(other_n, "realizable").verdict == "not run"


# ------------------------------------------------------------------------- R3 and R4

def family_frame(values: dict[str, callable], horizon: int = 256) -> pd.DataFrame:
    """Rows of the barrier family: ``values[agent](bias)`` is the instance's C_apx."""
    family = family_json(BARRIER, dict(barrier.FAMILY_BASE),
                         {k: list(v) for k, v in barrier.FAMILY_GRID.items()})
    return frame([row(BARRIER, {**barrier.FAMILY_BASE, "bias": b}, agent, horizon,
                      c_apx=value(b), family=family)
                  for agent, value in values.items() for b in barrier.BIASES])


def hump(peak: float) -> callable:
    """A C_apx profile over the bias grid peaking at ``peak`` (at bias 0.01)."""
    return lambda b: 1.0 + (peak - 1.0) * math.exp(-abs(math.log(b / 0.01)))


def test_family_worst_is_the_max_over_instances() -> None:
    rows = family_frame({"logloss": hump(100.0)})
    worst, where, instances = family_worst(rows, BARRIER, "logloss", barrier.FAMILY_BASE,
                                           barrier.FAMILY_GRID, horizon=256)
    values = [hump(100.0)(b) for b in barrier.BIASES]
    assert worst == max(values) and where == {"bias": barrier.BIASES[int(np.argmax(values))]}
    assert instances == len(barrier.BIASES)
    with pytest.raises(NotRun, match="29 of 30"):
        family_worst(rows.iloc[1:], BARRIER, "logloss", barrier.FAMILY_BASE,
                     barrier.FAMILY_GRID, horizon=256)


def test_r3_verdicts() -> None:
    good = {"logloss": hump(200.0), "robust": hump(150.0), "chunk-rho:1": hump(120.0),
            "rho": hump(1.2)}
    assert barrier.R3.evaluate(family_frame(good), "barrier").verdict == "holds"
    bad_rho = barrier.R3.evaluate(family_frame({**good, "rho": hump(3.0)}), "barrier")
    assert bad_rho.verdict == "fails"
    weak = barrier.R3.evaluate(family_frame({**good, "robust": hump(20.0)}), "barrier")
    assert weak.verdict == "fails"  # 20 < H/4 = 64
    missing = barrier.R3.evaluate(family_frame({k: v for k, v in good.items()
                                                if k != "chunk-rho:1"}), "barrier")
    assert missing.verdict == "not run" and "chunk-rho:1" in missing.note


def test_r4_verdicts() -> None:
    h = chunking.CLAIM_HORIZON
    good = {f"chunk-rho:{k}": hump(h / k) for k in chunking.CHUNK_SIZES}
    result = chunking.R4.evaluate(family_frame(good), "chunking")
    assert result.verdict == "holds"
    expected = [max(hump(h / k)(b) for b in barrier.BIASES) * k / h for k in chunking.CHUNK_SIZES]
    assert [m.value for m in result.measured] == pytest.approx(expected)
    flat = chunking.R4.evaluate(family_frame({**good, f"chunk-rho:{h}": hump(3.0)}), "chunking")
    assert flat.verdict == "fails"
    assert flat.measured[-1].value == pytest.approx(max(hump(3.0)(b) for b in barrier.BIASES))


# ------------------------------------------------------------------------- R5 and R6

def pathstar_rows(tf_decision: float, tf_later: float, reverse_exact: float,
                  teacherless: bool = True) -> pd.DataFrame:
    def metrics(exact: float, decision: float, later: float) -> str:
        return json.dumps({"degree": 2, "num_prompts": 4000, "exact_path_accuracy": exact,
                           "exact_path_accuracy_stderr": 0.005, "decision_accuracy": decision,
                           "decision_accuracy_stderr": 0.008, "later_tf_accuracy": later})

    kw = pathstar.PATHSTAR
    rows = [row(pathstar.ENV_ID, kw, "gpt-tf", 4, n_train=100,
                task_metrics=metrics(tf_decision, tf_decision, tf_later)),
            row(pathstar.ENV_ID, {**kw, "target_order": "reverse"}, "gpt-reverse", 4,
                n_train=100, task_metrics=metrics(reverse_exact, 1.0, 1.0))]
    if teacherless:
        rows.append(row(pathstar.ENV_ID, kw, pathstar.budget_agent("teacherless", 10), 4,
                        n_train=100, task_metrics=metrics(0.02, 0.25, 0.6)))
    return frame(rows)


def test_r5_verdicts() -> None:
    result = pathstar.R5.evaluate(pathstar_rows(0.49, 1.0, 0.99), "pathstar")
    assert result.verdict == "holds"
    assert [m.name for m in result.measured][-1] == "teacherless exact path"
    assert result.measured[0] == Measured("tf decision (teacher-forced)", 0.49, 0.008)
    assert pathstar.R5.evaluate(pathstar_rows(0.9, 1.0, 0.99), "p").verdict == "fails"
    assert pathstar.R5.evaluate(pathstar_rows(0.5, 0.6, 0.99), "p").verdict == "fails"
    assert pathstar.R5.evaluate(pathstar_rows(0.5, 1.0, 0.7), "p").verdict == "fails"
    alone = pathstar.R5.evaluate(pathstar_rows(0.5, 1.0, 0.99, teacherless=False), "p")
    assert alone.verdict == "holds" and "gpt-teacherless not run" in alone.note
    no_reverse = pathstar_rows(0.5, 1.0, 0.99).iloc[[0, 2]]
    assert pathstar.R5.evaluate(no_reverse, "p").verdict == "not run"


def cot_rows(count: float, none: float, mult: float) -> pd.DataFrame:
    parity = cot.PARITY
    return frame([
        row(parity, {**cot.COT_PARITY, "cot": "count", "cot_stride": 1}, "linear-ar", 33,
            n_train=4000, answer_accuracy=count),
        row(parity, {**cot.COT_PARITY, "cot": "none", "cot_stride": 1}, "linear-ar", 1,
            n_train=4000, answer_accuracy=none),
        row(cot.MULT, {"num_digits": 2, "cot": "long", "answer_order": "lsd"}, "mlp-ar", 78,
            answer_accuracy=mult, answer_accuracy_stderr=0.004),
    ])


def test_r6_verdicts() -> None:
    result = cot.R6.evaluate(cot_rows(0.997, 0.5, 0.97), "cot")
    assert result.verdict == "holds" and result.measured[2].stderr == 0.004
    assert cot.R6.evaluate(cot_rows(0.9, 0.5, 0.97), "cot").verdict == "fails"
    assert cot.R6.evaluate(cot_rows(0.997, 0.6, 0.97), "cot").verdict == "fails"
    assert cot.R6.evaluate(cot_rows(0.997, 0.5, 0.5), "cot").verdict == "fails"
    assert cot.R6.evaluate(cot_rows(0.997, 0.5, 0.97).iloc[:2], "cot").verdict == "not run"


# ------------------------------------------------------------------------------ shared

def test_every_registered_claim_is_not_run_without_rows_and_ids_are_unique() -> None:
    claims = [c for e in EXPERIMENTS.values() for c in e.claims]
    assert sorted(c.id for c in claims) == ["R1", "R2", "R3", "R4", "R5", "R6"]
    empty = frame([row(MIX, {}, "logloss", 8)]).iloc[:0]
    for claim in claims:
        assert claim.evaluate(empty, "x").verdict == "not run"
        skipped = claim.evaluate(None, "x", "not in profile gpu")
        assert skipped.verdict == "not run" and skipped.note == "not in profile gpu"


def test_claim_result_round_trips_through_json() -> None:
    claim = Claim("R9", "t", "s", "q", "e",
                  lambda f: ([Measured("a", 1.5, math.nan), Measured("b", 2.0, 0.1)], False, "n"))
    result = claim.evaluate(frame([]), "exp")
    assert result.verdict == "fails"
    again = ClaimResult.from_dict(json.loads(json.dumps(result.as_dict())))
    assert again.measured[1] == result.measured[1] and math.isnan(again.measured[0].stderr)
    with pytest.raises(ValueError, match="verdict must be one of"):
        ClaimResult.from_dict({**result.as_dict(), "verdict": "maybe"})
