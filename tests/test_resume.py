"""A sweep killed with SIGKILL mid-way resumes on rerun: one row per job, an intact store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from evaluation.bench.store import ResultStore
from evaluation.bench.sweep import SweepConfig
from evaluation.cli import main

ARGV = ["sweep", "--env", "ntp_envs/ARLinear-v0", "--agents", "logloss,robust",
        "--horizons", "16", "--seeds", "6", "--n-train", "3000", "--oracle-starts", "2",
        "--workers", "2", "--quiet"]
CONFIG = SweepConfig("ntp_envs/ARLinear-v0", {}, ("logloss", "robust"), (16,), seeds=6,
                     n_train=3000, oracle_starts=2)
DEADLINE_S = 300.0  # a guard against a hung child, not a speed requirement
ORPHAN_DEADLINE_S = 30.0  # workers poll for their parent once a second, then exit


def _wait_for_group_exit(group: int, deadline_s: float) -> bool:
    """Wait until no process of ``group`` is left; True if some still are at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


def stored_rows(path: Path) -> pd.DataFrame:
    """The results table read through a read-only connection (empty before it exists)."""
    if not path.exists():
        return pd.DataFrame()
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return pd.read_sql_query("SELECT * FROM results", conn)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError):  # not created yet, or busy
        return pd.DataFrame()


def test_sigkilled_sweep_resumes_with_one_row_per_job(tmp_path) -> None:
    out = tmp_path / "killed"
    store = out / "results.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-m", "evaluation.cli", *ARGV, "--out", str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        start = time.monotonic()
        before = pd.DataFrame()
        while len(before) < 2:
            assert child.poll() is None, f"the sweep ended before it was killed: " \
                                         f"{child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() - start < DEADLINE_S, "no rows appeared"
            time.sleep(0.02)
            before = stored_rows(store)
        os.kill(child.pid, signal.SIGKILL)  # the driver only, mid-sweep
        child.wait()
        orphans_left = _wait_for_group_exit(child.pid, ORPHAN_DEADLINE_S)
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)  # then any worker of ours still there
        except ProcessLookupError:
            pass
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert not orphans_left, "pool workers outlived the killed driver"
    keys = {job.key for job in CONFIG.jobs()}
    assert 2 <= len(before) < len(keys), "the kill must land mid-way"

    assert main([*ARGV, "--out", str(out)]) == 0  # the rerun completes the rest
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (rows,), = conn.execute("SELECT COUNT(*) FROM results").fetchall()
    with ResultStore(store) as opened:
        after = opened.results()
    assert rows == len(after) == len(keys) and set(after["job_key"]) == keys
    assert (after["status"] == "ok").all()
    # the jobs finished before the kill were kept, not recomputed (even their timings)
    kept = after.set_index("job_key").loc[before["job_key"]]
    pd.testing.assert_frame_equal(kept.reset_index()[before.columns], before,
                                  check_dtype=False)
    assert len(pd.read_csv(out / "results.csv")) == len(keys)
