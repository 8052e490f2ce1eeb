"""Claims: the closed form behind R2, and every claim's verdict on small synthetic results (a
claim that should fail fails; ``not run`` when its rows are missing or its jobs failed)."""

from __future__ import annotations

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


def test_r2_on_a_real_sweep(tmp_path, monkeypatch) -> None:
    """The sweep's exact population C_apx (oracle + LogLossBC) meets the closed form on every
    instance of a (smaller) MixtureProduct family."""
    grid = {"weight": (0.05, 0.3), "p0": (0.2,), "p1": (0.8,)}
    monkeypatch.setattr(barrier, "MIX_GRID", grid)
    monkeypatch.setattr(barrier, "MIX_HORIZONS", (16, 64, 1024))
    config = SweepConfig(MIX, {}, ("logloss",), (16, 64, 1024), seeds=1, population=True,
                         oracle_starts=4, env_grid={k: tuple(v) for k, v in grid.items()})
    with ResultStore(tmp_path / "r.sqlite") as store:
        rows = store.results(run_sweep(config, store, progress=False))
    result = barrier.R2.evaluate(rows, "barrier")
    assert result.verdict == "holds", result
    gap = result.measured[-1]
    assert gap.name == "largest relative gap to the closed form" and gap.value < 1e-6
    expected = [max(quick.mixture_ntp_c_apx(h, w, 0.2, 0.8)[0] for w in (0.05, 0.3))
                for h in (16, 64, 1024)]
    assert [m.value for m in result.measured[:3]] == pytest.approx(expected, rel=1e-6)


def family_rows_of(env_id: str, grid: dict, horizons, agents: dict) -> pd.DataFrame:
    """One row per instance of ``grid``, horizon and agent: ``agents[agent](kwargs, H)`` is
    its C_apx."""
    from evaluation.experiments.claims import grid_instances

    return frame([row(env_id, kwargs, agent, h, c_apx=value(kwargs, h))
                  for agent, value in agents.items() for h in horizons
                  for kwargs in grid_instances({}, grid)])


def closed_form_mix(kwargs: dict, h: int) -> float:
    return quick.mixture_ntp_c_apx(h, kwargs["weight"], kwargs["p0"], kwargs["p1"])[0]


def test_r2_verdicts(monkeypatch) -> None:
    grid = {"weight": (0.05, 0.2), "p0": (0.2,), "p1": (0.8,)}
    monkeypatch.setattr(barrier, "MIX_GRID", grid)
    monkeypatch.setattr(barrier, "MIX_HORIZONS", (16, 64, 1024))
    hs = (16, 64, 1024)
    good = family_rows_of(MIX, grid, hs, {"logloss": closed_form_mix})
    assert barrier.R2.evaluate(good, "barrier").verdict == "holds"
    off = family_rows_of(MIX, grid, hs, {"logloss": lambda kw, h: closed_form_mix(kw, h) * (
        1.01 if kw["weight"] == 0.2 and h == 64 else 1.0)})  # 1% off on one instance
    assert barrier.R2.evaluate(off, "barrier").verdict == "fails"
    capped = family_rows_of(MIX, grid, hs, {"logloss": lambda kw, h: 2.0})  # no growth
    monkeypatch.setattr(barrier, "RELATIVE_TOLERANCE", math.inf)
    result = barrier.R2.evaluate(capped, "barrier")
    assert result.verdict == "fails" and result.measured[3].value == pytest.approx(0.0)
    missing = barrier.R2.evaluate(good[good["horizon"] != 1024], "barrier")
    assert missing.verdict == "not run" and "H=1024" in missing.note


def barrier_profile(agent_scale: dict, horizons, grid=None) -> pd.DataFrame:
    """Rows of the RATE family: C_apx = ``agent_scale[agent](kwargs, H)``."""
    return family_rows_of(BARRIER, grid or barrier.RATE_GRID, horizons, agent_scale)


def hump_h(scale: float, power: float = 1.0):
    """C_apx profile peaking at bias 0.01 with peak ``scale * H^power``."""
    return lambda kw, h: 1.0 + (scale * h**power - 1.0) * math.exp(
        -abs(math.log(kw["bias"] / 0.01)))


def test_r3_verdicts() -> None:
    hs = barrier.RATE_HORIZONS
    good = {"logloss": hump_h(2.0), "robust": hump_h(1.0), "chunk-rho:1": hump_h(0.5)}
    result = barrier.R3.evaluate(barrier_profile(good, hs), "barrier")
    assert result.verdict == "holds", result
    worst = [max(hump_h(2.0)(kw, h) for kw in
                 ({"bias": b} for b in barrier.RATE_GRID["bias"])) for h in hs]
    assert result.measured[0].value == pytest.approx(np.polyfit(np.log(hs), np.log(worst), 1)[0])
    capped = {**good, "robust": lambda kw, h: min(hump_h(1.0)(kw, h), 100.0)}  # a 1/rho cap
    assert barrier.R3.evaluate(barrier_profile(capped, hs), "barrier").verdict == "fails"
    small = {**good, "chunk-rho:1": hump_h(0.2)}  # exponent 1 but worst 0.2 H < H/4
    assert barrier.R3.evaluate(barrier_profile(small, hs), "barrier").verdict == "fails"
    sqrt = {**good, "logloss": hump_h(8.0, 0.5)}  # >= H/4 up to H = 1024 but exponent 0.5
    assert barrier.R3.evaluate(barrier_profile(sqrt, hs), "barrier").verdict == "fails"


def test_r3b_verdicts() -> None:
    rate = barrier_profile({"rho": lambda kw, h: 1.2}, barrier.RATE_HORIZONS)
    mix = family_rows_of(MIX, barrier.MIX_GRID, barrier.MIX_RHO_HORIZONS,
                         {"rho": lambda kw, h: 1.0 + 3.0 * kw["weight"]})
    assert barrier.R3B.evaluate(pd.concat([rate, mix]), "barrier").verdict == "holds"
    bad = barrier_profile({"rho": lambda kw, h: 1.6 if kw["event_prob"] == 1e-9 else 1.0},
                          barrier.RATE_HORIZONS)
    assert barrier.R3B.evaluate(pd.concat([bad, mix]), "barrier").verdict == "fails"
    growing = family_rows_of(MIX, barrier.MIX_GRID, barrier.MIX_RHO_HORIZONS,
                             {"rho": lambda kw, h: (h / 64) ** 0.2})  # 3.3 at 4096: <= 6
    result = barrier.R3B.evaluate(pd.concat([rate, growing]), "barrier")
    assert result.verdict == "fails" and result.measured[2].value == pytest.approx(0.2)


def delta_rows(values: dict) -> pd.DataFrame:
    return family_rows_of(BARRIER, barrier.DELTA_GRID, barrier.DELTA_HORIZONS, values)


def test_r7_verdicts() -> None:
    def ntp(kw, h):  # proportional to ln(1/delta): 10x from 1e-30 to 1e-300
        return h * math.log(1 / kw["min_prob"]) * (1 + kw["bias"])

    def bounded(kw, h):
        return h * (1 + kw["bias"])

    good = {"logloss": ntp, "robust": bounded, "chunk-rho:1": bounded}
    result = barrier.R7.evaluate(delta_rows(good), "barrier")
    assert result.verdict == "holds", result
    assert result.measured[0].value == pytest.approx(10.0)
    drift = {**good, "robust": lambda kw, h: bounded(kw, h) * (
        1.2 if kw["min_prob"] == 1e-300 else 1.0)}
    assert barrier.R7.evaluate(delta_rows(drift), "barrier").verdict == "fails"
    fixed = {**good, "logloss": bounded}  # a learner that does not see delta
    assert barrier.R7.evaluate(delta_rows(fixed), "barrier").verdict == "fails"


def test_r8_verdicts() -> None:
    h = barrier.R8_HORIZON
    hs = (h,)
    fine = {"robust": lambda kw, hh: 5.0 * hh * (1 + math.log10(1 / kw["event_prob"])) / 10}
    assert barrier.R8.evaluate(barrier_profile(fine, hs), "barrier").verdict == "holds"
    floor = {"robust": lambda kw, hh: 1.0 + 4096 * hh * 1e-9 / kw["event_prob"] * 100}
    result = barrier.R8.evaluate(barrier_profile(floor, hs), "barrier")
    assert result.verdict == "fails" and "event_prob 1e-09" in result.note


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


# ------------------------------------------------------------------------------- R4a

def family_frame(values: dict[str, callable], horizon: int = 256) -> pd.DataFrame:
    """Rows of the R4a family: ``values[agent](bias)`` is the instance's C_apx."""
    family = family_json(BARRIER, dict(chunking.FAMILY_BASE),
                         {k: list(v) for k, v in chunking.FAMILY_GRID.items()})
    return frame([row(BARRIER, {**chunking.FAMILY_BASE, "bias": b}, agent, horizon,
                      c_apx=value(b), family=family)
                  for agent, value in values.items() for b in chunking.BIASES])


def hump(peak: float) -> callable:
    """A C_apx profile over the bias grid peaking at ``peak`` (at bias 0.01)."""
    return lambda b: 1.0 + (peak - 1.0) * math.exp(-abs(math.log(b / 0.01)))


def test_family_worst_is_the_max_over_instances() -> None:
    rows = family_frame({"logloss": hump(100.0)})
    worst, where, instances = family_worst(rows, BARRIER, "logloss", chunking.FAMILY_BASE,
                                           chunking.FAMILY_GRID, horizon=256)
    values = [hump(100.0)(b) for b in chunking.BIASES]
    assert worst == max(values) and where == {"bias": chunking.BIASES[int(np.argmax(values))]}
    assert instances == len(chunking.BIASES)
    with pytest.raises(NotRun, match="29 of 30"):
        family_worst(rows.iloc[1:], BARRIER, "logloss", chunking.FAMILY_BASE,
                     chunking.FAMILY_GRID, horizon=256)


def test_instances_worst_reads_rows_of_any_sweep_and_needs_every_instance() -> None:
    from evaluation.experiments.claims import grid_instances, instances_worst

    grid = {"event_prob": (1e-3, 1e-5), "bias": (0.01, 0.05)}  # 0.05: the default bias
    rows = family_rows_of(BARRIER, grid, (64,), {"logloss": lambda kw, h: kw["bias"] * 100 /
                                                 kw["event_prob"] ** 0.1})
    worst, where = instances_worst(rows, BARRIER, "logloss", grid_instances({}, grid),
                                   horizon=64)
    assert worst == pytest.approx(5.0 / 1e-5 ** 0.1) and where == {"event_prob": 1e-5,
                                                                   "bias": 0.05}
    with pytest.raises(NotRun, match="3 of 4"):
        instances_worst(rows.iloc[1:], BARRIER, "logloss", grid_instances({}, grid), horizon=64)


def test_r4a_verdicts() -> None:
    h = chunking.CLAIM_HORIZON
    good = {f"chunk-rho:{k}": hump(h / k) for k in chunking.CHUNK_SIZES}
    result = chunking.R4A.evaluate(family_frame(good), "chunking")
    assert result.verdict == "holds"
    expected = [max(hump(h / k)(b) for b in chunking.BIASES) * k / h
                for k in chunking.CHUNK_SIZES]
    assert [m.value for m in result.measured] == pytest.approx(expected)
    flat = chunking.R4A.evaluate(family_frame({**good, f"chunk-rho:{h}": hump(3.0)}),
                                 "chunking")
    assert flat.verdict == "fails"
    assert flat.measured[-1].value == pytest.approx(max(hump(3.0)(b) for b in chunking.BIASES))


def test_r4b_verdicts() -> None:
    def trade(constant: float):
        return lambda kw, h: 1.0 + (constant * h - 1.0) * kw["beta"]  # worst at beta 1

    def rows(ratio) -> pd.DataFrame:
        return pd.concat([family_rows_of(chunking.TIED, chunking.TIED_GRID,
                                         chunking.TIED_HORIZONS,
                                         {f"chunk-hellinger:{k}": trade(ratio(k) / k)})
                          for k in chunking.TIED_CHUNKS])

    good = chunking.R4B.evaluate(rows(lambda k: 0.8), "chunking")
    assert good.verdict == "holds", good
    assert good.measured[0].value == pytest.approx(0.8)
    no_trade = chunking.R4B.evaluate(rows(lambda k: 0.8 * k), "chunking")  # K buys nothing
    assert no_trade.verdict == "fails" and no_trade.measured[1].value == pytest.approx(12.8)
    too_good = chunking.R4B.evaluate(rows(lambda k: 0.1), "chunking")  # below 0.25 H / K
    assert too_good.verdict == "fails"


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
    assert sorted(c.id for c in claims) == ["R1", "R2", "R3", "R3b", "R4a", "R4b", "R5", "R6",
                                            "R7", "R8"]
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
