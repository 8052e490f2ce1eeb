"""Issue 22 item 4: every policy's next-token output is checked (shape, finite, log-normalised,
consistent sequence scores) before it is scored; a violation is a failed row naming the check,
never a number stored ``ok``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from brute_force import enumerated_divergences
from scipy.special import log_softmax

from agents import make_agent
from agents.base import Agent, FittedPolicy
from evaluation.bench import sweep
from evaluation.bench.store import ResultStore
from evaluation.bench.sweep import Job, PolicyOutputError, check_policy_output, run_job
from evaluation.cli import main
from evaluation.score import score
from experts import collect_demonstrations
from ntp_envs import make_task
from ntp_envs.sequence_model import SequenceModel

MIX = "ntp_envs/MixtureProduct-v0"
AR = "ntp_envs/ARLinear-v0"
ORACLE = {"best_in_class_hellinger2": 0.1, "oracle_method": "test", "oracle_agreement": 1.0}


class Faulty(SequenceModel):
    """A uniform policy whose output is broken in one way (``mode``)."""

    def __init__(self, vocab_size: int, horizon: int, mode: str) -> None:
        self.vocab_size, self.horizon, self.mode = vocab_size, horizon, mode

    def next_token_logprobs(self, prompts: Any, prefixes: Any) -> Any:
        n, v = len(prompts), self.vocab_size
        uniform = np.full((n, v), -np.log(v))
        if self.mode == "probabilities":
            return np.exp(uniform)
        if self.mode == "half":
            return uniform + np.log(0.5)
        if self.mode == "wide":
            return np.full((n, v + 1), -np.log(v + 1))
        if self.mode == "short batch":
            return uniform[: max(n - 1, 0)]
        if self.mode == "nan" and prefixes.shape[1] == self.horizon - 1:
            uniform[0, 0] = np.nan
        if self.mode == "plus inf":
            uniform[:, 0] = np.inf
        if self.mode == "text":
            return [["a"] * v] * n
        if self.mode == "raises":
            raise KeyError("unseen context")
        return uniform

    def sequence_logprob(self, prompts: Any, tokens: Any) -> Any:
        total = super().sequence_logprob(prompts, tokens)
        return total * 0.5 if self.mode == "sequence" else total

    def token_logprobs(self, prompts: Any, tokens: Any) -> Any:
        out = super().token_logprobs(prompts, tokens)
        if self.mode == "token values":
            out[:, -1] -= 0.1  # the last position scored apart from next_token_logprobs
        return out[:, :-1] if self.mode == "token shape" else out


class FaultyPolicy(FittedPolicy):
    kind = "test_faulty"

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_arrays(cls, task: Any, arrays: Any, info: Any) -> FittedPolicy:
        raise ValueError("not saved")


class FaultyAgent(Agent):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def fit(self, task: Any, demonstrations: Any, rng: Any = None) -> FittedPolicy:
        return FaultyPolicy(task, Faulty(task.vocab_size, task.horizon, self.mode))


CHECKS = {"probabilities": "normalised", "half": "normalised", "wide": "shape",
          "short batch": "shape", "nan": "finite", "plus inf": "finite", "text": "shape",
          "raises": "callable", "sequence": "consistent", "token shape": "shape",
          "token values": "consistent"}


@pytest.mark.parametrize("mode", list(CHECKS))
def test_a_broken_output_is_a_failed_row_naming_the_check(monkeypatch, mode: str) -> None:
    monkeypatch.setattr(sweep, "make_agent", lambda name: FaultyAgent(mode))
    job = Job(MIX, {}, 4, "faulty", 0, 50)
    row = run_job(job, ORACLE)
    assert row["status"] == "failed"
    first = row["error"].splitlines()[0]
    assert first.startswith("output: PolicyOutputError: ")
    assert f"policy output check {CHECKS[mode]!r} failed" in first
    assert row.get("hellinger2") is None


def test_probabilities_get_a_hint_and_the_row_sum_is_named() -> None:
    task = make_task(MIX, horizon=4)
    with pytest.raises(PolicyOutputError, match="look like probabilities"):
        check_policy_output(task, Faulty(2, 4, "probabilities"), np.random.default_rng(0))
    with pytest.raises(PolicyOutputError, match=r"probability 0\.5 "):
        check_policy_output(task, Faulty(2, 4, "half"), np.random.default_rng(0))


def test_a_policy_of_another_vocabulary_or_horizon_fails_the_shape_check() -> None:
    task = make_task(MIX, horizon=4)
    for vocab, horizon in ((3, 4), (2, 5)):
        with pytest.raises(PolicyOutputError, match="'shape' failed.*vocab_size"):
            check_policy_output(task, Faulty(vocab, horizon, "ok"), np.random.default_rng(0))


PLUGIN = """
    import numpy as np

    from agents.base import Agent, FittedPolicy
    from ntp_envs.sequence_model import SequenceModel


    class Model(SequenceModel):
        def __init__(self, task):
            self.vocab_size, self.horizon = task.vocab_size, task.horizon

        def next_token_logprobs(self, prompts, prefixes):
            return np.full((len(prompts), self.vocab_size), 1.0 / self.vocab_size)


    class Policy(FittedPolicy):
        kind = "test_plugin_probabilities"

        def arrays(self):
            return {}

        @classmethod
        def from_arrays(cls, task, arrays, info):
            raise ValueError("not saved")


    class Probabilities(Agent):
        def fit(self, task, demonstrations, rng=None):
            return Policy(task, Model(task))
"""


def test_cli_sweep_of_a_plugin_returning_probabilities_stores_no_number(tmp_path: Path,
                                                                         capsys) -> None:
    plugin = tmp_path / "probs_plugin.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    out = tmp_path / "out"
    assert main(["sweep", "--env", MIX, "--agents", f"{plugin}:Probabilities", "--horizons",
                 "4,32", "--seeds", "1", "--n-train", "50", "--backend", "serial", "--quiet",
                 "--out", str(out)]) == 1
    assert "2 job(s) failed" in capsys.readouterr().out
    with ResultStore(out / "results.sqlite") as store:
        rows = store.results()
    assert rows["status"].tolist() == ["failed", "failed"]
    assert rows["hellinger2"].isna().all()
    assert rows["error"].str.contains("policy output check 'normalised' failed").all()
    assert pd.read_csv(out / "results.csv")["status"].tolist() == ["failed", "failed"]


def test_score_refuses_a_sequence_model_with_unnormalised_rows() -> None:
    task = make_task(MIX, horizon=4)
    with pytest.raises(ValueError, match="policy output check 'normalised' failed"):
        score(task, Faulty(2, 4, "half"), oracle_starts=1, eval_samples=100)


class Uniform(SequenceModel):
    """A correct plug-in model: log-softmax of arbitrary scores (here uniform-ish)."""

    def __init__(self, vocab_size: int, horizon: int) -> None:
        self.vocab_size, self.horizon = vocab_size, horizon

    def next_token_logprobs(self, prompts: Any, prefixes: Any) -> Any:
        scores = np.stack([np.full(len(prompts), 0.3), prefixes.sum(axis=1) * 0.1], axis=1)
        return log_softmax(scores, axis=1)


def test_a_valid_plugin_is_scored_ok_and_matches_brute_force() -> None:
    task = make_task(MIX, horizon=4)
    model = Uniform(2, 4)
    row = score(task, model, oracle_starts=1, eval_samples=100)
    assert row["status"] == "ok" and row["eval_method"] == "enumerate"
    expected = enumerated_divergences(task.expert, model, task.prompts)
    np.testing.assert_allclose(row["hellinger2"], expected["hellinger2"], rtol=1e-10)


@pytest.mark.parametrize("env_id, agents", [
    (MIX, ["logloss", "robust", "rho", "chunk:2", "chunk-rho:2", "chunk-kr:2"]),
    (AR, ["logloss", "chunk:2"]),
    ("ntp_envs/ParityCoT-v0", ["linear-ar"]),
])
def test_builtin_agents_pass_the_output_check(env_id: str, agents: list[str]) -> None:
    kwargs = {"num_bits": 4, "subset_size": 2} if "Parity" in env_id else {"horizon": 6}
    task = make_task(env_id, **kwargs)
    demos = collect_demonstrations(task, 200, np.random.default_rng(0))
    check_policy_output(task, task.expert, np.random.default_rng(1))
    for name in agents:
        policy = make_agent(name).fit(task, demos, np.random.default_rng(0))
        check_policy_output(task, policy, np.random.default_rng(1))
