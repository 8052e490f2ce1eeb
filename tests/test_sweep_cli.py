"""``ntp-bench sweep``: outputs, resumability and bad flags."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pandas as pd
import pytest
from brute_force import enumerated_divergences

from agents import LogLossBC
from evaluation.bench.store import ResultStore
from evaluation.cli import main
from experts import collect_demonstrations
from ntp_envs import make_task

REQUIRED = ["env_id", "env_kwargs", "horizon", "agent", "seed", "n_train", "hellinger2",
            "hellinger2_stderr", "kl", "tv", "best_in_class_hellinger2", "c_apx",
            "eval_method", "fit_seconds", "eval_seconds"]
SMALL = ["sweep", "--env", "ntp_envs/ARLinear-v0", "--env-kwargs", '{"misspecification": 0.5}',
         "--agents", "logloss", "--horizons", "4,16", "--seeds", "2", "--n-train", "200",
         "--oracle-starts", "4", "--quiet"]


def _refit_and_enumerate(horizon: int, seed: int) -> dict[str, float]:
    """SMALL's job ``(horizon, seed)`` redone here (the same demonstrations and fit), scored
    by summing over every sequence."""
    task = make_task("ntp_envs/ARLinear-v0", misspecification=0.5, horizon=horizon)
    rng = np.random.default_rng([seed, horizon])
    policy = LogLossBC().fit(task, collect_demonstrations(task, 200, rng), rng)
    return enumerated_divergences(task.expert, policy, task.prompts)


def test_sweep_writes_store_csv_and_plot(tmp_path) -> None:
    out = tmp_path / "demo"
    assert main([*SMALL, "--out", str(out)]) == 0
    frame = pd.read_csv(out / "results.csv")
    assert set(REQUIRED) <= set(frame.columns)
    assert len(frame) == 4  # 2 horizons x 1 agent x 2 seeds
    assert (frame["status"] == "ok").all()
    # each row is the refit of its seed's demonstrations, scored by summing over every sequence
    for row in frame.itertuples():
        truth = _refit_and_enumerate(row.horizon, row.seed)
        assert row.hellinger2 == pytest.approx(truth["hellinger2"], rel=1e-9, abs=1e-13)
        assert row.kl == pytest.approx(truth["kl"], rel=1e-9, abs=1e-13)
        if row.horizon == 4:
            assert row.tv == pytest.approx(truth["tv"], rel=1e-9, abs=1e-13)
    np.testing.assert_allclose(frame["c_apx"],
                               frame["hellinger2"] / frame["best_in_class_hellinger2"])
    assert (frame["c_apx"] >= 1 - 1e-9).all()  # the oracle is below every in-class fit
    # exact methods: enumeration (gives TV) at H=4, finite-state DP at H=16
    assert frame.set_index("horizon")["eval_method"].to_dict() == {4: "enumerate", 16: "dp"}
    assert frame.loc[frame["horizon"] == 4, "tv"].notna().all()
    assert (frame["hellinger2_stderr"] == 0).all()
    assert (out / "divergence_vs_horizon.png").stat().st_size > 10_000
    with ResultStore(out / "results.sqlite") as store:
        assert len(store.results()) == 4


def test_rerun_skips_finished_jobs(tmp_path, monkeypatch) -> None:
    fits: list[int] = []
    original_fit = LogLossBC.fit

    def counting_fit(self, task, demonstrations, rng):  # noqa: ANN001, ANN202
        fits.append(task.horizon)
        return original_fit(self, task, demonstrations, rng)

    monkeypatch.setattr(LogLossBC, "fit", counting_fit)  # seen by the in-process backend
    serial = [*SMALL, "--backend", "serial"]
    out = tmp_path / "demo"
    assert main([*serial, "--out", str(out)]) == 0
    assert sorted(fits) == [4, 4, 16, 16]
    first = pd.read_csv(out / "results.csv")
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("DELETE FROM results WHERE horizon = 16 AND seed = 1")
    fits.clear()
    assert main([*serial, "--out", str(out)]) == 0
    assert fits == [16]  # only the deleted job was fitted again
    second = pd.read_csv(out / "results.csv")
    assert len(second) == 4
    # the kept rows are the stored ones, timings included; the deleted job was recomputed
    # identically (same seeds), all but its timings
    redone = (second["horizon"] == 16) & (second["seed"] == 1)
    assert redone.sum() == 1
    pd.testing.assert_frame_equal(first[~redone], second[~redone])
    columns = [c for c in second.columns if not c.endswith("seconds")]
    pd.testing.assert_frame_equal(first.loc[redone, columns], second.loc[redone, columns])


def test_population_fit(tmp_path) -> None:
    out = tmp_path / "pop"
    argv = [a for a in SMALL if a not in ("--n-train", "200")]
    assert main([*argv, "--population", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "results.csv")
    assert (frame["n_train"] == 0).all()
    # population fits do not depend on the seed
    assert frame.groupby("horizon")["hellinger2"].nunique().eq(1).all()


@pytest.mark.parametrize("argv, message", [
    (["--env", "ntp_envs/Nope-v0"], "--env"),
    (["--env", "ntp_envs/ARLinear-v0", "--agents", "nope"], "unknown agent"),
    (["--env", "ntp_envs/ARLinear-v0", "--horizons", ","], "at least one horizon"),
    (["--env", "ntp_envs/ARLinear-v0", "--horizons", "4,0"], "H >= 1"),
    (["--env", "ntp_envs/ARLinear-v0", "--env-kwargs", "{bad json"], "JSON object"),
    (["--env", "ntp_envs/ARLinear-v0", "--env-kwargs", "[1]"], "JSON object"),
    (["--env", "ntp_envs/ARLinear-v0", "--env-kwargs", '{"misspecification": 2}'],
     "misspecification"),
    (["--env", "ntp_envs/ARLinear-v0", "--env-kwargs", '{"foo": 1}'], "foo"),
    (["--env", "ntp_envs/ARLinear-v0", "--seeds", "0"], "--seeds"),
    (["--env", "ntp_envs/ARLinear-v0", "--env-kwargs", '{"horizon": 8}', "--horizons", "4,8"],
     "--env-kwargs sets horizon 8 but --horizons lists 4,8"),
    (["--env", "ntp_envs/ARLinear-v0", "--env-kwargs", '{"horizon": 0}'],
     "--env-kwargs horizon must be a positive integer, got 0"),
    (["--preset", "nope"], "--preset must be one of"),
    (["--env", "ntp_envs/ARLinear-v0", "--device", "toaster"], "--device must name a torch"),
])
def test_bad_flags_exit_nonzero_and_write_nothing(tmp_path, capsys, argv, message) -> None:
    out = tmp_path / "never"
    assert main(["sweep", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_horizon_in_env_kwargs_is_the_sweeps_horizon(tmp_path) -> None:
    """``--env-kwargs '{"horizon": 4}'`` (as gymnasium.make takes it) sweeps H = 4, alone or
    with ``--horizons 4``: the same rows as ``--horizons 4`` (refitted and enumerated here)."""
    argv = ["sweep", "--env", "ntp_envs/ARLinear-v0", "--env-kwargs",
            '{"misspecification": 0.5, "horizon": 4}', "--agents", "logloss", "--seeds", "2",
            "--n-train", "200", "--oracle-starts", "4", "--quiet"]
    for extra in ([], ["--horizons", "4"]):
        out = tmp_path / f"h{len(extra)}"
        assert main([*argv, *extra, "--out", str(out)]) == 0
        frame = pd.read_csv(out / "results.csv")
        assert sorted(frame["horizon"]) == [4, 4]  # 2 seeds
        for row in frame.itertuples():
            assert row.hellinger2 == pytest.approx(
                _refit_and_enumerate(4, row.seed)["hellinger2"], rel=1e-9, abs=1e-13)


DEVICE_PROBE = '''
import os

from agents.base import DEVICE_ENV
from agents.logloss_bc import LogLossBC


class DeviceProbe(LogLossBC):
    """LogLossBC that records, in its policy's info, the device variable and process it saw."""

    def fit(self, task, demonstrations, rng=None):
        policy = super().fit(task, demonstrations, rng)
        policy.info.update(device_seen=os.environ.get(DEVICE_ENV), pid=os.getpid())
        return policy
'''


def test_device_flag_reaches_the_workers_environment(tmp_path, monkeypatch, capsys) -> None:
    from agents.base import DEVICE_ENV

    monkeypatch.setenv(DEVICE_ENV, "unset")  # restored after the test (the CLI sets it)
    monkeypatch.delenv(DEVICE_ENV)
    probe = tmp_path / "device_probe.py"
    probe.write_text(DEVICE_PROBE)
    argv = [a if a != "logloss" else f"{probe}:DeviceProbe" for a in SMALL]
    assert main([*argv, "--horizons", "4", "--seeds", "2", "--workers", "2", "--device", " cpu ",
                 "--out", str(tmp_path / "dev")]) == 0
    assert "growth exponent" not in capsys.readouterr().out  # one horizon: no slope to print
    with ResultStore(tmp_path / "dev" / "results.sqlite") as store:
        infos = [json.loads(info) for info in store.results()["agent_info"]]
    assert len(infos) == 2
    for info in infos:  # what each fit saw, in a worker process of the pool
        assert info["pid"] != os.getpid()
        assert info["device_seen"] == "cpu"


def test_growth_exponent_is_printed_for_several_horizons(tmp_path, capsys) -> None:
    assert main([*SMALL, "--seeds", "1", "--out", str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out
    assert "growth exponent of C_apx in H" in out and "nan" not in out


def test_corrupt_store_is_a_clear_error(tmp_path, capsys) -> None:
    out = tmp_path / "bad"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"this is not sqlite" * 100)
    assert main([*SMALL, "--out", str(out)]) != 0
    assert "not a readable result store" in capsys.readouterr().err
    assert (out / "results.sqlite").read_bytes() == b"this is not sqlite" * 100
