"""Ecosystem baselines: imitation's ``BC`` and ``SimpleDAggerTrainer`` as agents.

Both train an SB3 ``ActorCriticPolicy`` (an MLP on the env's one-hot ``MultiDiscrete``
observation encoding, :func:`agents.sb3_policy.make_actor_critic`) and return a
:class:`~agents.sb3_policy.NeuralPolicy`, whose next-token law is the trained policy's action
distribution, so the evaluator scores them like every other agent.

* ``imitation-bc`` (:class:`ImitationBC`): imitation's ``BC`` on the demonstrations'
  transitions (``Demonstrations.to_transitions``). With ``ent_weight = l2_weight = 0``
  (the defaults here) its loss is the token log loss: neural next-token prediction.
* ``dagger`` (:class:`DAgger`): imitation's ``SimpleDAggerTrainer``. Round 0 is the
  demonstrations (BC on them, as ``imitation-bc``); each of ``rounds`` further rounds rolls
  out a mixture of the expert (probability ``beta``, imitation's ``LinearBetaSchedule``:
  ``1 - r / rounds`` in round ``r``) and the current policy in a
  :class:`~ntp_envs.vector.SequenceVecEnv`, asks the expert for a label at every visited
  state, and retrains on everything so far. The expert labels with a *sample* of
  ``pi*(. | state)`` (imitation asks for deterministic expert actions, which would teach
  the argmax instead of the expert's law). Extra expert sequences: at least
  ``ceil(interactive_fraction * n)``, in ``rounds`` equal rounds (each rounded up to a
  multiple of ``num_envs``; ``info["interactive_sequences"]`` and
  ``info["expert_queries"]`` count what was used). The BC batch is capped at one round's
  tokens, as imitation makes every round at least one batch long. imitation stores every
  trajectory as its own dataset on disk (about 25 ms each), which dominates small fits.

Neither supports a population fit (``demonstrations=None``): they learn from samples.
Training is seeded from the ``rng`` passed to :meth:`fit`, runs on one torch thread, and
leaves torch's global random state and thread count as it found them.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch as th
from gymnasium import spaces
from imitation.algorithms import bc
from imitation.algorithms.dagger import LinearBetaSchedule, SimpleDAggerTrainer
from imitation.util import logger as imit_logger

from agents.base import Agent, demonstration_arrays
from agents.sb3_policy import NeuralPolicy, make_actor_critic
from experts.policy import ImitationExpert
from ntp_envs.base import observation_space
from ntp_envs.task import SequenceTask
from ntp_envs.validation import check_float, check_int
from ntp_envs.vector import SequenceVecEnv

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

__all__ = ["DAgger", "ImitationBC", "SampledExpert"]

DEMO_FILES = "demos/round-*/*.npz"
"""imitation's documented scratch layout: one saved trajectory per file."""


class SampledExpert(ImitationExpert):
    """The expert as an SB3 policy that always samples its next token (DAgger's labeller)."""

    def _predict(self, observation: Any, deterministic: bool = False) -> th.Tensor:
        return super()._predict(observation, deterministic=False)


@dataclass
class _NeuralSettings:
    """Shared hyperparameters and checks of the two agents."""

    net_arch: tuple[int, ...] = (64, 64)
    activation_fn: str = "Tanh"
    batch_size: int = 256
    learning_rate: float = 1e-3
    ent_weight: float = 0.0
    l2_weight: float = 0.0
    n_epochs: int = 10

    def _check(self, task: SequenceTask, demonstrations: Demonstrations | None,
               name: str) -> Demonstrations:
        if demonstrations is None:
            raise ValueError(f"{name} learns from demonstrations: a population fit "
                             "(demonstrations=None, --population) is not supported")
        demonstration_arrays(task, demonstrations)
        check_int("batch_size", self.batch_size, 1)
        check_float("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        check_float("ent_weight", self.ent_weight, 0.0, math.inf)
        check_float("l2_weight", self.l2_weight, 0.0, math.inf)
        check_int("n_epochs", self.n_epochs, 1)
        return demonstrations

    def _train_kwargs(self) -> dict[str, Any]:
        """``BC.train`` arguments: ``n_epochs`` passes over the data, silently."""
        return {"n_epochs": self.n_epochs, "progress_bar": False, "log_interval": 10**9}

    def _trainer(self, task: SequenceTask, rng: np.random.Generator, batch_size: int,
                 log_dir: Path, demonstrations: Any = None) -> bc.BC:
        """imitation's ``BC`` on a fresh policy (silent logger in ``log_dir``)."""
        policy = make_actor_critic(task, self.net_arch, self.activation_fn)
        return bc.BC(
            observation_space=observation_space(task),
            action_space=spaces.Discrete(task.vocab_size),
            rng=rng, policy=policy, demonstrations=demonstrations,
            batch_size=batch_size,
            optimizer_kwargs={"lr": self.learning_rate},
            ent_weight=self.ent_weight, l2_weight=self.l2_weight, device="cpu",
            custom_logger=imit_logger.configure(log_dir, format_strs=[]),
        )

    def _info(self, name: str) -> dict[str, Any]:
        return {"agent": name, "net_arch": list(self.net_arch),
                "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "ent_weight": self.ent_weight, "l2_weight": self.l2_weight,
                "n_epochs": self.n_epochs}


@contextlib.contextmanager
def _torch_session(rng: np.random.Generator) -> Iterator[None]:
    """Seeded from ``rng``, one intra-op thread (small MLPs run fastest so), and torch's
    global random state and thread count restored on exit."""
    threads = th.get_num_threads()
    with th.random.fork_rng(devices=[]), warnings.catch_warnings():
        # imitation's BC logger turns loss tensors into floats without detaching them
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        th.manual_seed(int(rng.integers(2**31 - 1)))
        th.set_num_threads(1)
        try:
            yield
        finally:
            th.set_num_threads(threads)


@dataclass
class ImitationBC(_NeuralSettings, Agent):
    """imitation's ``BC`` (neural, log loss): ``n_epochs`` passes over the demonstrations'
    transitions."""

    name: str = "imitation-bc"

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> NeuralPolicy:
        demonstrations = self._check(task, demonstrations, self.name)
        rng = np.random.default_rng(0) if rng is None else rng
        transitions = demonstrations.to_transitions(task)
        with _torch_session(rng), tempfile.TemporaryDirectory() as tmp:
            batch = min(self.batch_size, len(transitions))
            trainer = self._trainer(task, rng, batch, Path(tmp), transitions)
            trainer.train(**self._train_kwargs())
        return NeuralPolicy(task, trainer.policy, {**self._info(self.name), "batch_size": batch})


@dataclass
class DAgger(_NeuralSettings, Agent):
    """imitation's ``SimpleDAggerTrainer`` started from the demonstrations (module doc);
    every round's BC makes ``n_epochs`` passes over all the data so far."""

    rounds: int = 4
    interactive_fraction: float = 0.5
    num_envs: int = 16
    name: str = "dagger"

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> NeuralPolicy:
        demonstrations = self._check(task, demonstrations, self.name)
        rounds = check_int("rounds", self.rounds, 1)
        fraction = check_float("interactive_fraction", self.interactive_fraction, 0.0, 1e6,
                               low_open=True)
        rng = np.random.default_rng(0) if rng is None else rng
        per_round = math.ceil(math.ceil(fraction * len(demonstrations)) / rounds)
        # imitation makes a round at least one batch long: cap the batch at one round
        batch = min(self.batch_size, per_round * task.horizon, demonstrations.tokens.size)
        venv = SequenceVecEnv(task, check_int("num_envs", self.num_envs, 1))
        venv.seed(int(rng.integers(2**31 - 1)))
        expert = SampledExpert(venv.observation_space, venv.action_space, task,
                               seed=int(rng.integers(2**31 - 1)))
        trajectories = demonstrations.to_trajectories(task)
        bars = not datasets.are_progress_bars_disabled()
        with _torch_session(rng), tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp) / "dagger"
            datasets.disable_progress_bars()  # imitation saves each trajectory as a dataset
            try:
                trainer = SimpleDAggerTrainer(
                    venv=venv, scratch_dir=scratch, expert_policy=expert, rng=rng,
                    expert_trajs=trajectories, beta_schedule=LinearBetaSchedule(rounds),
                    bc_trainer=self._trainer(task, rng, batch, Path(tmp)),
                    custom_logger=imit_logger.configure(Path(tmp) / "log", format_strs=[]),
                )
                kwargs = {**self._train_kwargs(), "log_rollouts_venv": None}
                trainer.extend_and_update(kwargs)  # round 0: BC on the demonstrations
                for _ in range(rounds):  # one train() call with this budget = one round
                    trainer.train(per_round * task.horizon,
                                  rollout_round_min_episodes=per_round,
                                  rollout_round_min_timesteps=per_round * task.horizon,
                                  bc_train_kwargs=kwargs)
            finally:
                if bars:
                    datasets.enable_progress_bars()
            sequences = len(list(scratch.glob(DEMO_FILES)))
        interactive = sequences - len(demonstrations)
        return NeuralPolicy(task, trainer.policy, {
            **self._info(self.name), "batch_size": batch, "rounds": trainer.round_num - 1,
            "interactive_fraction": fraction, "interactive_sequences": interactive,
            "expert_queries": interactive * task.horizon,
        })
