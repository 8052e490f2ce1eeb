"""Sweep backends (serial, local process pool, Ray), determinism and failing jobs."""

from __future__ import annotations

import csv
import io
import os
import pickle
import signal
import sys
import textwrap
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import pytest

try:
    import ray
except ImportError:  # the [ray] extra is optional: its tests skip, the others run
    ray = None

from evaluation.bench import sweep as sweep_module
from evaluation.bench.backends import LocalBackend, RayBackend, SerialBackend, make_backend
from evaluation.bench.store import ResultStore
from evaluation.bench.sweep import Job, SweepConfig, compute_oracle, run_job, run_sweep
from evaluation.cli import main

TIMING_COLUMNS = ("fit_seconds", "eval_seconds")
# robust draws random numbers (its held-out split): the seeds must carry across processes
SMALL = ["sweep", "--env", "ntp_envs/ARLinear-v0", "--env-kwargs", '{"misspecification": 0.5}',
         "--agents", "logloss,robust", "--horizons", "16", "--seeds", "2", "--n-train", "200",
         "--oracle-starts", "2", "--quiet"]


def csv_without_timings(path: Path) -> str:
    """The CSV's text with the wall-clock columns cut out; every other byte kept."""
    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING_COLUMNS]
    assert len(keep) == len(rows[0]) - len(TIMING_COLUMNS)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[row[i] for i in keep] for row in rows])
    return out.getvalue()


@pytest.fixture(scope="module")
def local_ray():
    """A local two-CPU Ray instance on 127.0.0.1 for this module (no cluster needed)."""
    with RayBackend(workers=2) as backend:
        backend.start(1)
        yield


def run_cli(argv: list[str], out: Path, *backend: str) -> str:
    assert main([*argv, "--out", str(out), *backend]) == 0
    frame = pd.read_csv(out / "results.csv")
    assert (frame["status"] == "ok").all()
    assert (frame[list(TIMING_COLUMNS)] > 0).all().all()
    return csv_without_timings(out / "results.csv")


@pytest.mark.skipif(ray is None, reason="needs the [ray] extra (pip install -e '.[ray]')")
def test_results_identical_across_backends_and_reruns(tmp_path, local_ray) -> None:
    serial = run_cli(SMALL, tmp_path / "serial", "--backend", "serial")
    pool = run_cli(SMALL, tmp_path / "local", "--backend", "local", "--workers", "2")
    again = run_cli(SMALL, tmp_path / "again", "--backend", "local", "--workers", "2")
    on_ray = run_cli(SMALL, tmp_path / "ray", "--backend", "ray")
    assert ray.is_initialized()  # the CLI reused the running instance and left it up
    # same command, same seeds: byte-for-byte the same CSV but for the wall-clock columns
    assert serial == pool == again == on_ray
    assert len(serial.splitlines()) == 1 + 4  # header + 1 horizon x 2 agents x 2 seeds
    header = (tmp_path / "local" / "results.csv").read_text().splitlines()[0].split(",")
    assert set(TIMING_COLUMNS) <= set(header)


def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, capsys) -> None:
    # RobustBC needs two demonstrations (fit + held out): with one, its fits raise
    out = tmp_path / "fail"
    argv = ["sweep", "--env", "ntp_envs/FiniteClassBarrier-v0", "--agents", "robust,logloss",
            "--horizons", "8,16", "--seeds", "1", "--n-train", "1", "--oracle-starts", "2",
            "--quiet", "--workers", "2", "--out", str(out)]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "2 job(s) failed" in printed
    assert printed.count("robust H=") == 2 and "at least 2 demonstrations" in printed
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 4
    failed = frame[frame["agent"] == "robust"]
    assert (failed["status"] == "failed").all()
    assert failed["error"].str.contains("ValueError: RobustBC needs at least 2").all()
    assert (frame.loc[frame["agent"] == "logloss", "status"] == "ok").all()


def test_rerun_retries_failed_jobs_only(tmp_path) -> None:
    config = SweepConfig("ntp_envs/FiniteClassBarrier-v0", {}, ("robust", "logloss"), (8,),
                         seeds=2, n_train=1, oracle_starts=2)
    rows: list[dict] = []
    with ResultStore(tmp_path / "r.sqlite") as store:
        keys = run_sweep(config, store, progress=False, on_row=rows.append)
        assert sorted(r["status"] for r in rows) == ["failed", "failed", "ok", "ok"]
        rows.clear()
        assert run_sweep(config, store, progress=False, on_row=rows.append) == keys
        assert [(r["agent"], r["status"]) for r in rows] == [("robust", "failed")] * 2
        frame = store.results()
    assert sorted(frame["job_key"]) == sorted(keys)  # still one row per job


def test_failed_best_in_class_fails_its_jobs_then_recovers(tmp_path, monkeypatch) -> None:
    config = SweepConfig("ntp_envs/FiniteClassBarrier-v0", {}, ("logloss",), (4, 8), seeds=2,
                         n_train=50, oracle_starts=2)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("search diverged")

    with ResultStore(tmp_path / "r.sqlite") as store:
        with monkeypatch.context() as patch:
            patch.setattr(sweep_module, "best_in_class", broken)
            run_sweep(config, store, progress=False)
        frame = store.results()
        assert (frame["status"] == "failed").all() and len(frame) == 4
        assert frame["error"].str.startswith("best-in-class: RuntimeError: search diverged").all()
        assert store.get_oracle(config.jobs()[0].oracle_key) is None
        run_sweep(config, store, progress=False)
        frame = store.results()
    assert len(frame) == 4 and (frame["status"] == "ok").all()
    assert frame["best_in_class_hellinger2"].gt(0).all()


def test_job_functions_are_picklable_and_pure() -> None:
    job = Job("ntp_envs/MixtureProduct-v0", {"weight": 0.1}, 16, "rho", 1, 300, oracle_starts=2)
    clone = pickle.loads(pickle.dumps(job))
    assert clone == job and clone.key == job.key
    oracle, again = compute_oracle(job), compute_oracle(clone)
    assert oracle.pop("oracle_seconds") > 0 and again.pop("oracle_seconds") > 0
    assert oracle == again
    first, second = run_job(job, oracle), run_job(clone, oracle)
    for name in TIMING_COLUMNS:
        assert first.pop(name) > 0 and second.pop(name) > 0
    assert first == second and first["status"] == "ok"


def _kill_own_worker() -> None:
    os._exit(3)


def _square(x: int) -> int:
    return x * x


def test_local_backend_survives_a_dead_worker() -> None:
    with LocalBackend(workers=1) as backend:
        backend.start(2)
        dead = backend.submit(_kill_own_worker)
        (handle, value, error), = backend.wait([dead])
        assert handle is dead and value is None and error is not None
        alive = backend.submit(_square, 7)
        assert backend.wait([alive]) == [(alive, 49, None)]


def _square_or_die(x: int, marker: str) -> int:
    """``x * x`` after a short nap; 5 kills its own worker (SIGKILL) whenever it runs, 6 only
    the first time (``marker`` remembers that it did)."""
    time.sleep(0.1)
    if x == 5 or (x == 6 and not os.path.exists(marker)):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def test_killed_worker_fails_only_its_own_job(tmp_path) -> None:
    marker = str(tmp_path / "six-died-once")
    with LocalBackend(workers=2) as backend:
        backend.start(16)
        handles = {backend.submit(_square_or_die, x, marker): x for x in range(16)}
        results: dict[int, tuple] = {}
        pending = set(handles)
        while pending:
            for handle, value, error in backend.wait(pending):
                pending.remove(handle)
                results[handles[handle]] = (value, error)
        assert os.path.exists(marker)  # 6 did kill its worker once
        value, error = results.pop(5)
        assert results == {x: (x * x, None) for x in range(16) if x != 5}
        assert value is None and isinstance(error, BrokenProcessPool)
        assert "died while running it, twice (the second time alone)" in str(error)
        again = backend.submit(_square, 9)  # the backend is still usable
        assert backend.wait([again]) == [(again, 81, None)]


KILLER = """
    import os
    import signal

    from agents.logloss_bc import LogLossBC


    class KillAtTwo(LogLossBC):
        \"\"\"LogLossBC, but its worker dies (SIGKILL) when it fits at horizon 2.\"\"\"

        def fit(self, task, demonstrations, rng=None):
            if task.horizon == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().fit(task, demonstrations, rng)
"""


def test_sweep_survives_a_killed_local_worker(tmp_path) -> None:
    plugin = tmp_path / "killer.py"
    plugin.write_text(textwrap.dedent(KILLER))
    killer = f"{plugin}:KillAtTwo"
    config = SweepConfig("ntp_envs/ARLinear-v0", {"misspecification": 0.5},
                         ("logloss", killer), (2, 3, 4, 5, 6, 8), seeds=1, population=True,
                         oracle_starts=2)
    with ResultStore(tmp_path / "pool.sqlite") as store, LocalBackend(2) as backend:
        run_sweep(config, store, backend=backend, progress=False)
        pool = store.results().set_index(["agent", "horizon"])
    serial_config = SweepConfig("ntp_envs/ARLinear-v0", {"misspecification": 0.5},
                                ("logloss",), (2, 3, 4, 5, 6, 8), seeds=1, population=True,
                                oracle_starts=2)
    with ResultStore(tmp_path / "serial.sqlite") as store:
        run_sweep(serial_config, store, progress=False)
        serial = store.results().set_index("horizon")
    assert len(pool) == 12
    failed = pool[pool["status"] != "ok"]
    assert list(failed.index) == [(killer, 2)]
    assert "BrokenProcessPool: its worker process died while running it, twice" in \
        failed["error"].iloc[0]
    numbers = ["hellinger2", "kl", "tv", "best_in_class_hellinger2"]
    # every other job as in a serial run: logloss itself, and the killer (logloss's fit) too
    for agent, horizons in (("logloss", [2, 3, 4, 5, 6, 8]), (killer, [3, 4, 5, 6, 8])):
        rows = pool.loc[agent].loc[horizons]
        assert (rows["status"] == "ok").all()
        assert rows[numbers].equals(serial.loc[horizons, numbers]), agent


def test_ray_backend_without_ray_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    with pytest.raises(ValueError, match=r"needs Ray: pip install .*\[ray\]"):
        make_backend("ray")


def test_serial_backend_runs_in_submission_order() -> None:
    backend = SerialBackend()
    handles = [backend.submit(_square, x) for x in (2, 3)]
    assert backend.wait(handles) == [(handles[0], 4, None)]
    (handle, value, error), = backend.wait([handles[1]])
    assert (value, error) == (9, None)
    failing = backend.submit(_square, "x")
    (_, value, error), = backend.wait([failing])
    assert value is None and isinstance(error, TypeError)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "spark"}, "backend must be one of"),
    ({"name": "local", "workers": 0}, "workers must be an integer in \\[1, 1024\\]"),
    ({"name": "local", "workers": 2.5}, "workers must be an integer"),
    ({"name": "serial", "workers": 2}, "workers must be 1"),
    ({"name": "local", "address": "auto"}, "address applies to the ray backend only"),
    ({"name": "ray", "address": ""}, "address must be a non-empty string"),
    ({"name": "ray", "address": "auto", "workers": 2}, "workers applies to a local Ray"),
])
def test_bad_backend_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_backend(**kwargs)


@pytest.mark.parametrize("extra, message", [
    (["--backend", "spark"], "invalid choice"),
    (["--workers", "0"], "--workers must be an integer in"),
    (["--workers", "two"], "--workers must be an integer in"),
    (["--address", "auto"], "--address applies to --backend ray only"),
    (["--backend", "serial", "--workers", "2"], "--workers must be 1"),
    (["--backend", "ray", "--address", "auto", "--workers", "2"], "local Ray instance only"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_backend_flags_exit_2_and_write_nothing(tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "never"
    assert main([*SMALL, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntp-bench: error:") and message in err
    assert not out.exists()
