"""RhoEstimator: a Hellinger-type tournament over a finite candidate set.

``pihat = argmin_pi max_pi' sum_i psi(sqrt(P^pi'(tau_i) / P^pi(tau_i)))`` with
``psi(u) = (u - 1) / (u + 1)``, i.e. ``psi = tanh((log P^pi' - log P^pi) / 4)`` on sequence
log-likelihoods (``mu(x)`` cancels). One ``(candidates, sequences)`` matrix of exact
sequence log-likelihoods is built once; the ``K x K`` tournament is vectorised in blocks.
Cost ``O(K^2 m)`` for ``m`` distinct sufficient statistics (sequences, or counts of ones
for i.i.d. binary candidates).

Default candidate sets (``--agents rho``):

* finite class: the class itself;
* i.i.d. binary class (memory 0, one context, V = 2): a coarse-to-fine grid of
  ``P(a = 1)`` on the logit scale (``grid_size`` points over [-12, 12], then twice
  ``grid_size`` points within two spacings of the winner);
* any other linear-softmax class: the union of LogLossBC's fit and RobustBC's fits at every
  gamma of its grid.

A population fit (no demonstrations) runs the tournament on ``population_samples`` expert
sequences drawn with the agent's generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Agent, FittedPolicy, demonstration_arrays
from agents.policies import FiniteMemberPolicy, LinearSoftmaxPolicy
from ntp_envs.finite_class import FiniteClass
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import FinitePrompts
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

BLOCK_ELEMENTS = 2**24


def rho_tournament(loglik: FloatArray, weights: FloatArray | None = None) -> tuple[int, FloatArray]:
    """Winner and scores ``max_k' sum_i w_i psi(...)`` of candidates (rows of ``loglik``).

    ``loglik[k, i]`` is the log-likelihood of sequence (or statistic) ``i`` under candidate
    ``k``; ``weights`` are multiplicities (default 1). Ties go to the lowest index.
    """
    loglik = np.asarray(loglik, dtype=np.float64)
    if loglik.ndim != 2 or loglik.shape[0] < 1 or loglik.shape[1] < 1:
        raise ValueError(f"loglik must have shape (K >= 1, m >= 1), got {loglik.shape}")
    n_cand, n_seq = loglik.shape
    weights = np.ones(n_seq) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (n_seq,) or (weights < 0).any():
        raise ValueError(f"weights must be {n_seq} non-negative numbers")
    scores = np.full(n_cand, -np.inf)
    finite = bool(np.isfinite(loglik).all())
    rows = max(1, BLOCK_ELEMENTS // (n_cand * n_seq))
    for start in range(0, n_cand, rows):
        block = loglik[start : start + rows]  # (b, m): the "pi" side
        with np.errstate(invalid="ignore"):
            psi = np.subtract(loglik[None, :, :], block[:, None, :])  # (b, K, m): pi' vs pi
        if not finite:
            np.nan_to_num(psi, copy=False, nan=0.0)  # 0/0 (both impossible) counts 0
        psi *= 0.25
        np.tanh(psi, out=psi)
        scores[start : start + rows] = (psi @ weights).max(axis=1)
    return int(np.argmin(scores)), scores


def is_bernoulli_class(lc: object) -> bool:
    """Whether ``lc`` is the i.i.d. binary class (memory 0, one context, V = 2, no projection)."""
    return (isinstance(lc, LinearSoftmaxClass) and lc.memory == 0 and lc.vocab_size == 2
            and lc.num_contexts == 1 and lc.projection is None)


def _statistics(candidates: list[FittedPolicy], prompts: IntArray, tokens: IntArray
                ) -> tuple[FloatArray, FloatArray]:
    """``(loglik (K, m), weights (m,))`` over distinct sufficient statistics of the data."""
    laws = [c.count_law() for c in candidates]
    task = candidates[0].task
    if all(law is not None for law in laws) and isinstance(task.prompts, FinitePrompts):
        ctx = task.prompts.index_of(prompts)
        ones = tokens.sum(axis=1)
        keys, weights = np.unique(np.stack([ctx, ones], axis=1), axis=0, return_counts=True)
        loglik = np.stack([law.log_seq[keys[:, 0], keys[:, 1]] for law in laws])
        return loglik, weights.astype(np.float64)
    data = np.concatenate([prompts, tokens], axis=1)
    unique, index, weights = np.unique(data, axis=0, return_index=True, return_counts=True)
    loglik = np.stack([c.sequence_logprob(prompts[index], tokens[index]) for c in candidates])
    return loglik, weights.astype(np.float64)


def rho_select(candidates: list[FittedPolicy], prompts: IntArray, tokens: IntArray
               ) -> tuple[int, FloatArray]:
    """Index of the tournament winner among ``candidates`` on the given sequences."""
    if not candidates:
        raise ValueError("the candidate set must not be empty")
    loglik, weights = _statistics(candidates, prompts, tokens)
    return rho_tournament(loglik, weights)


@dataclass
class RhoEstimator(Agent):
    """The rho-estimator over the default candidate set of the task's class (module doc)."""

    grid_size: int = 201
    population_samples: int = 20_000
    name: str = "rho"

    def candidates(self, task: SequenceTask, demonstrations: Demonstrations | None
                   ) -> list[FittedPolicy]:
        """The default candidate set (excluding grid refinements)."""
        lc = task.learner_class
        if isinstance(lc, FiniteClass):
            return [FiniteMemberPolicy(task, i) for i in range(len(lc))]
        if is_bernoulli_class(lc):
            return self._grid(task, np.linspace(-12.0, 12.0, self.grid_size))
        if isinstance(lc, LinearSoftmaxClass):
            from agents.logloss_bc import LogLossBC
            from agents.robust_bc import RobustBC

            robust = RobustBC()
            fits = [LogLossBC().fit(task, demonstrations)]
            fits += robust.fits_per_gamma(task, demonstrations)[1]
            return fits
        raise ValueError(f"{task.env_id}: no default rho candidate set for "
                         f"{type(lc).__name__}")

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
        if demonstrations is None:
            prompts, tokens = task.sample_demonstrations(self.population_samples, rng)
        else:
            prompts, tokens = demonstration_arrays(task, demonstrations)
        candidates = self.candidates(task, demonstrations)
        best, scores = rho_select(candidates, prompts, tokens)
        evaluated = len(candidates)
        if is_bernoulli_class(task.learner_class):
            spacing = 24.0 / (self.grid_size - 1)
            for _ in range(2):
                centre = float(candidates[best].theta[1])
                logits = np.linspace(centre - 2 * spacing, centre + 2 * spacing, self.grid_size)
                candidates = self._grid(task, logits)
                best, scores = rho_select(candidates, prompts, tokens)
                evaluated += len(candidates)
                spacing = 4 * spacing / (self.grid_size - 1)
        winner = candidates[best]
        winner.info.update({"agent": self.name, "candidates": evaluated,
                            "tournament_score": float(scores[best])})
        return winner
