"""RhoEstimator: a Hellinger-type tournament over a finite candidate set.

``pihat = argmin_pi max_pi' sum_i psi(sqrt(P^pi'(tau_i) / P^pi(tau_i)))`` with
``psi(u) = (u - 1) / (u + 1)``, i.e. ``psi = tanh((log P^pi' - log P^pi) / 4)`` on sequence
log-likelihoods (``mu(x)`` cancels). ``chunk_size = K < H`` gives the chunked tournament
``chunk-rho:K`` (:mod:`agents.chunk_rho`): the same sum over chunks of ``K`` tokens with
chunk conditional log-likelihoods. The tournament and its statistics live in
:mod:`agents.tournament`; cost ``O(|candidates|^2 m)`` for ``m`` statistics.

Default candidate sets (``--agents rho``):

* finite class: the class itself;
* i.i.d. binary class (memory 0, one context, V = 2): a coarse-to-fine grid of
  ``P(a = 1)`` on the logit scale: ``grid_size`` points over [-12, 12], then twice
  ``grid_size`` points within two spacings of the winner; every refinement's tournament
  keeps all the points evaluated before among the competitors (a window alone can lose the
  coarse winner);
* any other linear-softmax class: the union of LogLossBC's fit and RobustBC's fits at every
  gamma of its grid.

A population fit (no demonstrations) runs the tournament on the exact expert law where
:func:`agents.tournament.population_statistics` can (finite-state or count-law experts, see
there), else on ``population_samples`` expert sequences drawn with the agent's generator;
``info["tournament"]`` says which (``exact`` / ``sampled, n=...`` / ``demonstrations, n=...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Agent, FittedPolicy, demonstration_arrays
from agents.logloss_bc import LogLossBC
from agents.policies import FiniteMemberPolicy, LinearSoftmaxPolicy
from agents.robust_bc import RobustBC
from agents.tournament import TournamentSource, rho_select, rho_tournament
from ntp_envs.finite_class import FiniteClass
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

LOGIT_RANGE = 12.0


def is_bernoulli_class(lc: object) -> bool:
    """Whether ``lc`` is the i.i.d. binary class (memory 0, one context, V = 2, no projection)."""
    return (isinstance(lc, LinearSoftmaxClass) and lc.memory == 0 and lc.vocab_size == 2
            and lc.num_contexts == 1 and lc.projection is None)


def check_tournament_chunk_size(chunk_size: object, horizon: int | None = None) -> int:
    """``chunk_size`` as an int in ``[1, H]`` (``[1, inf)`` without a horizon); ValueError
    naming the range otherwise (the words of :func:`ntp_envs.chunk_tables.check_chunk_size`)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if horizon is not None and chunk_size > horizon:
        raise ValueError(f"chunk_size must lie in [1, H = {horizon}], got {chunk_size}")
    return int(chunk_size)


@dataclass
class RhoEstimator(Agent):
    """The rho-estimator over the default candidate set of the task's class (module doc);
    ``chunk_size`` ``None`` means ``K = H`` (the sequence-level tournament)."""

    grid_size: int = 201
    population_samples: int = 20_000
    chunk_size: int | None = None
    name: str = "rho"
    needs_learner_class = True

    def candidates(self, task: SequenceTask, demonstrations: Demonstrations | None
                   ) -> list[FittedPolicy]:
        """The default candidate set (excluding grid refinements)."""
        lc = task.learner_class
        if isinstance(lc, FiniteClass):
            return [FiniteMemberPolicy(task, i) for i in range(len(lc))]
        if is_bernoulli_class(lc):
            return self._grid(task, self.coarse_logits())
        if isinstance(lc, LinearSoftmaxClass):
            fits = [LogLossBC().fit(task, demonstrations)]
            fits += RobustBC().fits_per_gamma(task, demonstrations)[1]
            return fits
        raise ValueError(f"{task.env_id}: no default rho candidate set for "
                         f"{type(lc).__name__}")

    def coarse_logits(self) -> FloatArray:
        """The coarse logit grid of the i.i.d. binary class."""
        return np.linspace(-LOGIT_RANGE, LOGIT_RANGE, self.grid_size)

    @staticmethod
    def _grid(task: SequenceTask, logits: FloatArray) -> list[FittedPolicy]:
        return [LinearSoftmaxPolicy(task, np.array([0.0, x])) for x in logits]

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        rng = np.random.default_rng(0) if rng is None else rng
        if self.grid_size < 3 or self.population_samples < 1:
            raise ValueError("grid_size must be >= 3 and population_samples >= 1")
        k = task.horizon if self.chunk_size is None else check_tournament_chunk_size(
            self.chunk_size, task.horizon)
        source = TournamentSource(task, k, population_samples=self.population_samples, rng=rng)
        if demonstrations is not None:
            source.prompts, source.tokens = demonstration_arrays(task, demonstrations)
        candidates = self.candidates(task, demonstrations)
        best, scores = source.select(candidates)
        evaluated = len(candidates)
        if is_bernoulli_class(task.learner_class):
            logits = self.coarse_logits()
            spacing = 2 * LOGIT_RANGE / (self.grid_size - 1)
            for _ in range(2):
                centre = float(logits[best])
                window = np.linspace(centre - 2 * spacing, centre + 2 * spacing, self.grid_size)
                logits = np.unique(np.concatenate([logits, window]))
                candidates = self._grid(task, logits)
                best, scores = source.select(candidates)
                evaluated += self.grid_size
                spacing = 4 * spacing / (self.grid_size - 1)
        winner = candidates[best]
        winner.info.update({"agent": self.name, "candidates": evaluated, "chunk_size": k,
                            "tournament": source.description,
                            "tournament_score": float(scores[best])})
        return winner


__all__ = ["RhoEstimator", "check_tournament_chunk_size", "is_bernoulli_class", "rho_select",
           "rho_tournament"]
