"""``evaluation.score`` and ``ntp-bench evaluate``: any policy scored like a sweep row, checked
against brute-force enumeration of the sequence laws computed here."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch as th
from scipy.special import comb

from agents import make_agent
from evaluation.bench.store import ResultStore
from evaluation.cli import main
from evaluation.score import score
from experts import collect_demonstrations
from ntp_envs import make_task
from ntp_envs.base import encode_observations
from ntp_envs.task import SequenceTask
from ntp_envs.vector import SequenceVecEnv

ARLINEAR = "ntp_envs/ARLinear-v0"


def brute_force(task: SequenceTask, seq_logprob) -> tuple[float, float]:  # noqa: ANN001
    """``(D_H^2, KL(P* || Q))`` summed over every (context, sequence)."""
    seqs = np.array(list(itertools.product(range(task.vocab_size), repeat=task.horizon)))
    hellinger2 = kl = 0.0
    for context, log_mu in zip(task.prompts.contexts, task.prompts.log_probs, strict=True):
        x = np.repeat(context[None], len(seqs), axis=0)
        log_p = task.expert.sequence_logprob(x, seqs)
        log_q = seq_logprob(x, seqs)
        p, q = np.exp(log_p), np.exp(log_q)
        hellinger2 += math.exp(log_mu) * float(((np.sqrt(p) - np.sqrt(q)) ** 2).sum())
        kl += math.exp(log_mu) * float((p * (log_p - log_q))[p > 0].sum())
    return hellinger2, kl


def sb3_seq_logprob(task: SequenceTask, policy) -> callable:  # noqa: ANN001
    """Sequence log-likelihoods from SB3's own action distribution at the env observations."""
    def fn(x: np.ndarray, seqs: np.ndarray) -> np.ndarray:
        total = np.zeros(len(seqs))
        with th.no_grad():
            for h in range(seqs.shape[1]):
                obs = th.as_tensor(encode_observations(task, x, seqs[:, :h]))
                probs = policy.get_distribution(obs).distribution.probs.double().numpy()
                total += np.log(probs[np.arange(len(seqs)), seqs[:, h]])
        return total
    return fn


def test_score_suite_policy_and_store(tmp_path: Path) -> None:
    task = make_task(ARLINEAR, horizon=4, misspecification=0.5)
    policy = make_agent("logloss").fit(task, None)
    with ResultStore(tmp_path / "results.sqlite") as store:
        row = score(task, policy, label="mine", oracle_starts=4, store=store)
        stored = store.results().iloc[0]
    hellinger2, kl = brute_force(task, policy.sequence_logprob)
    assert row["status"] == "ok" and row["eval_method"] == "enumerate"
    assert row["hellinger2"] == pytest.approx(hellinger2, rel=1e-10)
    assert row["kl"] == pytest.approx(kl, rel=1e-10)
    assert row["n_train"] == -1 and stored["agent"] == "mine"
    assert stored["hellinger2"] == row["hellinger2"] and stored["c_apx"] == row["c_apx"]


class ConstantCoin(th.nn.Module):
    """Logits of an i.i.d. coin ``q``, in the causal (whole sequence) or next-token form."""

    def __init__(self, q: float, causal: bool) -> None:
        super().__init__()
        self.logits = th.nn.Parameter(th.log(th.tensor([1 - q, q], dtype=th.float64)))
        self.causal = causal

    def forward(self, prompts: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        shape = (*tokens.shape, 2) if self.causal else (len(prompts), 2)
        return self.logits.expand(shape) + 3.0  # unnormalised


class DuckCoin:
    """Not a SequenceModel: just ``vocab_size``, ``horizon`` and ``next_token_logprobs``."""

    def __init__(self, q: float, horizon: int) -> None:
        self.q, self.vocab_size, self.horizon = q, 2, horizon

    def next_token_logprobs(self, prompts: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        return np.tile(np.log([1 - self.q, self.q]) - 1.0, (len(prompts), 1))


@pytest.mark.parametrize(("make", "causal"), [(lambda q, h: ConstantCoin(q, True), True),
                                             (lambda q, h: ConstantCoin(q, False), False),
                                             (DuckCoin, False)])
def test_adapters_against_the_count_closed_form(make, causal: bool) -> None:  # noqa: ANN001
    horizon, q, (w, p0, p1) = 8, 0.6, (0.05, 0.2, 0.8)  # MixtureProduct's defaults
    task = make_task("ntp_envs/MixtureProduct-v0", horizon=horizon)
    row = score(task, make(q, horizon), causal=causal, oracle_starts=4)
    k = np.arange(horizon + 1)
    expert = (1 - w) * p0**k * (1 - p0) ** (horizon - k) + w * p1**k * (1 - p1) ** (horizon - k)
    coin = q**k * (1 - q) ** (horizon - k)
    exact = float((comb(horizon, k) * (np.sqrt(expert) - np.sqrt(coin)) ** 2).sum())
    assert row["hellinger2"] == pytest.approx(exact, rel=1e-9)


def _evaluate(policy_file: Path, out: Path, horizon: int = 4, **extra: str) -> list[str]:
    argv = ["evaluate", "--env", ARLINEAR, "--env-kwargs", f'{{"horizon": {horizon}}}',
            "--policy", str(policy_file), "--oracle-starts", "4", "--out", str(out)]
    return argv + [x for kv in extra.items() for x in kv]


def _stored_row(out: Path) -> dict:
    with ResultStore(out / "results.sqlite") as store:
        frame = store.results()
    assert len(frame) == 1
    return frame.iloc[0].to_dict()


def test_evaluate_sb3_ppo_trained_from_scratch(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    task = make_task(ARLINEAR, horizon=4)
    model = PPO("MlpPolicy", SequenceVecEnv(task, 4), n_steps=32, batch_size=64, n_epochs=2,
                seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    model.learn(256)
    model.save(tmp_path / "ppo.zip")
    assert main(_evaluate(tmp_path / "ppo.zip", tmp_path / "out")) == 0
    row = _stored_row(tmp_path / "out")
    hellinger2, kl = brute_force(task, sb3_seq_logprob(task, model.policy))
    assert row["hellinger2"] == pytest.approx(hellinger2, rel=1e-6)
    assert row["kl"] == pytest.approx(kl, rel=1e-6)
    assert row["agent"] == "ppo.zip" and row["eval_method"] == "enumerate"


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # imitation's BC
@pytest.mark.parametrize("how", ["imitation.util.save_policy", "sb3 policy.save"])
def test_evaluate_saved_imitation_bc_policy(how: str, tmp_path: Path) -> None:
    from imitation.algorithms import bc
    from imitation.util import util

    task = make_task(ARLINEAR, horizon=4)
    demos = collect_demonstrations(task, 200, np.random.default_rng(0))
    env = SequenceVecEnv(task, 1)
    trainer = bc.BC(observation_space=env.observation_space, action_space=env.action_space,
                    demonstrations=demos.to_transitions(task), rng=np.random.default_rng(0),
                    device="cpu")
    trainer.train(n_epochs=1, progress_bar=False)
    path = tmp_path / "bc_policy.pt"
    if how == "sb3 policy.save":
        trainer.policy.save(path)
    else:
        util.save_policy(trainer.policy, path)
    assert main(_evaluate(path, tmp_path / "out")) == 0
    hellinger2, _ = brute_force(task, sb3_seq_logprob(task, trainer.policy))
    assert _stored_row(tmp_path / "out")["hellinger2"] == pytest.approx(hellinger2, rel=1e-6)


def test_evaluate_suite_npz_names_its_task(tmp_path: Path) -> None:
    task = make_task(ARLINEAR, horizon=5, misspecification=0.25)
    policy = make_agent("logloss").fit(task, None)
    policy.save(tmp_path / "fit.npz")
    assert main(["evaluate", "--policy", str(tmp_path / "fit.npz"), "--oracle-starts", "4",
                 "--out", str(tmp_path / "out")]) == 0
    row = _stored_row(tmp_path / "out")
    assert row["hellinger2"] == pytest.approx(brute_force(task, policy.sequence_logprob)[0],
                                              rel=1e-10)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_evaluate_bad_input_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stable_baselines3 import PPO

    task = make_task(ARLINEAR, horizon=4)
    PPO("MlpPolicy", SequenceVecEnv(task, 2), n_steps=8, batch_size=8, device="cpu",
        policy_kwargs={"net_arch": [8]}).save(tmp_path / "ppo.zip")
    marker = tmp_path / "ran"
    th.save(_Evil(marker), tmp_path / "evil.pt")
    (tmp_path / "notes.txt").write_text("not a policy")
    cases = [
        (_evaluate(tmp_path / "ppo.zip", tmp_path / "o1", horizon=6),
         "--policy: the policy observes prompt length 1, horizon 4, vocabulary 2; the task "
         "ntp_envs/ARLinear-v0 has prompt length 1, horizon 6, vocabulary 2"),
        (["evaluate", "--env", ARLINEAR, "--env-kwargs", '{"horizon": 4, "vocab_size": 3}',
          "--policy", str(tmp_path / "ppo.zip")], "vocabulary 3"),
        (["evaluate", "--policy", str(tmp_path / "ppo.zip")], "--policy: ppo.zip does not "
                                                              "name its task: give --env"),
        (_evaluate(tmp_path / "missing.zip", tmp_path / "o2"), "--policy: no such file"),
        (_evaluate(tmp_path / "evil.pt", tmp_path / "o3"), "--policy: "),
        (_evaluate(tmp_path / "notes.txt", tmp_path / "o4"), "is not a torch-saved policy"),
        (["evaluate", "--env", "nope_pkg:make", "--policy", str(tmp_path / "ppo.zip")],
         "--env / --env-kwargs: env_id: cannot import 'nope_pkg'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not marker.exists()  # the pickled os.system call never ran
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3", "o4"))
