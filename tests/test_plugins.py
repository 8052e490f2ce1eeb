"""Plug-in agents and tasks: import paths, entry points of a package installed beside the
suite (built in a temporary directory), Gymnasium ids of another package, and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from agents import agent_names, make_agent
from agents.robust_bc import RobustBC
from evaluation.cli import main
from ntp_envs import make_task
from ntp_envs.plugins import parse_spec, split_specs
from ntp_envs.task import SequenceTask

REPO = Path(__file__).resolve().parents[1]
P, MEMBERS = 0.7, (0.3, 0.5, 0.9)  # the coin task: expert Bernoulli(P), class of 3 coins

PACKAGE = {
    "myplug/__init__.py": """
        import gymnasium as gym

        if "myplug/Coin-v0" not in gym.registry:
            gym.register(id="myplug/Coin-v0", entry_point="myplug.tasks:CoinEnv")
            gym.register(id="myplug/NoTask-v0", entry_point="myplug.tasks:NoTaskEnv")
    """,
    "myplug/tasks.py": """
        import gymnasium as gym
        import numpy as np

        from ntp_envs.base import SequenceEnv
        from ntp_envs.finite_class import FiniteClass
        from ntp_envs.sequence_model import FinitePrompts, FiniteStateModel, FiniteStateTables
        from ntp_envs.task import SequenceTask

        PROMPTS = FinitePrompts(np.zeros((1, 1), dtype=np.int64), np.zeros(1))

        def coin(q, horizon):
            logp = np.log([[[[1.0 - q, q]]]])
            return FiniteStateModel(FiniteStateTables(logp, 0, horizon), PROMPTS)

        def make_coin_task(horizon=4, p=0.7):
            members = FiniteClass(tuple(coin(q, horizon) for q in (0.3, 0.5, 0.9)),
                                  ("q0.3", "q0.5", "q0.9"))
            return SequenceTask(env_id="coin", params={"horizon": horizon, "p": p},
                                horizon=horizon, vocab_size=2, prompt_vocab_size=1,
                                prompts=PROMPTS, expert=coin(p, horizon), learner_class=members)

        class CoinEnv(SequenceEnv):
            def __init__(self, horizon=4, p=0.7, render_mode=None):
                super().__init__(make_coin_task(horizon, p), render_mode)

        class NoTaskEnv(gym.Env):
            action_space = gym.spaces.Discrete(2)
            observation_space = gym.spaces.Discrete(2)
    """,
    "myplug/agents.py": """
        from dataclasses import dataclass

        from agents.base import Agent
        from agents.policies import FiniteMemberPolicy

        @dataclass
        class PickMember(Agent):
            index: int = 0
            name: str = "pick"

            def fit(self, task, demonstrations, rng=None):
                return FiniteMemberPolicy(task, self.index, info={"agent": self.name})

        def not_an_agent():
            return 42
    """,
    "myplug-0.1.dist-info/METADATA": """
        Metadata-Version: 2.1
        Name: myplug
        Version: 0.1
    """,
    "myplug-0.1.dist-info/entry_points.txt": """
        [ntp_gym.agents]
        pick = myplug.agents:PickMember

        [ntp_gym.tasks]
        coin = myplug.tasks:make_coin_task
    """,
}


def hellinger2_coins(p: float, q: float, horizon: int) -> float:
    """Closed form: i.i.d. coins, ``2 - 2 BC^H`` with the per-token coefficient."""
    return 2.0 - 2.0 * (math.sqrt(p * q) + math.sqrt((1 - p) * (1 - q))) ** horizon


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the package and its ``.dist-info`` (what pip would install)."""
    root = tmp_path_factory.mktemp("site")
    for name, text in PACKAGE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(site))
    return site


def ntp_bench(site: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``ntp-bench`` in a fresh process that sees the package (workers inherit PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "evaluation.cli", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_spec_grammar() -> None:
    spec = parse_spec('pkg.mod:Cls?hidden=32&lr=1e-3&arch=[32,32]&act=ReLU&on=true', "--agents")
    assert spec.target == "pkg.mod:Cls" and spec.is_import_path
    assert spec.kwargs == {"hidden": 32, "lr": 1e-3, "arch": [32, 32], "act": "ReLU", "on": True}
    assert split_specs("logloss, pkg.mod:Cls?arch=[32,32],robust", ",") == [
        "logloss", "pkg.mod:Cls?arch=[32,32]", "robust"]
    assert split_specs("rho-select:a+b?x=[1+2]", "+") == ["rho-select:a", "b?x=[1+2]"]
    with pytest.raises(ValueError, match="--agents: keyword arguments must read"):
        parse_spec("pkg.mod:Cls?hidden", "--agents")


def test_import_path_agent_with_kwargs() -> None:
    agent = make_agent("agents.robust_bc:RobustBC?holdout_fraction=0.3&gamma_grid=[0.1,0.01]")
    assert isinstance(agent, RobustBC)
    assert agent.holdout_fraction == 0.3 and agent.gamma_grid == [0.1, 0.01]
    here = Path(__file__).resolve().parents[1] / "examples" / "custom_agent.py"
    assert type(make_agent(f"{here}:GRUBC?hidden=4")).__name__ == "GRUBC"


@pytest.mark.parametrize(("spec", "message"), [
    ("nope_pkg.learners:MyBC", "--agents: cannot import 'nope_pkg.learners' "
                               "(ModuleNotFoundError"),
    ("agents.robust_bc:NoSuch", "--agents: module 'agents.robust_bc' has no attribute 'NoSuch'"),
    ("collections:OrderedDict", "--agents: 'collections:OrderedDict' gave a OrderedDict, which "
                                "is not an agent"),
    ("math:pi", "--agents: 'math:pi' is a float, not an Agent subclass"),
    ("agents.robust_bc:RobustBC?bogus=1", "--agents: 'agents.robust_bc:RobustBC' cannot be "
                                          "called with bogus=1"),
    ("no-such-agent", "--agents: unknown agent 'no-such-agent'"),
])
def test_bad_agent_spec_is_one_line(spec: str, message: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sweep", "--env", "ntp_envs/ARLinear-v0", "--agents", f"logloss,{spec}",
            "--horizons", "4", "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_env_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--env", "nope_pkg.tasks:make", "--horizons", "4",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--env: cannot import 'nope_pkg.tasks'" in err and err.count("\n") == 1
    assert main(["sweep", "--env", "NoSuchEnv-v0", "--horizons", "4",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "--env: 'NoSuchEnv-v0' is not a known task" in capsys.readouterr().err


def test_entry_points_and_gym_ids(installed: Path) -> None:
    assert "pick" in agent_names()
    agent = make_agent("pick?index=2")
    assert type(agent).__name__ == "PickMember" and agent.index == 2
    for env_id in ("coin", "myplug.tasks:make_coin_task", "myplug:myplug/Coin-v0",
                   "myplug/Coin-v0"):  # entry point, import path, Gymnasium id (module:id, id)
        task = make_task(env_id, horizon=5)
        assert isinstance(task, SequenceTask) and task.horizon == 5
    with pytest.raises(ValueError, match="not a SequenceTask"):
        make_task("myplug/NoTask-v0")
    with pytest.raises(ValueError, match="gave a int, which is not an agent"):
        make_agent("myplug.agents:not_an_agent")


def _check_coin_rows(out: Path, horizons: tuple[int, ...]) -> None:
    frame = pd.read_csv(out / "results.csv")
    assert (frame["status"] == "ok").all() and len(frame) == 2 * len(horizons)
    for _, row in frame.iterrows():
        h = int(row["horizon"])
        best = min(hellinger2_coins(P, q, h) for q in MEMBERS)
        assert row["best_in_class_hellinger2"] == pytest.approx(best, rel=1e-9)
        # pick?index=2 is the 0.9 coin; logloss picks the KL projection, the 0.5 coin
        q = 0.9 if row["agent"].startswith("pick") else 0.5
        assert row["hellinger2"] == pytest.approx(hellinger2_coins(P, q, h), rel=1e-9)
        assert row["c_apx"] == pytest.approx(hellinger2_coins(P, q, h) / best, rel=1e-9)


def test_installed_package_runs_in_sweep_on_local_pool(site: Path, tmp_path: Path) -> None:
    help_text = ntp_bench(site, "sweep", "--help").stdout
    assert "pick" in help_text.replace("\n", " ")  # entry-point agents listed by name
    out = tmp_path / "local"
    done = ntp_bench(site, "sweep", "--env", "coin", "--agents", "pick?index=2,logloss",
                     "--horizons", "3,6", "--seeds", "1", "--n-train", "50", "--population",
                     "--backend", "local", "--workers", "2", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    _check_coin_rows(out, (3, 6))


@pytest.mark.slow
def test_installed_package_runs_in_sweep_on_ray(site: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    done = ntp_bench(site, "sweep", "--env", "coin", "--agents", "pick?index=2,logloss",
                     "--horizons", "3,6", "--seeds", "1", "--population", "--backend", "ray",
                     "--workers", "2", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    _check_coin_rows(out, (3, 6))


def test_custom_agent_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worked example: its GRU sweeps beside logloss and robust on both envs, one report."""
    monkeypatch.chdir(REPO)
    example = make_agent(f"{REPO / 'examples' / 'custom_agent.py'}:GRUBC")
    out = tmp_path / "example"
    assert sys.modules[type(example).__module__].main(
        ["--out", str(out), "--horizons", "4", "--seeds", "1", "--backend", "serial"]) == 0
    frame = pd.read_csv(out / "results.csv")
    assert (frame["status"] == "ok").all() and (frame["eval_method"] == "enumerate").all()
    gru = frame[frame["agent"] == "examples/custom_agent.py:GRUBC?hidden=16"]
    assert sorted(gru["env_id"]) == ["ntp_envs/ARLinear-v0", "ntp_envs/MixtureProduct-v0"]
    assert set(frame["agent"]) == {*gru["agent"], "logloss", "robust"}
    # improper: the recurrent net fits the mixture better than any product can
    mixture = gru[gru["env_id"] == "ntp_envs/MixtureProduct-v0"].iloc[0]
    assert mixture["hellinger2"] < mixture["best_in_class_hellinger2"]
    assert (out / "divergence_vs_horizon.png").stat().st_size > 10_000


EXITING = {
    "exit_at_import.py": "import sys\nsys.exit(3)\n",
    "exit_with_text.py": "import sys\nsys.exit('bye from the plug-in')\n",
    "exit_when_built.py": textwrap.dedent("""
        import sys
        from agents.base import Agent

        class Quits(Agent):
            def __init__(self):
                sys.exit(5)

            def fit(self, task, demonstrations, rng=None):
                raise AssertionError

        def make_task(horizon=4):
            sys.exit(6)
    """),
}


@pytest.mark.parametrize(("flag", "target", "message"), [
    ("--agents", "exit_at_import.py:Agent", "--agents: cannot import '{path}' (it called "
                                            "sys.exit(3))"),
    ("--agents", "exit_with_text.py:Agent", "--agents: cannot import '{path}' (it called "
                                            "sys.exit('bye from the plug-in'))"),
    ("--env", "exit_at_import.py:make", "--env: cannot import '{path}' (it called "
                                        "sys.exit(3))"),
    ("--agents", "exit_when_built.py:Quits", "--agents: '{path}:Quits' exits when called (it "
                                             "called sys.exit(5))"),
    ("--env", "exit_when_built.py:make_task", "'{path}:make_task' exits when called (it called "
                                              "sys.exit(6))"),
])
def test_plugin_calling_sys_exit_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             flag: str, target: str, message: str) -> None:
    for name, text in EXITING.items():
        (tmp_path / name).write_text(text)
    spec = str(tmp_path / target)
    argv = {"--agents": ["--env", "ntp_envs/MixtureProduct-v0", "--agents", spec],
            "--env": ["--env", spec]}[flag]
    out = tmp_path / "never"
    assert main(["sweep", *argv, "--horizons", "4", "--backend", "serial", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntp-bench: error: ") and err.count("\n") == 1
    assert message.format(path=spec.rpartition(":")[0]) in err
    assert not out.exists()


def test_plugin_calling_sys_exit_in_fit_fails_its_rows_only(tmp_path: Path) -> None:
    plugin = tmp_path / "exit_in_fit.py"
    plugin.write_text(textwrap.dedent("""
        import sys
        from agents.base import Agent

        class ExitsInFit(Agent):
            def fit(self, task, demonstrations, rng=None):
                sys.exit(7)
    """))
    out = tmp_path / "out"
    assert main(["sweep", "--env", "ntp_envs/MixtureProduct-v0", "--agents",
                 f"logloss,{plugin}:ExitsInFit", "--horizons", "4", "--seeds", "1",
                 "--n-train", "50", "--backend", "serial", "--quiet", "--out", str(out)]) == 1
    frame = pd.read_csv(out / "results.csv").set_index("agent")
    assert frame.loc["logloss", "status"] == "ok"
    failed = frame.loc[f"{plugin}:ExitsInFit"]
    assert failed["status"] == "failed" and failed["error"].startswith("fit: SystemExit: 7")
