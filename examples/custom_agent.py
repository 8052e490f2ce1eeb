"""Benchmark your own learner: a small torch GRU trained by behavior cloning, outside the suite.

:class:`GRUBC` is an ordinary :class:`agents.base.Agent` defined in this file, not in the
suite's packages. ``ntp-bench sweep`` imports it by file path (``--agents
examples/custom_agent.py:GRUBC?hidden=16``; a package would use ``mypkg.module:GRUBC`` or an
entry point of group ``ntp_gym.agents``), fits it in the sweep's workers beside the built-in
``logloss`` and ``robust`` on MixtureProduct and ARLinear, and scores it like every agent:
exactly where the structure allows (the GRU has no finite-state form, so enumeration at
small ``V**H``, Monte Carlo with a standard error beyond), against the same best-in-class
value (C_apx). Its rows land in the same store, table and plot.

The GRU reads the prompt (its embedding is the initial state) and the previous token, and
is trained by full-batch Adam on the teacher-forced token log loss (next-token
prediction); :class:`evaluation.adapters.TorchLogitsModel` (``causal=True``) turns the
network into the sequence model the evaluator scores.

Run (seconds)::

    python examples/custom_agent.py --out runs/custom_agent
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from agents.base import Agent, FittedPolicy, demonstration_arrays, register_policy_kind
from evaluation.adapters import TorchLogitsModel
from ntp_envs.task import SequenceTask

ENVS = {"ntp_envs/MixtureProduct-v0": "{}",
        "ntp_envs/ARLinear-v0": '{"misspecification": 0.5}'}


class GRUNet(th.nn.Module):
    """``(prompts (B, L), tokens (B, T)) -> logits (B, T, V)``; row ``t`` sees ``tokens[:, :t]``."""

    def __init__(self, prompt_vocab: int, prompt_length: int, vocab: int, hidden: int) -> None:
        super().__init__()
        self.prompt_vocab, self.vocab = prompt_vocab, vocab
        self.prompt = th.nn.Embedding(prompt_vocab * prompt_length, hidden)
        self.token = th.nn.Embedding(vocab + 1, hidden)  # index vocab: start of sequence
        self.gru = th.nn.GRU(hidden, hidden, batch_first=True)
        self.head = th.nn.Linear(hidden, vocab)

    def forward(self, prompts: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        offsets = th.arange(prompts.shape[1], device=prompts.device) * self.prompt_vocab
        h0 = th.tanh(self.prompt(prompts + offsets).sum(dim=1))[None]  # (1, B, hidden)
        start = th.full_like(tokens[:, :1], self.vocab)
        inputs = self.token(th.cat([start, tokens[:, :-1]], dim=1))  # previous tokens
        out, _ = self.gru(inputs, h0)
        return self.head(out)


def _net(task: SequenceTask, hidden: int) -> GRUNet:
    return GRUNet(task.prompt_vocab_size, task.prompts.prompt_length, task.vocab_size, hidden)


@register_policy_kind
class GRUPolicy(FittedPolicy):
    """A fitted :class:`GRUNet`; saved as its ``state_dict`` arrays (no pickle)."""

    kind = "example_gru"

    def __init__(self, task: SequenceTask, net: GRUNet, info: dict[str, Any]) -> None:
        self.net = net
        super().__init__(task, TorchLogitsModel(task, net, causal=True), info)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> GRUPolicy:
        net = _net(task, int(info["hidden"]))
        net.load_state_dict({k: th.as_tensor(v) for k, v in arrays.items()})
        return cls(task, net, info)


@dataclass
class GRUBC(Agent):
    """Behavior cloning (token log loss) of a GRU of width ``hidden``: ``epochs`` full-batch
    Adam steps at learning rate ``lr``; seeded from the fit's generator."""

    hidden: int = 16
    epochs: int = 150
    lr: float = 0.03
    name: str = "gru-bc"

    def fit(self, task: SequenceTask, demonstrations: Any,
            rng: np.random.Generator | None = None) -> GRUPolicy:
        if demonstrations is None:
            raise ValueError("gru-bc learns from demonstrations (no population fit)")
        prompts, tokens = demonstration_arrays(task, demonstrations)
        rng = np.random.default_rng(0) if rng is None else rng
        with th.random.fork_rng(devices=[]):
            th.manual_seed(int(rng.integers(2**31 - 1)))
            net = _net(task, self.hidden)
        x, a = th.tensor(prompts), th.tensor(tokens)  # copies: demonstrations are read-only
        optimiser = th.optim.Adam(net.parameters(), lr=self.lr)
        for _ in range(self.epochs):
            optimiser.zero_grad()
            logits = net(x, a)
            loss = th.nn.functional.cross_entropy(logits.reshape(-1, task.vocab_size),
                                                  a.reshape(-1))
            loss.backward()
            optimiser.step()
        return GRUPolicy(task, net, {"agent": self.name, "hidden": self.hidden,
                                     "epochs": self.epochs, "lr": self.lr,
                                     "log_loss_per_token": float(loss.detach())})


def main(argv: list[str] | None = None) -> int:
    """Sweep GRUBC against ``logloss`` and ``robust`` on both envs, then one report."""
    from evaluation.cli import main as ntp_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/custom_agent")
    parser.add_argument("--horizons", default="4,8")
    parser.add_argument("--seeds", default="2")
    parser.add_argument("--n-train", default="500")
    parser.add_argument("--backend", default="local", choices=("local", "serial", "ray"))
    args = parser.parse_args(argv)
    here = Path(__file__).resolve()
    path = here.relative_to(Path.cwd()) if here.is_relative_to(Path.cwd()) else here
    agents = f"{path}:GRUBC?hidden=16,logloss,robust"
    for env, kwargs in ENVS.items():
        status = ntp_bench(["sweep", "--env", env, "--env-kwargs", kwargs, "--agents", agents,
                            "--horizons", args.horizons, "--seeds", args.seeds,
                            "--n-train", args.n_train, "--oracle-starts", "4",
                            "--backend", args.backend, "--out", args.out, "--quiet",
                            "--no-report"])
        if status != 0:
            return status
    return ntp_bench(["report", "--out", args.out])  # both envs: one table, one plot


if __name__ == "__main__":
    sys.exit(main())
