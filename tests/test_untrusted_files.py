"""Untrusted files given to ``ntp-bench evaluate``: a policy file's metadata never imports code,
a policy is scored only against the task it was fitted on, oversized archives are refused
before they are inflated, malformed pickles, spaces and weights are one-line errors naming
``--policy``, and ``--out`` problems are one-line errors before anything is written."""

from __future__ import annotations

import json
import os
import resource
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th

from agents import load_policy, make_agent
from evaluation.cli import main
from evaluation.score import score
from ntp_envs import make_task
from ntp_envs.archive import load_archive, save_archive
from ntp_envs.vector import SequenceVecEnv

ARLINEAR = "ntp_envs/ARLinear-v0"
ON_ARLINEAR = ["--env", ARLINEAR, "--env-kwargs", '{"horizon": 4}']


def _evaluate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit status and stderr of ``ntp-bench evaluate ARGV`` (2 oracle starts: fast)."""
    status = main(["evaluate", *argv, "--oracle-starts", "2"])
    return status, capsys.readouterr().err


def _one_line_error(status: int, err: str, *parts: str) -> None:
    assert status == 2, err
    assert err.startswith("ntp-bench: error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A suite policy fitted on ARLinear-v0 at horizon 4 (default kwargs otherwise)."""
    task = make_task(ARLINEAR, horizon=4)
    return make_agent("logloss").fit(task, None).save(
        tmp_path_factory.mktemp("suite") / "good.npz")


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SB3 PPO model (untrained) saved on ARLinear-v0's env at horizon 4."""
    from stable_baselines3 import PPO

    path = tmp_path_factory.mktemp("sb3") / "ppo.zip"
    task = make_task(ARLINEAR, horizon=4)
    PPO("MlpPolicy", SequenceVecEnv(task, 2), n_steps=8, batch_size=8, device="cpu",
        policy_kwargs={"net_arch": [8]}).save(path)
    return path


def _with_metadata(source: Path, target: Path, **changes: Any) -> Path:
    arrays, meta = load_archive(source)
    return save_archive(target, arrays, {**meta, **changes})


# ------------------------------------------------------------ item 1: metadata imports nothing


@pytest.mark.parametrize("with_env", [False, True], ids=["no-env", "with-env"])
def test_policy_metadata_never_runs_code(suite_file: Path, with_env: bool, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "pwned"
    touch = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    (tmp_path / "evil_task.py").write_text(touch + f"def make(**kw):\n    {touch}")
    specs = [("os:system", {"command": f"touch {marker}"}),  # the file
             (f"{tmp_path / 'evil_task.py'}:make", {}),  # a Python file by path
             ("evil_task:make", {}),  # a module on sys.path
             ("CartPole-v1", {})]  # another package's Gymnasium id
    for i, (env_id, env_kwargs) in enumerate(specs):
        bad = _with_metadata(suite_file, tmp_path / f"e{i}.npz", env_id=env_id,
                             env_kwargs=env_kwargs)
        with pytest.raises(ValueError, match="not a suite env"):
            load_policy(bad)
        status, err = _evaluate(capsys, "--policy", str(bad), *(ON_ARLINEAR if with_env else []))
        expected = ("fitted on", "not on the task given") if with_env else (
            "not a suite env", "give --env")
        _one_line_error(status, err, "--policy: ", repr(env_id), *expected)
        assert not marker.exists(), env_id
    assert "evil_task" not in sys.modules


def test_plugin_task_policy_loads_only_with_its_env(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A plug-in task's policy names the plug-in: the user's ``--env`` builds it, and it must
    be the file's (same spec, same kwargs)."""
    plugin = tmp_path / "arl_task.py"
    spec = f"{plugin}:make"
    plugin.write_text(textwrap.dedent(f"""
        import dataclasses
        from ntp_envs import make_task

        def make(horizon=4):
            task = make_task("ntp_envs/ARLinear-v0", horizon=horizon)
            return dataclasses.replace(task, env_id={spec!r}, params={{"horizon": horizon}})
    """))
    task = make_task(spec, horizon=3)
    path = make_agent("logloss").fit(task, None).save(tmp_path / "plug.npz")
    _one_line_error(*_evaluate(capsys, "--policy", str(path)), "not a suite env", "give --env")
    _one_line_error(*_evaluate(capsys, "--policy", str(path), "--env", spec, "--env-kwargs",
                               '{"horizon": 2}'), "fitted on", '"horizon": 3')
    status, err = _evaluate(capsys, "--policy", str(path), "--env", spec, "--env-kwargs",
                            '{"horizon": 3}')
    assert status == 0, err


# ----------------------------------------------------- item 5: the file's task is the task


@pytest.mark.parametrize(("env_id", "kwargs"), [
    ("ntp_envs/MixtureProduct-v0", {"horizon": 4}),  # same vocabulary and horizon
    (ARLINEAR, {"horizon": 4, "task_seed": 7}),  # another expert drawn
    (ARLINEAR, {"horizon": 4, "misspecification": 0.25}),
])
def test_suite_policy_refuses_another_task(suite_file: Path, env_id: str, kwargs: dict,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="fitted on 'ntp_envs/ARLinear-v0'"):
        load_policy(suite_file, make_task(env_id, **kwargs))
    status, err = _evaluate(capsys, "--policy", str(suite_file), "--env", env_id,
                            "--env-kwargs", json.dumps(kwargs))
    _one_line_error(status, err, "--policy: ", "fitted on 'ntp_envs/ARLinear-v0'",
                    f"not on the task given: {env_id!r}")
    with pytest.raises(ValueError, match="policy: the policy was fitted on 'ntp_envs/ARL"):
        score(make_task(env_id, **kwargs), load_policy(suite_file), oracle_starts=2)


def test_suite_policy_accepts_the_same_instance_spelled_otherwise(
        suite_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Defaults spelled out and rendering-only kwargs name the same instance."""
    plain = load_policy(suite_file)
    task = make_task(ARLINEAR, horizon=4, task_seed=0, misspecification=0.5,
                     render_mode="ansi")
    loaded = load_policy(suite_file, task)
    assert loaded.task is task
    prompts = np.zeros((3, 1), dtype=np.int64)
    prefixes = np.array([[0, 1], [1, 1], [1, 0]])
    assert np.array_equal(loaded.next_token_logprobs(prompts, prefixes),
                          plain.next_token_logprobs(prompts, prefixes))
    status, err = _evaluate(capsys, "--policy", str(suite_file), "--env", ARLINEAR,
                            "--env-kwargs", '{"horizon": 4, "task_seed": 0}')
    assert status == 0, err


# ------------------------------------------------------------- item 3: untrusted archives


def _rewrite_zip(source: Path, target: Path, compress: int = zipfile.ZIP_STORED,
                 **entries: bytes) -> Path:
    """``source`` with the named entries replaced."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", compress) as new:
        for info in old.infolist():
            new.writestr(info.filename, entries.get(info.filename.replace(".", "_"),
                                                    old.read(info.filename)))
    return target


def test_sb3_zip_bomb_is_refused_before_inflating(ppo_zip: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A ``data`` entry that inflates to 64 MiB (it compresses to 64 KiB) is refused from its
    declared size: the process never holds more than a few MiB for it."""
    with zipfile.ZipFile(ppo_zip) as archive:
        data = json.loads(archive.read("data"))
    padded = json.dumps({**data, "pad": " " * 2**26}).encode()
    bomb = _rewrite_zip(ppo_zip, tmp_path / "bomb.zip", zipfile.ZIP_DEFLATED, data=padded)
    del padded
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    try:
        status, err = _evaluate(capsys, "--policy", str(bomb), *ON_ARLINEAR)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_line_error(status, err, "--policy: ", "entry 'data' inflates to 67", "at most")
    assert peak < 2**23, peak


def test_npz_bomb_is_refused_before_inflating(suite_file: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A suite policy whose (compressed) arrays inflate beyond the policy cap (lowered here to
    1 MiB; 4 MiB of zeros compress to 4 KiB) is refused before anything is inflated."""
    import ntp_envs.archive

    monkeypatch.setattr(ntp_envs.archive, "MAX_POLICY_BYTES", 2**20)
    arrays, meta = load_archive(suite_file)
    bomb = save_archive(tmp_path / "bomb.npz", {**arrays, "pad": np.zeros(2**19)}, meta,
                        compress=True)
    assert bomb.stat().st_size < 2**16
    with pytest.raises(ValueError, match="inflate to 419"):
        load_policy(bomb)
    status, err = _evaluate(capsys, "--policy", str(bomb))
    _one_line_error(status, err, "--policy: ", "at most 1048576 bytes")
    assert load_policy(suite_file).kind == "linear_softmax"  # a real policy is far below it


def test_archive_entries_other_than_stored_or_deflated_are_refused(
        suite_file: Path, tmp_path: Path) -> None:
    """A bzip2 or lzma entry may inflate a whole chunk at once: refused, whatever its size."""
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        bad = _rewrite_zip(suite_file, tmp_path / f"{method}.npz", method)
        with pytest.raises(ValueError, match=f"compression method {method}"):
            load_policy(bad)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def _torch_bytes(obj: Any, path: Path) -> bytes:
    th.save(obj, path)
    return path.read_bytes()


def test_sb3_zip_with_a_malicious_or_foreign_policy_pth(ppo_zip: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    marker = tmp_path / "ran"
    payloads = {"pickle": _torch_bytes(_Evil(marker), tmp_path / "evil.pt"),
                "junk": b"not a torch file at all",
                "list": _torch_bytes([1, 2, 3], tmp_path / "list.pt")}
    for name, payload in payloads.items():
        bad = _rewrite_zip(ppo_zip, tmp_path / f"{name}.zip", policy_pth=payload)
        status, err = _evaluate(capsys, "--policy", str(bad), *ON_ARLINEAR)
        _one_line_error(status, err, "--policy: ", "policy.pth")
    assert not marker.exists()


def _data_changes() -> dict[str, Any]:
    return {
        "nvec-list": lambda d: d["observation_space"].update(nvec=[4, 5, 3, 3, 3, 3]),
        "nvec-text": lambda d: d["observation_space"].update(nvec="[4 five 3]"),
        "nvec-huge": lambda d: d["observation_space"].update(nvec="[1e999 5 3 3 3 3]"),
        "n-infinite": lambda d: d["action_space"].update(n=float("inf")),
        "n-list": lambda d: d["action_space"].update(n=[2]),
        "n-fraction": lambda d: d["action_space"].update(n=2.5),
        "space-text": lambda d: d.update(observation_space="MultiDiscrete"),
        "kwargs-list": lambda d: d.update(policy_kwargs=[1]),
    }


@pytest.mark.parametrize("change", sorted(_data_changes()))
def test_sb3_zip_with_odd_spaces(ppo_zip: Path, change: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with zipfile.ZipFile(ppo_zip) as archive:
        data = json.loads(archive.read("data"))
    _data_changes()[change](data)
    bad = _rewrite_zip(ppo_zip, tmp_path / "odd.zip", data=json.dumps(data).encode())
    status, err = _evaluate(capsys, "--policy", str(bad), *ON_ARLINEAR)
    _one_line_error(status, err, "--policy: ")
    assert "Traceback" not in err


def test_sb3_zip_not_json_or_damaged(ppo_zip: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cases = {"list.zip": _rewrite_zip(ppo_zip, tmp_path / "list.zip", data=b"[1, 2]"),
             "text.zip": _rewrite_zip(ppo_zip, tmp_path / "text.zip", data=b"\xff\xfe{"),
             "cut.zip": tmp_path / "cut.zip"}
    raw = ppo_zip.read_bytes()
    start = raw.index(b"policy.pth") + 200  # inside policy.pth's stored bytes
    cases["cut.zip"].write_bytes(raw[:start] + b"\0" * 64 + raw[start + 64:])  # CRC mismatch
    for name, path in cases.items():
        status, err = _evaluate(capsys, "--policy", str(path), *ON_ARLINEAR)
        _one_line_error(status, err, "--policy: ", name)


class FakeSpace:
    """Pickled as an inert object: what the loader reads ``nvec`` / ``n`` from."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class FakePolicy:
    """Pickled like a whole ``nn.Module`` (imitation's ``save_policy``): inert on load."""

    def __init__(self, observation_space: Any, action_space: Any, **fields: Any) -> None:
        self._parameters: dict = {}
        self._modules: dict = {}
        self.observation_space = observation_space
        self.action_space = action_space
        self.__dict__.update(fields)


def _wrong_files(good: dict[str, th.Tensor]) -> dict[str, Any]:
    nan = {k: v.clone() for k, v in good.items()}
    nan["action_net.weight"][0, 0] = float("nan")
    wide = {**good, "mlp_extractor.policy_net.0.weight": th.zeros(2**22, 0),
            "mlp_extractor.policy_net.0.bias": th.zeros(2**22)}
    return {
        "state-int": {"state_dict": 5},
        "state-text-values": {"state_dict": {"action_net.weight": "x"}},
        "state-scalar": {"state_dict": {"action_net.weight": th.tensor(1.0)}},
        "state-int-keys": {"state_dict": {1: th.zeros(2, 2)}},
        "data-list": {"state_dict": good, "data": [1]},
        "state-nan": {"state_dict": nan},
        "state-huge-width": {"state_dict": wide},
        "nvec-inf": FakePolicy(FakeSpace(nvec=np.array([np.inf])), None),
        "nvec-text": FakePolicy(FakeSpace(nvec=np.array(["x"])), None),
        "nvec-object": FakePolicy(FakeSpace(nvec=FakeSpace()), None),
        "n-text": FakePolicy(None, FakeSpace(n="two")),
        "modules-list": FakePolicy(None, None, _modules=[1]),
    }


WRONG_FILES = ("state-int", "state-text-values", "state-scalar", "state-int-keys", "data-list",
               "state-nan", "state-huge-width", "nvec-inf", "nvec-text", "nvec-object",
               "n-text", "modules-list")


@pytest.mark.parametrize("case", WRONG_FILES)
def test_torch_policy_file_with_wrong_contents(ppo_zip: Path, case: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from stable_baselines3 import PPO

    good = PPO.load(ppo_zip, device="cpu").policy.state_dict()
    path = tmp_path / "policy.pt"
    files = _wrong_files(good)
    assert sorted(files) == sorted(WRONG_FILES)
    th.save(files[case], path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    status, err = _evaluate(capsys, "--policy", str(path), *ON_ARLINEAR)
    _one_line_error(status, err, "--policy: ")
    assert "Traceback" not in err
    if case == "state-huge-width":  # refused from its shapes: no 2**22-wide layer is built
        assert "takes 0 inputs" in err
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 2**17


def test_torch_policy_file_too_large_is_refused(ppo_zip: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import ntp_envs.archive

    monkeypatch.setattr(ntp_envs.archive, "MAX_POLICY_BYTES", 1024)
    for path in (ppo_zip, tmp_path / "policy.pt"):
        if path.suffix == ".pt":
            from stable_baselines3 import PPO

            PPO.load(ppo_zip, device="cpu").policy.save(path)
        status, err = _evaluate(capsys, "--policy", str(path), *ON_ARLINEAR)
        _one_line_error(status, err, "--policy: ", "at most 1024 bytes")


# ----------------------------------------------------------- item 10: evaluate --out errors


def test_evaluate_out_errors_are_one_line(suite_file: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: the folder reads as read-only to the check
        real_access = os.access

        def access(path: Any, mode: int, **kw: Any) -> bool:
            inside = Path(path).absolute().is_relative_to(read_only)
            return False if inside and mode & os.W_OK else real_access(path, mode, **kw)

        monkeypatch.setattr(os, "access", access)
    cases = [(str(a_file), f"--out {a_file} is a file, not a folder"),
             (str(a_file / "sub"), f"--out {a_file / 'sub'}: {a_file} is not a folder"),
             (str(read_only), f"--out {read_only} is not writable"),
             (str(read_only / "sub" / "deeper"), f"--out {read_only / 'sub' / 'deeper'} is not "
                                                 f"writable ({read_only} is read-only)"),
             ("x" * 300, "File name too long"),
             (str(tmp_path / ("y" * 200) / ("z" * 300)), "File name too long"),
             ("", "--out must name a folder, got ''")]
    try:
        for out, message in cases:
            status, err = _evaluate(capsys, "--policy", str(suite_file), "--out", out)
            _one_line_error(status, err, message)
        assert a_file.read_text() == "keep me"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "ro"]
        assert not any(read_only.iterdir())
    finally:
        read_only.chmod(0o755)
