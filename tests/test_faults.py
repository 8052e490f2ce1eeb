"""Corrupt or foreign inputs: result stores, saved agents, datasets. Clear ValueErrors, no
pickle, nothing overwritten."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agents import LogLossBC, agent_names, load_policy, make_agent
from evaluation.bench.store import RESULT_COLUMNS, ResultStore
from evaluation.cli import main
from experts import collect_demonstrations
from experts.demonstrations import Demonstrations
from ntp_envs import make_task
from ntp_envs.archive import load_archive, save_archive
from ntp_envs.chunk_tables import MAX_CHUNK_OUTCOMES

BARRIER = "ntp_envs/FiniteClassBarrier-v0"
AR_LINEAR = "ntp_envs/ARLinear-v0"
SWEEP = ["sweep", "--env", BARRIER, "--agents", "logloss", "--horizons", "8", "--seeds", "1",
         "--n-train", "50", "--backend", "serial", "--quiet"]


def _row(i: int) -> dict:
    return {"job_key": f"job-{i}", "env_id": BARRIER, "env_kwargs": "{}", "horizon": 8,
            "agent": "logloss", "seed": i, "n_train": 50, "status": "ok", "error": None,
            "hellinger2": 0.1, "agent_info": "x" * 500}


@pytest.fixture
def full_store(tmp_path: Path) -> Path:
    """A valid store of 200 rows (many pages), closed and checkpointed."""
    path = tmp_path / "out" / "results.sqlite"
    with ResultStore(path) as store:
        for i in range(200):
            store.put_result(_row(i))
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.mark.parametrize("keep", [20, 100, 4096, 0.5, 0.9])
def test_truncated_store_is_a_clear_error_and_left_untouched(full_store: Path, keep: float,
                                                             capsys) -> None:
    data = full_store.read_bytes()
    cut = data[: int(keep * len(data)) if isinstance(keep, float) else keep]
    full_store.write_bytes(cut)
    csv = full_store.with_name("results.csv")
    csv.write_text("earlier export\n")
    with pytest.raises(ValueError, match="not a readable result store"):
        ResultStore(full_store)
    out = str(full_store.parent)
    assert main([*SWEEP, "--out", out]) == 1
    assert main(["report", "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.count("not a readable result store") == 2
    assert full_store.read_bytes() == cut  # nothing written to the damaged store ...
    assert csv.read_text() == "earlier export\n"  # ... nor over the earlier export
    assert not full_store.with_name("divergence_vs_horizon.png").exists()


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not an ntp-gym result store"):
        ResultStore(path)
    assert main([*SWEEP, "--out", str(tmp_path)]) == 1
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["users"]


def test_store_without_marker_from_an_earlier_version_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    spec = ", ".join(f"{name} {kind}" for name, kind in RESULT_COLUMNS.items())
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE results ({spec})")
        conn.execute("CREATE TABLE oracle (oracle_key TEXT PRIMARY KEY, env_id TEXT, "
                     "env_kwargs TEXT, horizon INTEGER, best_in_class_hellinger2 REAL, "
                     "oracle_method TEXT, oracle_agreement REAL, oracle_seconds REAL, "
                     "local_optima TEXT)")
    conn.close()
    with ResultStore(path) as store:
        store.put_result(_row(0))
        assert store.done_keys() == {"job-0"}


def test_folder_in_place_of_the_store(tmp_path: Path) -> None:
    (tmp_path / "results.sqlite").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        ResultStore(tmp_path / "results.sqlite")


# --- saved agents ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A linear-softmax policy (ARLinear) and a finite-class member (barrier), saved."""
    folder = tmp_path_factory.mktemp("policies")
    paths = {}
    for kind, env in [("linear", AR_LINEAR), ("finite", BARRIER)]:
        task = make_task(env, horizon=8)
        policy = LogLossBC().fit(task, collect_demonstrations(task, 200, 0))
        paths[kind] = policy.save(folder / f"{kind}.npz")
    return paths


def _tamper(source: Path, target: Path, arrays: dict | None = None, meta: dict | None = None,
            drop: str | None = None) -> Path:
    have, info = load_archive(source)
    have.update(arrays or {})
    info.update(meta or {})
    if drop:
        have.pop(drop, None)
        info.pop(drop, None)
    return save_archive(target, have, info)


@pytest.mark.parametrize("kind, arrays, meta, drop, message", [
    ("linear", {"theta": np.zeros(3)}, None, None, "saved theta must be"),
    ("linear", {"theta": np.full(24, np.nan)}, None, None, "saved theta must be"),
    ("linear", {"gamma": np.array([1.5])}, None, None, "saved gamma must be"),
    ("linear", {"gamma": np.array([0.1, 0.2])}, None, None, "saved gamma must be"),
    ("linear", None, None, "theta", "saved theta must be"),
    ("linear", None, {"env_kwargs": {"misspecification": 9}}, None, "misspecification"),
    ("linear", None, {"env_kwargs": {"num_contexts": 7}}, None, "saved theta must be"),
    ("linear", None, {"env_kwargs": "oops"}, None, "corrupt metadata"),
    ("linear", None, {"env_id": "ntp_envs/Nope-v0"}, None, "env_id.*Nope-v0"),
    ("linear", None, {"kind": "neural"}, None, "unknown policy kind"),
    ("linear", None, {"format": "something-else"}, None, "not an ntp-gym policy"),
    ("finite", {"index": np.array([5])}, None, None, "index must lie in"),
    ("finite", {"index": np.array([0.0])}, None, None, "saved index must be one integer"),
    ("finite", {"gamma": np.array([-0.5])}, None, None, "saved gamma must be"),
    ("finite", None, None, "index", "saved index must be one integer"),
])
def test_tampered_saved_agent_is_a_clear_error(saved, tmp_path, kind, arrays, meta, drop,
                                               message) -> None:
    path = _tamper(saved[kind], tmp_path / "tampered.npz", arrays, meta, drop)
    with pytest.raises(ValueError, match=message):
        load_policy(path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "append"])
def test_damaged_policy_bytes_are_a_clear_error(saved, tmp_path, damage: str) -> None:
    data = bytearray(saved["linear"].read_bytes())
    if damage == "flip":  # inside the stored theta: the zip CRC no longer matches
        data[len(data) // 3] ^= 0xFF
    path = tmp_path / "damaged.npz"
    path.write_bytes({"flip": bytes(data), "truncate": bytes(data[: len(data) // 2]),
                      "empty": b"", "append": bytes(data) + b"trailing garbage" * 10}[damage])
    if damage == "append":  # zip tolerates trailing bytes: the content is intact
        assert load_policy(path).kind == "linear_softmax"
        return
    with pytest.raises(ValueError, match="not a valid ntp-gym policy"):
        load_policy(path)


class _Bomb:
    """Unpickling this object would create a folder: the proof that nothing unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def test_no_pickle_is_ever_loaded(saved, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    arrays, meta = load_archive(saved["linear"])
    bomb = np.empty(1, dtype=object)
    bomb[0] = _Bomb(marker)
    path = tmp_path / "bomb.npz"
    np.savez(path, theta=bomb, gamma=arrays["gamma"],
             metadata=np.frombuffer(__import__("json").dumps(meta).encode(), np.uint8))
    with pytest.raises(ValueError, match="not a valid ntp-gym policy"):
        load_policy(path)
    demos = tmp_path / "demos.npz"
    np.savez(demos, prompts=bomb, tokens=bomb, expert_logprobs=bomb,
             metadata=np.frombuffer(b'{"format": "ntp-gym/demonstrations"}', np.uint8))
    with pytest.raises(ValueError, match="not a valid demonstrations file"):
        Demonstrations.load(demos)
    assert not marker.exists()


# --- datasets -------------------------------------------------------------------------------

def _bad_datasets(task) -> dict[str, Demonstrations]:
    """Demonstrations that are valid on their own but do not fit ``task``."""
    good = collect_demonstrations(task, 20, 0)
    other = collect_demonstrations(make_task(task.env_id, horizon=task.horizon - 2), 20, 0)
    vocab = task.vocab_size

    def variant(**change: object) -> Demonstrations:
        fields = {"env_id": good.env_id, "env_kwargs": good.env_kwargs, "prompts": good.prompts,
                  "tokens": good.tokens, "expert_logprobs": good.expert_logprobs,
                  "vocab_size": vocab, **change}
        return Demonstrations(**fields)

    return {
        "wrong horizon": other,
        "token out of range": variant(tokens=np.full_like(good.tokens, vocab),
                                      vocab_size=vocab + 1),
        "prompt outside support": variant(prompts=good.prompts + 10),
        "negative prompt": variant(prompts=good.prompts - 3),
        "prompt shape": variant(prompts=np.concatenate([good.prompts, good.prompts], axis=1)),
    }


def _data_messages(task) -> dict[str, str]:
    """The data check's exact message for each of ``_bad_datasets(task)``, written out here
    from the datasets' sizes (20 sequences, prompts of the task's length)."""
    length, top = task.prompts.prompt_length, task.prompt_vocab_size - 1
    return {"wrong horizon": f"demonstrations.tokens must have shape (n, {task.horizon}), "
                             f"got (20, {task.horizon - 2})",
            "token out of range": f"demonstrations.tokens must lie in [0, {task.vocab_size - 1}]",
            "prompt outside support": f"demonstrations.prompts must lie in [0, {top}]",
            "negative prompt": f"demonstrations.prompts must lie in [0, {top}]",
            "prompt shape": f"demonstrations.prompts must be integers of shape (20, {length}), "
                            f"got int64 (20, {2 * length})"}


def _chunk_cap_message(agent: str, vocab: int) -> str | None:
    """The memory-cap refusal of a chunk-table agent (``chunk:K``, ``chunk-kr:K``) whose
    ``V**K`` outcomes exceed the cap: it refuses the task itself, before any data check."""
    family, _, k = agent.partition(":")
    if family not in ("chunk", "chunk-kr") or vocab ** int(k) <= MAX_CHUNK_OUTCOMES:
        return None
    largest = max(j for j in range(1, 64) if vocab**j <= MAX_CHUNK_OUTCOMES)
    return (f"chunk_size must satisfy V**K <= {MAX_CHUNK_OUTCOMES} (memory cap), i.e. lie in "
            f"[1, {largest}] for V = {vocab}; got K = {k} (V**K = {vocab}**{k})")


@pytest.mark.parametrize("env_id", [AR_LINEAR, BARRIER])
@pytest.mark.parametrize("agent", agent_names())
def test_every_agent_rejects_datasets_that_do_not_fit(env_id: str, agent: str) -> None:
    """Each agent refuses each misfit dataset with the data check's exact message; a chunk
    agent whose ``V**K`` exceeds the memory cap (K >= 11 at V = 3) refuses the task itself,
    valid data included, with the cap's exact message (its data check runs at V = 2)."""
    task = make_task(env_id, horizon=16)  # long enough for every registered chunk size
    cap = _chunk_cap_message(agent, task.vocab_size)
    datasets = _bad_datasets(task)
    expected = _data_messages(task) if cap is None else dict.fromkeys(datasets, cap)
    if cap is not None:
        datasets["valid"], expected["valid"] = collect_demonstrations(task, 20, 0), cap
    for case, demos in datasets.items():
        with pytest.raises(ValueError) as caught:
            make_agent(agent).fit(task, demos, np.random.default_rng(0))
        assert str(caught.value) == expected[case], case


def test_demonstrations_constructor_rejects_out_of_range_and_shapes() -> None:
    task = make_task(BARRIER, horizon=8)
    good = collect_demonstrations(task, 10, 0)
    base = {"env_id": good.env_id, "env_kwargs": good.env_kwargs, "prompts": good.prompts,
            "tokens": good.tokens, "expert_logprobs": good.expert_logprobs, "vocab_size": 3}
    for change, message in [
        ({"tokens": good.tokens + 3}, "tokens must lie in"),
        ({"tokens": good.tokens[:, :, None]}, "tokens must be a 2-D array"),
        ({"tokens": good.tokens[:5]}, "tokens must have shape"),
        ({"expert_logprobs": good.expert_logprobs[:, :4]}, "expert_logprobs must have the shape"),
        ({"expert_logprobs": -good.expert_logprobs + 1}, "expert_logprobs must be log-prob"),
        ({"tokens": good.tokens.astype(float)}, "tokens must hold integers"),
    ]:
        with pytest.raises(ValueError, match=message):
            Demonstrations(**{**base, **change})


# issue 22 item 9: the memory guard bounds a job by this machine's memory over the workers

def test_memory_guard_bounds_a_job_by_available_memory_over_workers(monkeypatch) -> None:
    from evaluation import cli
    from evaluation.cli import sweep as sweep_cli

    monkeypatch.setattr(sweep_cli, "available_memory", lambda: 8 * 2**30)
    monkeypatch.setattr(sweep_cli, "available_cores", lambda: 2)
    argv = ["--env", AR_LINEAR, "--horizons", "1024", "--seeds", "8"]  # 8 jobs
    # 2^17 x 1024 = 2^27 tokens, below the old fixed cap (2^28) but ~10 GB: refused
    with pytest.raises(cli.UsageError) as refused:
        cli.plan_sweep([*argv, "--n-train", str(2**17), "--backend", "serial"])
    message = str(refused.value)
    assert message.startswith("--n-train x the largest horizon: a job holds about 10.5 GB")
    assert "8.0 GB of available memory over 1 parallel job(s)" in message
    assert "\n" not in message
    small = [*argv, "--n-train", str(2**14)]  # 2^24 tokens: about 1.8 GB a job
    cli.plan_sweep([*small, "--backend", "serial"])
    cli.plan_sweep([*small, "--backend", "local"])  # 2 cores: 4 GB each
    cli.plan_sweep([*small, "--backend", "local", "--workers", "4"])  # 2 GB each
    with pytest.raises(cli.UsageError, match=r"over 8 parallel job\(s\) \(1\.0 GB each\)"):
        cli.plan_sweep([*small, "--backend", "local", "--workers", "8"])
    cli.plan_sweep([*argv, "--n-train", str(2**17), "--population"])  # no demonstrations


REPO = Path(__file__).resolve().parents[1]
MEASURE = """
import json, sys
from evaluation.bench.sweep import Job, run_job
oracle = {"best_in_class_hellinger2": 0.1, "oracle_method": "x", "oracle_agreement": 1.0}
row = run_job(Job(sys.argv[1], {}, 4, "robust", 0, 2**18, eval_samples=1000), oracle)
# VmHWM: this image's peak; ru_maxrss would keep the forking parent's (the pytest process)
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps([row["status"], peak]))
"""


@pytest.mark.skipif("not sys.platform.startswith('linux')", reason="/proc/self/status: Linux")
def test_memory_estimate_covers_a_measured_job() -> None:
    """A whole process fitting the hungriest numpy agent measured (robust at H = 4, about 63
    bytes per token over its baseline) on 2^20 tokens peaks below the estimate."""
    import json
    import subprocess
    import sys

    from evaluation.cli.sweep import job_memory

    clean = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}  # no test's settings
    done = subprocess.run([sys.executable, "-c", MEASURE, BARRIER], capture_output=True,
                          text=True, timeout=600, check=True, env=clean, cwd=REPO)
    status, peak_kib = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == "ok"
    assert peak_kib * 1024 < job_memory(2**20) < 2 * peak_kib * 1024


# issue 22 item 10: one-line errors, nothing written

def _corrupt_text(path: Path, column: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE results SET {column} = CAST(x'41ff42' AS TEXT) WHERE rowid = 7")
    conn.close()


@pytest.mark.parametrize("column", ["agent", "job_key", "error"])
def test_store_with_undecodable_text_is_one_line_and_left_untouched(
        full_store: Path, capsys: pytest.CaptureFixture[str], column: str) -> None:
    _corrupt_text(full_store, column)
    before = full_store.read_bytes()
    assert main(["report", "--out", str(full_store.parent)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ntp-bench: error: {full_store} is not a readable result store: "
                          f"Could not decode to UTF-8 column '{column}'")
    assert err.count("\n") == 1
    assert full_store.read_bytes() == before
    assert sorted(p.name for p in full_store.parent.iterdir()) == ["results.sqlite"]
    with ResultStore(full_store) as store:  # a sweep reading the keys: the same error
        if column == "job_key":
            with pytest.raises(ValueError, match="Could not decode to UTF-8 column 'job_key'"):
                store.done_keys()


@pytest.mark.parametrize("readonly", [False, True])
def test_report_on_an_empty_store_writes_nothing(tmp_path: Path, monkeypatch,
                                                 capsys: pytest.CaptureFixture[str],
                                                 readonly: bool) -> None:
    from evaluation.cli import report as report_cli

    store = tmp_path / "results.sqlite"
    store.touch()
    if readonly:
        monkeypatch.setattr(report_cli, "_writable", lambda out: False)
    assert main(["report", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{store} is empty (0 bytes), not a result store: left untouched" in err
    assert err.count("\n") == 1
    assert store.stat().st_size == 0 and [p.name for p in tmp_path.iterdir()] == [
        "results.sqlite"]


@pytest.mark.parametrize("argv, message", [
    (["--agents", ""], "--agents must name at least one agent (e.g. logloss,robust), got ''"),
    (["--agents", " , "], "--agents must name at least one agent (e.g. logloss,robust), got"),
    (["--env-kwargs", ""], "--env-kwargs must be a JSON object, e.g. '{\"weight\": 0.1}' "
                           "(leave the flag out for the defaults), got ''"),
    (["--env-kwargs", "  "], "--env-kwargs must be a JSON object"),
])
def test_empty_agents_or_env_kwargs_are_errors(tmp_path: Path, capsys, argv: list[str],
                                               message: str) -> None:
    out = tmp_path / "never"
    assert main(["sweep", "--env", BARRIER, *argv, "--horizons", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_outputs_get_the_mode_of_the_store(tmp_path: Path) -> None:
    out = tmp_path / "modes"
    argv = ["sweep", "--env", BARRIER, "--env-grid", '{"bias": [0.01, 0.05]}', "--horizons",
            "4", "--seeds", "1", "--population", "--backend", "serial", "--quiet", "--out",
            str(out)]
    old = os.umask(0o022)
    try:
        assert main(argv) == 0
    finally:
        os.umask(old)
    names = ["divergence_vs_horizon.png", "results.csv", "results.sqlite", "worst_case.csv",
             "worst_case_vs_horizon.png"]
    assert sorted(p.name for p in out.iterdir()) == names

    def modes() -> set[int]:
        return {(out / name).stat().st_mode & 0o777 for name in names}

    assert modes() == {0o644}
    (out / "results.sqlite").chmod(0o640)
    assert main(["report", "--out", str(out)]) == 0
    assert modes() == {0o640}
