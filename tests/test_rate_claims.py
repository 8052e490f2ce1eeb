"""The rate claims on real sweeps (population fits, exact scores) fail where they should: a
family with a fixed event_prob (a 1/rho ceiling) fails R3's exponent, a robust NTP with a
gamma floor (``robust-rho``'s grid stops at 1/(4096 H)) fails R8, and a learner blind to
delta fails R7's growth. Small grids (monkeypatched) keep them short."""

from __future__ import annotations

import pandas as pd
import pytest

from evaluation.bench.store import ResultStore
from evaluation.bench.sweep import SweepConfig, run_sweep
from evaluation.experiments import barrier

ENV = barrier.ENV


def sweep(tmp_path, grid: dict, agents: tuple[str, ...], horizons: tuple[int, ...]
          ) -> pd.DataFrame:
    config = SweepConfig(ENV, {}, agents, horizons, seeds=1, population=True,
                         env_grid={k: tuple(v) for k, v in grid.items()})
    with ResultStore(tmp_path / "r.sqlite") as store:
        return store.results(run_sweep(config, store, progress=False))


def relabel(rows: pd.DataFrame, old: str, new: str) -> pd.DataFrame:
    """``new``'s rows replaced by copies of ``old``'s (a mutated agent under the claim's
    name); ``old``'s rows stay."""
    copies = rows[rows["agent"] == old].assign(agent=new)
    return pd.concat([rows[rows["agent"] != new], copies], ignore_index=True)


@pytest.mark.slow
def test_r3_fails_on_a_fixed_event_prob_family_and_holds_when_it_scales(tmp_path,
                                                                        monkeypatch) -> None:
    horizons = (16, 64, 256, 1024)
    monkeypatch.setattr(barrier, "RATE_HORIZONS", horizons)
    biases = barrier.log_grid(1e-3, 0.25, 6)
    scaling = {"event_prob": (1e-5, 1e-7), "bias": biases}
    fixed = {"event_prob": (1e-3,), "bias": biases}
    rows = sweep(tmp_path, {"event_prob": (1e-3, 1e-5, 1e-7), "bias": biases},
                 barrier.NTP_STYLE, horizons)
    monkeypatch.setattr(barrier, "RATE_GRID", scaling)
    result = barrier.R3.evaluate(rows, "barrier")
    assert result.verdict == "holds", result
    monkeypatch.setattr(barrier, "RATE_GRID", fixed)
    capped = barrier.R3.evaluate(rows, "barrier")
    assert capped.verdict == "fails", capped
    assert capped.measured[0].value < barrier.MIN_NTP_EXPONENT  # logloss capped near 999


def test_r8_fails_for_a_gamma_floor(tmp_path, monkeypatch) -> None:
    grid = {"event_prob": (1e-9,), "bias": (1e-4, 3e-3, 0.02)}
    monkeypatch.setattr(barrier, "RATE_GRID", grid)
    rows = sweep(tmp_path, grid, ("robust", "robust-rho"), (barrier.R8_HORIZON,))
    assert barrier.R8.evaluate(rows, "barrier").verdict == "holds"
    floor = barrier.R8.evaluate(relabel(rows, "robust-rho", "robust"), "barrier")
    assert floor.verdict == "fails" and floor.measured[0].value > 100


def test_r7_fails_for_a_learner_blind_to_delta(tmp_path, monkeypatch) -> None:
    grid = {"min_prob": barrier.DELTA_GRID["min_prob"], "event_prob": (1e-3, 1e-5),
            "bias": (0.0107, 0.0516, 0.114)}
    monkeypatch.setattr(barrier, "DELTA_GRID", grid)
    monkeypatch.setattr(barrier, "DELTA_HORIZONS", (64,))
    rows = sweep(tmp_path, grid, ("logloss", "robust", "chunk-rho:1"), (64,))
    result = barrier.R7.evaluate(rows, "barrier")
    assert result.verdict == "holds", result
    blind = barrier.R7.evaluate(relabel(rows, "robust", "logloss"), "barrier")
    assert blind.verdict == "fails" and blind.measured[0].value < 1.1
    unbounded = barrier.R7.evaluate(relabel(rows, "logloss", "robust"), "barrier")
    assert unbounded.verdict == "fails"
