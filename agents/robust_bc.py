"""RobustBC: NTP over the smoothed class ``(1 - gamma) pi + gamma Unif(A)``.

Smoothing caps every per-token density ratio at ``V / gamma``, which bounds the gap between
KL and Hellinger and with it NTP's error amplification (C_apx = O~(H) instead of
unbounded). ``gamma`` comes from the grid ``scale / H`` for ``scale`` in
``gamma_scales`` (default ``4^j`` for ``j = 1, 0, -1, ..., -6``: 4 down to 1/4096, with the
default grid capped at 1/4 for short horizons; a grid given explicitly must lie in (0, 1)).
On FiniteClassBarrier, when the rare member wins, the smallest gamma sets C_apx: smoothing
costs ``D_H^2 ~ gamma H / 3`` on the coin sequences against the best ``2 event_prob``, so
``C_apx ~ 1 + gamma H / (6 event_prob)``; when the biased member wins (small bias, as on the
family of issue 13), C_apx is that member's and grows like H.

Selection criterion (sequence-level, held out): the demonstrations are split at random
into a fitting part (``1 - holdout_fraction``) and a held-out part; one smoothed fit per
gamma is made on the fitting part, and the gamma whose fit wins the rho-estimator's
Hellinger tournament on the held-out *sequences* is kept and refitted on all the data.
A population fit scores the tournament on the exact expert law where
:mod:`agents.tournament` can, else on ``population_samples`` expert sequences;
``info["tournament"]`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Agent, FittedPolicy, demonstration_arrays
from agents.logistic import fit_smoothed_logistic
from agents.logloss_bc import finite_class_losses, fit_linear_softmax, target_counts
from agents.policies import FiniteMemberPolicy, LinearSoftmaxPolicy, linear_class
from agents.tournament import TournamentSource
from ntp_envs.finite_class import FiniteClass
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

DEFAULT_SCALES = tuple(4.0**j for j in range(1, -7, -1))
"""4, 1, 1/4, ..., 1/4096: the default grid reaches ``1 / (4096 H)``."""
MAX_DEFAULT_GAMMA = 0.25


def fit_smoothed(
    task: SequenceTask, demonstrations: Demonstrations | None, gamma: float
) -> FittedPolicy:
    """NTP over the class smoothed with ``gamma`` (population fit when no demonstrations)."""
    if isinstance(task.learner_class, FiniteClass):
        losses = finite_class_losses(task, demonstrations, gamma)
        return FiniteMemberPolicy(task, int(np.argmin(losses)), gamma,
                                  {"log_losses": losses.tolist()})
    lc = linear_class(task)
    counts = target_counts(task, demonstrations)
    theta0, _ = fit_linear_softmax(lc, counts, 0.0 if demonstrations is None else 1e-8)
    c, t, s = lc.all_rows()
    flat = counts.reshape(-1, lc.vocab_size)
    keep = flat.sum(axis=1) > 0
    fit = fit_smoothed_logistic(lc.active_inputs(c[keep], t[keep], s[keep]), flat[keep],
                                lc.num_inputs, lc.projection, gamma, theta0)
    return LinearSoftmaxPolicy(task, fit.theta, gamma, {
        "log_loss_per_token": fit.log_loss, "grad_norm": fit.grad_norm,
        "iterations": fit.iterations, "converged": fit.converged})


@dataclass
class RobustBC(Agent):
    """Smoothed NTP with gamma chosen by a held-out sequence-level tournament (module doc)."""

    gamma_scales: tuple[float, ...] | None = None
    holdout_fraction: float = 0.2
    population_samples: int = 20_000
    name: str = "robust"
    needs_learner_class = True

    def gammas(self, horizon: int) -> list[float]:
        """The gamma grid ``scale / H``; ValueError if a value leaves (0, 1)."""
        if self.gamma_scales is None:
            return sorted({min(scale / horizon, MAX_DEFAULT_GAMMA) for scale in DEFAULT_SCALES},
                          reverse=True)
        grid = [float(scale) / horizon for scale in self.gamma_scales]
        if not grid:
            raise ValueError("gamma_scales must not be empty")
        bad = [g for g in grid if not 0.0 < g < 1.0]
        if bad:
            raise ValueError(f"gamma grid values must lie in (0, 1); got {bad} at H = {horizon}"
                             " (gamma = scale / H from gamma_scales)")
        return grid

    def fits_per_gamma(
        self, task: SequenceTask, demonstrations: Demonstrations | None
    ) -> tuple[list[float], list[FittedPolicy]]:
        """One smoothed fit per gamma of the grid, on all the given data."""
        grid = self.gammas(task.horizon)
        return grid, [fit_smoothed(task, demonstrations, g) for g in grid]

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        rng = np.random.default_rng(0) if rng is None else rng
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")
        grid = self.gammas(task.horizon)
        source = TournamentSource(task, task.horizon, population_samples=self.population_samples,
                                  rng=rng)
        if demonstrations is None:
            fitting = None
        else:
            demonstration_arrays(task, demonstrations)
            n = len(demonstrations)
            if n < 2:
                raise ValueError("RobustBC needs at least 2 demonstrations (fit + held out)")
            order = rng.permutation(n)
            n_held = min(max(1, round(self.holdout_fraction * n)), n - 1)
            fitting = demonstrations.subset(order[n_held:])
            held = demonstrations.subset(order[:n_held])
            source.prompts, source.tokens = demonstration_arrays(task, held)
        fits = [fit_smoothed(task, fitting, g) for g in grid]
        best, scores = source.select(fits)
        gamma = grid[best]
        final = fits[best] if demonstrations is None else fit_smoothed(task, demonstrations, gamma)
        final.info.update({"agent": self.name, "gamma": gamma, "gamma_grid": grid,
                           "tournament": source.description,
                           "tournament_scores": _finite(scores)})
        return final


def _finite(values: FloatArray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]
