"""RhoEstimator: a Hellinger-type tournament over a finite candidate set.

``pihat = argmin_pi max_pi' sum_i psi(sqrt(P^pi'(tau_i) / P^pi(tau_i)))`` with
``psi(u) = (u - 1) / (u + 1)``, i.e. ``psi = tanh((log P^pi' - log P^pi) / 4)`` on sequence
log-likelihoods (``mu(x)`` cancels). ``chunk_size = K < H`` gives the chunked tournament
``chunk-rho:K`` (:mod:`agents.chunk_rho`): the same sum over chunks of ``K`` tokens with
chunk conditional log-likelihoods. The tournament and its statistics live in
:mod:`agents.tournament`: the winner comes from
:meth:`~agents.tournament.TournamentSource.winner` (the full tournament's winner and score,
full score rows only for candidates that bounds cannot rule out; at worst
``O(|candidates|^2 m)`` for ``m`` statistics), each refinement round starting from the
previous round's winner and reusing the candidates already built.

Default candidate sets (``--agents rho``):

* finite class: the class itself;
* i.i.d. binary class (memory 0, one context, V = 2), or any one-parameter linear-softmax
  class over V = 2 (``dim == 1``, e.g. the tied logits of TiedLogitBarrier): a
  coarse-to-fine grid of ``P(a = 1)`` on the logit scale (of the least sensitive feature
  for a one-parameter class): ``grid_size`` points over [-12, 12], then twice
  ``grid_size`` points within two spacings of the winner; every refinement's tournament
  keeps all the points evaluated before among the competitors (a window alone can lose the
  coarse winner);
* any other linear-softmax class: the union of LogLossBC's fit and the smoothed fits at
  every gamma of ``robust-rho``'s grid (``4^j / H``, :class:`~agents.robust_bc.RobustRho`).

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
from agents.robust_bc import RobustRho
from agents.tournament import TournamentSource, rho_select, rho_tournament
from ntp_envs.finite_class import FiniteClass
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

LOGIT_RANGE = 12.0


def is_bernoulli_class(lc: object) -> bool:
    """Whether ``lc`` is a binary class the rho-estimator grids by one logit: the i.i.d.
    binary class (memory 0, one context, V = 2, no projection) or any one-parameter
    linear-softmax class over V = 2 (``dim == 1``, any projection, memory and contexts)."""
    if not isinstance(lc, LinearSoftmaxClass) or lc.vocab_size != 2:
        return False
    if lc.projection is None:
        return lc.memory == 0 and lc.num_contexts == 1
    return lc.dim == 1


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
            fits += RobustRho().fits_per_gamma(task, demonstrations)[1]
            return fits
        raise ValueError(f"{task.env_id}: no default rho candidate set for "
                         f"{type(lc).__name__}")

    def coarse_logits(self) -> FloatArray:
        """The coarse logit grid of the i.i.d. binary class."""
        return np.linspace(-LOGIT_RANGE, LOGIT_RANGE, self.grid_size)

    @staticmethod
    def _grid(task: SequenceTask, logits: FloatArray) -> list[FittedPolicy]:
        """Candidates at grid ``logits``: ``theta = [0, x]`` for the i.i.d. binary class;
        for a one-parameter class ``theta = x / s``, ``s`` the smallest nonzero ``|P|``
        entry, so ``x`` is the logit of its least sensitive feature."""
        lc = task.learner_class
        if lc.projection is None:
            return [LinearSoftmaxPolicy(task, np.array([0.0, x])) for x in logits]
        weights = np.abs(lc.projection[np.abs(lc.projection) > 0])
        scale = float(weights.min()) if weights.size else 1.0
        return [LinearSoftmaxPolicy(task, np.array([x / scale])) for x in logits]

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
        best, score = self._select(source, candidates, None)
        evaluated = len(candidates)
        if is_bernoulli_class(task.learner_class):
            logits = self.coarse_logits()
            built = dict(zip(logits.tolist(), candidates, strict=True))
            spacing = 2 * LOGIT_RANGE / (self.grid_size - 1)
            for _ in range(2):
                centre = float(logits[best])
                window = np.linspace(centre - 2 * spacing, centre + 2 * spacing, self.grid_size)
                logits = np.unique(np.concatenate([logits, window]))
                new = [x for x in logits.tolist() if x not in built]
                built.update(zip(new, self._grid(task, np.array(new)), strict=True))
                candidates = [built[x] for x in logits.tolist()]
                best, score = self._select(source, candidates,
                                           int(np.searchsorted(logits, centre)))
                evaluated += self.grid_size
                spacing = 4 * spacing / (self.grid_size - 1)
        winner = candidates[best]
        winner.info.update({"agent": self.name, "candidates": evaluated, "chunk_size": k,
                            "tournament": source.description, "tournament_score": score})
        return winner

    @staticmethod
    def _select(source: TournamentSource, candidates: list[FittedPolicy], guess: int | None
                ) -> tuple[int, float]:
        """Tournament winner and its score (:meth:`TournamentSource.winner`; ``guess``: the
        previous round's winner, a starting point that does not change the result)."""
        return source.winner(candidates, guess)


__all__ = ["RhoEstimator", "check_tournament_chunk_size", "is_bernoulli_class", "rho_select",
           "rho_tournament"]
