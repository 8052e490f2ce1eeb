"""Issue 14: a row's identity holds every setting that changes it; presets take overrides;
exports hold the whole store; one instance has one key; unconverged fits are visible."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
import threading
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest

from agents import ChunkedBC, LogLossBC
from agents.base import agent_config
from evaluation import cli
from evaluation.bench import sweep
from evaluation.bench.analysis import summarise
from evaluation.bench.store import RESULT_COLUMNS, ResultStore
from evaluation.bench.sweep import Job
from evaluation.cli import main, plan_sweep
from evaluation.cli import report as report_cli
from evaluation.experiments.presets import PRESETS

MIX = "ntp_envs/MixtureProduct-v0"
BARRIER = "ntp_envs/FiniteClassBarrier-v0"
AR = ["sweep", "--env", "ntp_envs/ARLinear-v0", "--agents", "logloss", "--horizons", "4",
      "--n-train", "100", "--backend", "serial", "--quiet"]


def _rows(out) -> pd.DataFrame:
    with ResultStore(out / "results.sqlite") as store:
        return store.results()


def test_other_eval_samples_and_oracle_starts_make_new_rows_never_pooled(tmp_path) -> None:
    out = tmp_path / "runs"
    assert main([*AR, "--seeds", "1", "--eval-samples", "50", "--oracle-starts", "1",
                 "--out", str(out)]) == 0
    assert main([*AR, "--seeds", "3", "--eval-samples", "5000", "--oracle-starts", "2",
                 "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 1 + 3  # the second sweep reused nothing of the first
    assert sorted(rows["eval_samples"]) == [50, 5000, 5000, 5000]
    assert sorted(rows["oracle_starts"]) == [1, 2, 2, 2]
    summary = summarise(rows)
    assert sorted(summary["seeds"]) == [1, 3]  # two summary lines, one per settings
    with sqlite3.connect(out / "results.sqlite") as conn:
        starts = sorted(r[0] for r in conn.execute("SELECT oracle_starts FROM oracle"))
    assert starts == [1, 2]  # the best-in-class value is keyed by its starts too
    assert len(pd.read_csv(out / "results.csv")) == 4


def test_agent_settings_are_part_of_the_key() -> None:
    assert agent_config(ChunkedBC(4)) == {"class": "agents.chunked_bc:ChunkedBC",
                                          "chunk_size": 4, "memory": None, "l2": None,
                                          "name": "chunk:4"}
    default = Job(MIX, {}, 8, "logloss", 0, 100)
    assert json.loads(default.agent_config) == {"class": "agents.logloss_bc:LogLossBC",
                                                "l2": None, "name": "logloss",
                                                "_code": {"ntp-gym": version("ntp-gym")}}
    other = json.dumps(agent_config(LogLossBC(l2=1e-3)))
    changed = Job(MIX, {}, 8, "logloss", 0, 100, agent_config=other)
    assert changed.key != default.key and changed.oracle_key == default.oracle_key


def test_a_worker_with_other_agent_settings_fails_the_job(monkeypatch) -> None:
    job = Job(MIX, {}, 4, "logloss", 0, 0)
    monkeypatch.setattr(sweep, "make_agent", lambda name: LogLossBC(l2=0.5))
    row = sweep.run_job(job, {"best_in_class_hellinger2": 0.1, "oracle_method": "x",
                              "oracle_agreement": 1.0})
    assert row["status"] == "failed" and "a worker runs other code" in row["error"]


def test_equal_instances_share_one_key_and_one_row(tmp_path) -> None:
    jobs = [Job(MIX, kwargs, 4, "logloss", 0, 0) for kwargs in
            ({}, {"weight": 0.05}, {"render_mode": "ansi"}, {"weight": 0.05, "p0": 0.2})]
    assert len({job.key for job in jobs}) == 1
    assert Job(MIX, {"weight": 0.1}, 4, "logloss", 0, 0).key != jobs[0].key
    out = tmp_path / "one"
    for kwargs in ("{}", '{"weight": 0.05}', '{"render_mode": "ansi"}'):
        assert main(["sweep", "--env", MIX, "--env-kwargs", kwargs, "--horizons", "4",
                     "--seeds", "1", "--population", "--backend", "serial", "--quiet",
                     "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 1 and rows["env_kwargs"].tolist() == ["{}"]


def test_preset_settings_flags_override_every_config() -> None:
    plain = plan_sweep(["--preset", "quick"]).configs
    assert plain == PRESETS["quick"]  # defaults of flags not given do not count
    configs = plan_sweep(["--preset", "quick", "--seeds", "1", "--n-train", "77",
                          "--eval-samples", "123", "--oracle-starts", "2"]).configs
    assert len(configs) == len(PRESETS["quick"])
    for given, preset in zip(configs, PRESETS["quick"], strict=True):
        assert (given.seeds, given.eval_samples, given.oracle_starts) == (1, 123, 2)
        assert given.n_train == 77 and given.population == preset.population
        assert dataclasses.replace(given, seeds=preset.seeds, n_train=preset.n_train,
                                   eval_samples=preset.eval_samples,
                                   oracle_starts=preset.oracle_starts) == preset
    population = plan_sweep(["--preset", "quick", "--population"]).configs
    assert all(config.population for config in population)


def test_n_train_zero_is_a_population_fit_and_allowed_with_population() -> None:
    for argv in (["--n-train", "0"], ["--n-train", "0", "--population"]):
        (config,) = plan_sweep(["--env", MIX, "--horizons", "4", *argv]).configs
        assert config.population and {job.n_train for job in config.jobs()} == {0}


def test_csv_and_plot_export_every_stored_row(tmp_path) -> None:
    out = tmp_path / "two"
    base = ["sweep", "--env", MIX, "--seeds", "1", "--population", "--backend", "serial",
            "--quiet", "--out", str(out)]
    assert main([*base, "--horizons", "4,8"]) == 0
    assert main([*base, "--horizons", "16"]) == 0
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame["horizon"]) == [4, 8, 16] == sorted(_rows(out)["horizon"])


def test_unconverged_fit_is_visible_counted_and_not_retried(tmp_path, monkeypatch,
                                                            capsys) -> None:
    fits = []

    class Stalled(LogLossBC):
        def fit(self, task, demonstrations, rng=None):  # noqa: ANN001, ANN201
            fits.append(task.horizon)
            policy = super().fit(task, demonstrations, rng)
            policy.info = {**policy.info, "solver": [{"converged": False}]}
            return policy

    monkeypatch.setattr(sweep, "make_agent", lambda name: Stalled())
    argv = ["sweep", "--env", MIX, "--horizons", "4", "--seeds", "1", "--population",
            "--backend", "serial", "--quiet", "--out", str(tmp_path / "u")]
    assert main(argv) == 1
    text = capsys.readouterr().out
    assert "1 job(s) unconverged" in text and "unconverged: MixtureProduct-v0" in text
    assert pd.read_csv(tmp_path / "u" / "results.csv")["status"].tolist() == ["unconverged"]
    assert main(argv) == 1 and fits == [4]  # kept, not fitted again


@pytest.mark.parametrize("argv, message", [
    (["--env-grid", '{"bias": [0.01, 2.0]}'], "--env-grid (instance {\"bias\": 2.0})"),
    (["--env-grid", '{"bias": []}'], "--env-grid kwarg 'bias' must map to a non-empty list"),
    (["--env-grid", '{"bias": 0.1}'], "--env-grid kwarg 'bias' must map to a non-empty list"),
    (["--env-grid", '{"bias": [0.1]}', "--env-kwargs", '{"bias": 0.2}'],
     "--env-grid kwarg 'bias' is also in --env-kwargs"),
    (["--env-grid", '{"horizon": [4]}'], "--env-grid must not hold horizon"),
    (["--env-grid", "[1]"], "--env-grid must be a JSON object"),
    (["--env-grid", "{"], "--env-grid must be a JSON object"),
    (["--preset", "quick", "--env-grid", '{"bias": [0.1]}'], "--preset cannot be combined"),
])
def test_bad_env_grid_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message) -> None:
    env = [] if "--preset" in argv else ["--env", BARRIER]
    out = tmp_path / "never"
    assert main(["sweep", *env, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_family_sweep_worst_case_matches_separate_instance_runs(tmp_path) -> None:
    base = ["sweep", "--env", BARRIER, "--agents", "logloss", "--horizons", "8,16", "--seeds",
            "1", "--population", "--backend", "serial", "--quiet"]
    kwargs = '{"event_prob": 0.001}'
    biases = [0.002, 0.01, 0.05]
    single = {}  # each instance run on its own, in its own store
    for bias in biases:
        out = tmp_path / f"single-{bias}"
        assert main([*base, "--env-kwargs", json.dumps({"event_prob": 0.001, "bias": bias}),
                     "--out", str(out)]) == 0
        single[bias] = _rows(out).set_index("horizon")["c_apx"]
    out = tmp_path / "family"
    # one instance first, as a plain sweep: the family sweep reuses it and still counts it
    assert main([*base, "--env-kwargs", json.dumps({"event_prob": 0.001, "bias": 0.01}),
                 "--out", str(out)]) == 0
    assert main([*base, "--env-kwargs", kwargs, "--env-grid", json.dumps({"bias": biases}),
                 "--out", str(out)]) == 0
    assert len(_rows(out)) == 6
    worst = pd.read_csv(out / "worst_case.csv")
    assert list(worst.columns[:9]) == ["env_id", "family", "agent", "horizon", "n_train",
                                       "instances", "worst_c_apx", "worst_kwargs", "mean_c_apx"]
    assert len(worst) == 2 and (worst["instances"] == 3).all()
    for _, row in worst.iterrows():
        values = {bias: single[bias][row["horizon"]] for bias in biases}
        np.testing.assert_allclose(row["worst_c_apx"], max(values.values()), rtol=1e-12)
        np.testing.assert_allclose(row["mean_c_apx"], np.mean(list(values.values())),
                                   rtol=1e-12)
        arg = max(values, key=values.get)
        expected = {"event_prob": 0.001, **({} if arg == 0.05 else {"bias": arg})}  # default
        assert json.loads(row["worst_kwargs"]) == expected
    # the worst case's growth exponent in H: two horizons, the slope between them, no s.e.
    slope = np.log(worst["worst_c_apx"].iloc[1] / worst["worst_c_apx"].iloc[0]) / np.log(2)
    np.testing.assert_allclose(worst["growth_exponent"], slope, rtol=1e-12)
    assert worst["growth_exponent_se"].isna().all() and (worst["growth_horizons"] == 2).all()
    assert (out / "worst_case_vs_horizon.png").stat().st_size > 10_000


def test_fixed_horizon_envs_use_their_own_horizon() -> None:
    from ntp_envs.multiplication_cot import multiplication_horizon
    from ntp_envs.parity_cot import parity_horizon

    (parity,) = plan_sweep(["--env", "ntp_envs/ParityCoT-v0", "--agents", "linear-ar",
                            "--env-grid", '{"num_bits": [4, 6]}', "--env-kwargs",
                            '{"subset_size": 2}']).configs
    assert sorted({job.horizon for job in parity.jobs()}) == [parity_horizon(4, "count", 1),
                                                            parity_horizon(6, "count", 1)]
    (mult,) = plan_sweep(["--env", "ntp_envs/MultiplicationCoT-v0", "--agents",
                          "linear-ar"]).configs
    assert {job.horizon for job in mult.jobs()} == {multiplication_horizon(2, "long")}
    (star,) = plan_sweep(["--env", "ntp_envs/PathStar-v0", "--agents", "linear-ar"]).configs
    assert len({job.horizon for job in star.jobs()}) == 1


@pytest.mark.parametrize("argv, message", [
    (["--env", "ntp_envs/ParityCoT-v0", "--agents", "logloss"], "--agents: logloss cannot fit"),
    (["--env", MIX, "--agents", "chunk:17", "--horizons", "4,32"], "--agents: chunk:17 cannot"),
    (["--env", MIX, "--agents", "chunk:0"], "--agents: "),
    (["--env", MIX, "--n-train", "-1"], "--n-train must be an integer >= 0"),
])
def test_agents_that_cannot_fit_are_refused_before_any_job(tmp_path, capsys, argv,
                                                          message) -> None:
    out = tmp_path / "never"
    assert main(["sweep", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_chunk_range_is_the_same_in_the_cli_and_make_agent() -> None:
    from agents import make_agent
    from ntp_envs import make_task

    for name, horizon in (("chunk:16", 16), ("chunk:17", 32), ("chunk:8", 4)):
        try:
            make_agent(name).fit(make_task(MIX, horizon=horizon), None)
            fitted = ""
        except ValueError as err:
            fitted = str(err)
        argv = ["--env", MIX, "--agents", name, "--horizons", str(horizon), "--population"]
        if fitted:  # refused by the CLI exactly when, and as, make_agent's fit refuses
            with pytest.raises(cli.UsageError, match="--agents") as refused:
                plan_sweep(argv)
            assert fitted in str(refused.value)
        else:
            assert plan_sweep(argv).configs[0].agents == (name,)


@pytest.mark.parametrize("out, message", [("", "--out must name a folder"),
                                          ("file", "is a file, not a folder")])
def test_bad_out_is_one_line(tmp_path, capsys, out, message) -> None:
    target = tmp_path / "file"
    target.write_text("keep")
    path = "" if out == "" else str(target)
    assert main(["sweep", "--env", MIX, "--horizons", "4", "--out", path]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and message in err and err.count("\n") == 1
    assert target.read_text() == "keep"


def test_concurrent_exports_never_collide(tmp_path) -> None:
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        for i in range(20):
            store.put_result({"job_key": f"k{i}", "env_id": MIX, "env_kwargs": "{}",
                              "horizon": 4, "agent": "logloss", "seed": i, "n_train": 0,
                              "status": "ok"})
    errors: list[BaseException] = []

    def export() -> None:
        try:
            with ResultStore(path) as store:
                for _ in range(40):
                    store.export_csv(tmp_path / "results.csv")
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=export) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(pd.read_csv(tmp_path / "results.csv")) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.sqlite"]


def _old_store(path) -> None:
    """A store as written before the settings were keyed (no settings or family columns)."""
    old = {k: v for k, v in RESULT_COLUMNS.items()
           if k not in ("eval_samples", "oracle_starts", "agent_config", "family")}
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE results ({', '.join(f'{k} {v}' for k, v in old.items())})")
        conn.execute("CREATE TABLE oracle (oracle_key TEXT PRIMARY KEY, env_id TEXT NOT NULL, "
                     "env_kwargs TEXT NOT NULL, horizon INTEGER NOT NULL, "
                     "best_in_class_hellinger2 REAL, oracle_method TEXT, oracle_agreement "
                     "REAL, oracle_seconds REAL, local_optima TEXT)")
        conn.execute("INSERT INTO results (job_key, env_id, env_kwargs, horizon, agent, seed, "
                     "n_train, status, hellinger2, c_apx) VALUES ('old', ?, '{}', 4, 'logloss', "
                     "0, 0, 'ok', 0.5, 2.0)", (MIX,))
    conn.close()


def test_old_store_reads_read_only_and_its_rows_stay_apart(tmp_path, monkeypatch,
                                                           capsys) -> None:
    out = tmp_path / "old"
    out.mkdir()
    store = out / "results.sqlite"
    _old_store(store)
    before = store.read_bytes()
    with ResultStore(store, readonly=True) as opened:
        frame = opened.results()
        with pytest.raises(ValueError, match="read-only"):
            opened.put_result({"job_key": "x"})
    assert frame["eval_samples"].isna().all() and len(frame) == 1
    assert store.read_bytes() == before and sorted(p.name for p in out.iterdir()) == [
        "results.sqlite"]
    monkeypatch.setattr(report_cli, "_writable", lambda out: False)  # as a read-only folder reads
    assert main(["report", "--out", str(out)]) == 0
    assert "is read-only: summary read from" in capsys.readouterr().out
    assert store.read_bytes() == before and not (out / "results.csv").exists()
    monkeypatch.undo()
    argv = ["sweep", "--env", MIX, "--horizons", "4", "--seeds", "1", "--population",
            "--backend", "serial", "--quiet", "--out", str(out)]
    assert main(argv) == 0  # the old store gains the columns; the old row is not reused
    rows = _rows(out)
    assert len(rows) == 2 and rows["eval_samples"].isna().sum() == 1
    assert sorted(summarise(rows)["seeds"]) == [1, 1]  # never pooled with the old row


def test_overlapping_curves_stay_distinct_and_titles_name_the_kwargs(tmp_path,
                                                                     monkeypatch) -> None:
    from evaluation.bench import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure",
                        lambda fig, path, mode=None: figures.append(fig) or path)
    same = {"hellinger2_mean": [0.1, 0.2], "hellinger2_se": [0.0, 0.0], "c_apx_mean": [1.0, 2.0],
            "c_apx_se": [0.0, 0.0], "best_in_class_hellinger2_mean": [0.1, 0.1]}
    summary = pd.concat([pd.DataFrame({"env_id": MIX, "env_kwargs": '{"weight":0.1}',
                                       "agent": agent, "n_train": 0, "horizon": [4, 8], **same})
                         for agent in ("logloss", "robust", "rho")])
    plots.plot_divergence_vs_horizon(summary, tmp_path / "p.png")
    (fig,) = figures
    for ax in fig.axes:
        assert "weight=0.1" in ax.get_title() and "{}" not in ax.get_title()
        curves = [container.lines[0] for container in ax.containers]  # errorbar data lines
        styles = {(line.get_marker(), str(line.get_linestyle())) for line in curves}
        assert len(curves) == 3 and len(styles) == 3  # identical values, three visible curves


# issue 22 items 6 and 7: the device, integral floats and a plug-in's code in the key

AR_ID = "ntp_envs/ARLinear-v0"

DEVICE_PLUGIN = '''
import os

from agents import LogLossBC

SEEN = []


class OnDevice(LogLossBC):
    def fit(self, task, demonstrations, rng=None):
        SEEN.append(os.environ.get("NTP_GYM_DEVICE"))
        return super().fit(task, demonstrations, rng)
'''


def test_device_keys_the_rows_of_agents_that_use_it(tmp_path, monkeypatch) -> None:
    plugin = tmp_path / "devplug.py"
    plugin.write_text(DEVICE_PLUGIN)
    spec = f"{plugin}:OnDevice"
    for agent, matters in (("gpt-tf", True), (spec, True), ("logloss", False)):
        cpu, gpu = (Job(MIX, {}, 4, agent, 0, 50, device=d) for d in ("cpu", "cuda:1"))
        assert (cpu.key != gpu.key) == matters, agent
        monkeypatch.setenv("NTP_GYM_DEVICE", "cuda:1")  # the default device follows it
        assert Job(MIX, {}, 4, agent, 0, 50).key == gpu.key
        monkeypatch.delenv("NTP_GYM_DEVICE")
    with ResultStore(tmp_path / "results.sqlite") as store:
        config = sweep.SweepConfig(MIX, agents=(spec, "logloss"), horizons=(4,), seeds=1,
                                   n_train=50, device="cpu")
        sweep.run_sweep(config, store, progress=False)
        # a rerun on a GPU: the plug-in is fitted again there, logloss (numpy) is reused
        sweep.run_sweep(dataclasses.replace(config, device="cuda:1"), store, progress=False)
        rows = store.results()
    module = next(m for m in sys.modules.values()
                  if getattr(m, "__file__", None) == str(plugin.resolve()))
    assert module.SEEN == ["cpu", "cuda:1"]
    assert sorted(rows["agent"].tolist()) == sorted([spec, spec, "logloss"])
    assert (rows["status"] == "ok").all()
    devices = [json.loads(c).get("_device") for c in rows["agent_config"]]
    assert sorted(map(str, devices)) == ["None", "cpu", "cuda:1"]


def test_integral_floats_key_one_instance(tmp_path) -> None:
    from evaluation.bench.store import canonical_json

    assert canonical_json([1.0, {"b": 2.0, "a": True, "c": 0.5, "d": [3.0, -0.0]}]) == \
        '[1,{"a":true,"b":2,"c":0.5,"d":[3,0]}]'
    assert Job(AR_ID, {"misspecification": 1}, 4, "logloss", 0, 50).key == \
        Job(AR_ID, {"misspecification": 1.0}, 4, "logloss", 0, 50).key
    assert Job(AR_ID, {"misspecification": 1}, 4, "logloss", 0, 50).env_kwargs == \
        {"misspecification": 1}  # the kwargs given to the env keep their type
    out = tmp_path / "one"
    for kwargs in ('{"misspecification": 1}', '{"misspecification": 1.0}'):
        assert main(["sweep", "--env", AR_ID, "--env-kwargs", kwargs, "--horizons", "4",
                     "--seeds", "1", "--n-train", "50", "--backend", "serial", "--quiet",
                     "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 1 and rows["env_kwargs"].tolist() == ['{"misspecification":1}']


EDITED_PLUGIN = '''
from pathlib import Path

from agents import LogLossBC

MARK = {mark}


class Marked(LogLossBC):
    def fit(self, task, demonstrations, rng=None):
        with open(Path(__file__).with_suffix(".log"), "a") as log:
            log.write(f"{{MARK}}\\n")
        policy = super().fit(task, demonstrations, rng)
        policy.info = {{**policy.info, "mark": MARK}}
        return policy
'''


def test_editing_a_plugin_keys_new_rows_and_recompute_refits(tmp_path, capsys) -> None:
    plugin = tmp_path / "marked.py"
    out = tmp_path / "out"
    argv = ["sweep", "--env", MIX, "--agents", f"{plugin}:Marked", "--horizons", "4",
            "--seeds", "1", "--n-train", "50", "--backend", "serial", "--quiet",
            "--out", str(out)]

    def run(mark: int, *extra: str) -> list[int]:
        plugin.write_text(EDITED_PLUGIN.format(mark=mark))
        for name in [n for n, m in sys.modules.items()  # as a new process would import it
                     if getattr(m, "__file__", None) == str(plugin.resolve())]:
            del sys.modules[name]
        assert main([*argv, *extra]) == 0
        return [json.loads(info)["mark"] for info in _rows(out)["agent_info"]]

    assert run(1) == [1]
    assert run(1) == [1]  # unchanged code: the row is reused
    assert run(2) == [1, 2]  # edited code: a new row, the old one kept apart
    assert "(2 row(s), 1 from this sweep)" in " ".join(capsys.readouterr().out.split())
    codes = [json.loads(c)["_code"] for c in _rows(out)["agent_config"]]
    assert codes[0] != codes[1] and codes[0]["ntp-gym"] == codes[1]["ntp-gym"]
    assert run(2, "--recompute") == [1, 2]  # refitted in place: its row replaced
    assert plugin.with_suffix(".log").read_text().split() == ["1", "2", "2"]


def test_recompute_replaces_rows_of_builtin_agents(tmp_path) -> None:
    out = tmp_path / "again"
    argv = [*AR, "--seeds", "2", "--out", str(out)]
    assert main(argv) == 0
    before = _rows(out).set_index("job_key")
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("UPDATE results SET hellinger2 = -1.0, fit_seconds = -1.0")
    conn.close()
    assert main(argv) == 0 and (_rows(out)["hellinger2"] == -1.0).all()  # reused as stored
    assert main([*argv, "--recompute"]) == 0
    after = _rows(out).set_index("job_key")
    assert sorted(after.index) == sorted(before.index) and (after["fit_seconds"] > 0).all()
    np.testing.assert_allclose(after.loc[before.index, "hellinger2"], before["hellinger2"],
                               rtol=1e-12)


# the sweep's --out is checked as evaluate's is: a name the file system refuses is one line

def test_sweep_out_with_a_name_too_long_is_one_line(tmp_path, capsys) -> None:
    out = tmp_path / ("x" * 300)
    assert main(["sweep", "--env", MIX, "--horizons", "2", "--seeds", "1", "--population",
                 "--backend", "serial", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "File name too long" in err
    assert sorted(tmp_path.iterdir()) == []
