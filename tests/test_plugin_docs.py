"""A plug-in agent written from docs/plugins.md alone runs in a sweep, scores right and saves."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from brute_force import enumerated_divergences

from evaluation.cli import main
from experts.demonstrations import collect_demonstrations
from ntp_envs import make_task
from ntp_envs.sequence_model import SequenceModel

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
SECTION = "## The agent contract"
FILE_HEADER = "# unigram_bc.py"
ENV, ENV_KWARGS, HORIZON, N_TRAIN, ALPHA = "ntp_envs/ARLinear-v0", {"vocab_size": 3}, 3, 40, 0.5


def _blocks() -> list[str]:
    """The python code blocks of the agent-contract section, in order."""
    section = DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def _write_plugin(folder: Path) -> Path:
    files = [block for block in _blocks() if block.startswith(FILE_HEADER)]
    assert len(files) == 1, f"docs/plugins.md: one python block must start with {FILE_HEADER}"
    path = folder / "unigram_bc.py"
    path.write_text(files[0])
    return path


class _PositionLaw(SequenceModel):
    """``pi_h(a) = table[h, a]``, whatever the prompt and prefix."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.horizon, self.vocab_size = table.shape

    def next_token_logprobs(self, prompts: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        return np.log(np.tile(self.table[prefixes.shape[1]], (len(prompts), 1)))


def test_docs_plugin_sweeps_and_scores_exactly(tmp_path: Path) -> None:
    plugin = _write_plugin(tmp_path)
    out = tmp_path / "out"
    kwargs = '{"vocab_size": 3}'
    assert main(["sweep", "--env", ENV, "--env-kwargs", kwargs, "--agents",
                 f"{plugin}:UnigramBC?alpha={ALPHA}", "--horizons", str(HORIZON), "--seeds", "1",
                 "--n-train", str(N_TRAIN), "--oracle-starts", "2", "--backend", "serial",
                 "--out", str(out), "--quiet"]) == 0
    with sqlite3.connect(out / "results.sqlite") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM results").fetchall()
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok", row["error"]
    assert row["eval_method"] == "enumerate"
    # the job's demonstrations (seed 0), counted here; D_H^2 summed over every sequence
    task = make_task(ENV, horizon=HORIZON, **ENV_KWARGS)
    demos = collect_demonstrations(task, N_TRAIN, np.random.default_rng([0, HORIZON]))
    counts = np.array([[np.sum(demos.tokens[:, h] == a) + ALPHA for a in range(3)]
                       for h in range(HORIZON)])
    truth = enumerated_divergences(task.expert, _PositionLaw(counts / counts.sum(axis=1)[:, None]),
                                   task.prompts)
    assert row["hellinger2"] == pytest.approx(truth["hellinger2"], rel=1e-9, abs=1e-12)
    assert row["tv"] == pytest.approx(truth["tv"], rel=1e-9, abs=1e-12)


def test_docs_save_and_load_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_plugin(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    snippets = [block for block in _blocks() if not block.startswith(FILE_HEADER)]
    assert any("load_policy" in block for block in snippets)
    namespace: dict = {"__name__": "plugins_doc"}
    for block in snippets:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    assert (tmp_path / "unigram.npz").is_file()
    again, task = namespace["again"], namespace["task"]
    prompts = task.prompts.sample(4, np.random.default_rng(1))
    tokens = task.expert.sample(prompts, np.random.default_rng(2))
    np.testing.assert_array_equal(again.sequence_logprob(prompts, tokens),
                                  namespace["policy"].sequence_logprob(prompts, tokens))


def test_docs_plugin_refuses_population_fit(tmp_path: Path) -> None:
    from agents import make_agent

    agent = make_agent(f"{_write_plugin(tmp_path)}:UnigramBC")
    with pytest.raises(ValueError, match="no population fit"):
        agent.fit(make_task(ENV, horizon=HORIZON), None)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        make_agent(f"{tmp_path / 'unigram_bc.py'}:UnigramBC?alpha=0")


def test_next_token_policy_refusals() -> None:
    from agents.base import NextTokenPolicy

    task = make_task(ENV, horizon=HORIZON)

    class NoMethod(NextTokenPolicy):
        pass

    with pytest.raises(TypeError, match="abstract method next_token_logprobs"):
        NoMethod(task)

    class Flat(NextTokenPolicy):
        def next_token_logprobs(self, prompts: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
            return np.full((len(prompts), 2), np.log(0.5))

    assert Flat.kind == "plugin:Flat"
    with pytest.raises(ValueError, match="array name 'horizon' must be a public identifier"):
        Flat(task, None, horizon=np.zeros(2))
    with pytest.raises(ValueError, match="array 'table' must be numeric"):
        Flat(task, None, table=np.array(["a"]))
    with pytest.raises(TypeError, match="policy kind 'linear_ar' is taken by agents.linear_ar"):
        type("Shadow", (Flat,), {"kind": "linear_ar"})
