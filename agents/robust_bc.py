"""Robust NTP: NTP over the smoothed class ``(1 - gamma) pi + gamma Unif(A)``, two ways.

Smoothing caps every per-token density ratio at ``V / gamma``, which bounds the gap between
KL and Hellinger and with it NTP's error amplification. How ``gamma`` is chosen decides what
the learner is:

* ``robust`` (:class:`RobustBC`), NTP-style end to end: one smoothed NTP fit per gamma of a
  fixed grid (default :data:`DEFAULT_GAMMAS`: 60 values log-spaced from 1/4 down to 1e-15,
  about 4 per decade, never 0), and the gamma whose fit has the least held-out *token* log
  loss is kept and refitted on all the data. The demonstrations are split at random into a
  fitting part (``1 - holdout_fraction``) and a held-out part. A population fit
  (``demonstrations=None``) selects on the exact expected log loss instead: for a finite
  class the argmin of ``KL(P* || P^pi)`` over (gamma, member) jointly, for a linear-softmax
  class the smoothed fit's log loss per token on the expected counts. Meant guarantee: as
  every NTP-style objective it pays ``Omega(H)`` in the worst case (the barrier), but it is
  bounded in ``delta``: ``C_apx = O~(H)`` with no growth in ``ln(1 / delta)``, where plain
  NTP's grows without bound. The grid reaches far below the rarest event (a fixed floor
  ``gamma_min`` costs ``~gamma_min H`` of ``D_H^2`` whatever the best in class).
* ``robust-rho`` (:class:`RobustRho`), a *hybrid* of NTP and the rho-estimator: the same
  smoothed NTP fits on the grid ``scale / H`` for ``scale`` in ``gamma_scales`` (default
  ``4^j`` for ``j = 1, 0, -1, ..., -6``: 4 down to 1/4096, capped at 1/4 for short horizons;
  a grid given explicitly must lie in (0, 1)), but the gamma is the winner of the
  rho-estimator's Hellinger tournament on the held-out *sequences*: a sequence-level,
  not an NTP-style, selection. No guarantee of its own is claimed: its floor
  ``1 / (4096 H)`` gives ``C_apx ~ 1 + gamma H / (6 event_prob)`` on FiniteClassBarrier when
  the rare member wins (40,690 at H = 64, event_prob 1e-9). A population fit scores the
  tournament on the exact expert law where :mod:`agents.tournament` can, else on
  ``population_samples`` expert sequences; ``info["tournament"]`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Agent, FittedPolicy, demonstration_arrays
from agents.logistic import fit_smoothed_logistic
from agents.logloss_bc import finite_class_losses, fit_linear_softmax, target_counts
from agents.policies import FiniteMemberPolicy, LinearSoftmaxPolicy, linear_class
from agents.smoothing import smooth_logprobs
from agents.tournament import TournamentSource
from ntp_envs.finite_class import FiniteClass
from ntp_envs.sequence_model import FinitePrompts
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

DEFAULT_GAMMAS: tuple[float, ...] = tuple(float(g) for g in np.geomspace(0.25, 1e-15, 60))
"""``robust``'s grid: 60 values log-spaced from 1/4 down to 1e-15 (about 4 per decade)."""
DEFAULT_SCALES = tuple(4.0**j for j in range(1, -7, -1))
"""``robust-rho``'s scales 4, 1, 1/4, ..., 1/4096: its grid ``scale / H`` reaches
``1 / (4096 H)``."""
MAX_DEFAULT_GAMMA = 0.25


def population_finite_kls(task: SequenceTask, grid: list[float]) -> FloatArray:
    """Exact ``KL(P* || P^{pi^gamma})`` of every member of the task's finite class smoothed
    with every ``gamma`` of ``grid``, shape ``(len(grid), members)``: the same sum as
    :func:`agents.logloss_bc.finite_state_kl`, with the expert's visit weights computed once
    (a smoothed member is the member's tables mixed with the uniform row)."""
    expert = task.expert.finite_state()
    tables = [m.finite_state() for m in task.learner_class.members]
    if expert is None or any(t is None for t in tables) or \
            not isinstance(task.prompts, FinitePrompts):
        raise ValueError(f"{task.env_id}: a population fit over a finite class needs a "
                         "finite-state expert and members and a finite prompt law")
    kls = np.empty((len(grid), len(tables)))
    weights: dict[tuple[int, int], tuple[FloatArray, FloatArray, np.ndarray]] = {}
    for j, member in enumerate(tables):
        if expert.num_contexts != member.num_contexts or expert.horizon != member.horizon:
            raise ValueError("expert and member tables must share contexts and horizon")
        shape = (max(expert.memory, member.memory),
                 max(expert.num_positions, member.num_positions))
        if shape not in weights:
            lifted = expert.lift(*shape)
            marginals = lifted.forward_marginals()  # (C, H, S)
            positions = shape[1]
            visits = np.concatenate([marginals[:, : positions - 1],
                                     marginals[:, positions - 1 :].sum(axis=1, keepdims=True)],
                                    axis=1)
            w = (np.exp(task.prompts.log_probs)[:, None, None, None] * visits[..., None]
                 * np.exp(lifted.logp))
            used = w > 0
            weights[shape] = (w[used], lifted.logp[used], used)
        w, expert_logp, used = weights[shape]
        member_logp = member.lift(*shape).logp
        for i, gamma in enumerate(grid):
            gap = expert_logp - smooth_logprobs(member_logp, gamma)[used]
            kls[i, j] = max(float(w @ gap), 0.0)
    return kls


def fit_smoothed_grid(
    task: SequenceTask, demonstrations: Demonstrations | None, grid: list[float]
) -> list[FittedPolicy]:
    """NTP over the class smoothed with each ``gamma`` of ``grid``, one fit each (population
    fits when no demonstrations); a linear class starts every fit from the plain NTP fit."""
    if isinstance(task.learner_class, FiniteClass):
        fits: list[FittedPolicy] = []
        table = population_finite_kls(task, grid) if demonstrations is None else None
        for i, gamma in enumerate(grid):
            losses = (finite_class_losses(task, demonstrations, gamma) if table is None
                      else table[i])
            fits.append(FiniteMemberPolicy(task, int(np.argmin(losses)), gamma,
                                           {"log_losses": losses.tolist()}))
        return fits
    lc = linear_class(task)
    counts = target_counts(task, demonstrations)
    theta0, _ = fit_linear_softmax(lc, counts, 0.0 if demonstrations is None else 1e-8)
    c, t, s = lc.all_rows()
    flat = counts.reshape(-1, lc.vocab_size)
    keep = flat.sum(axis=1) > 0
    active = lc.active_inputs(c[keep], t[keep], s[keep])
    fits = []
    for gamma in grid:
        fit = fit_smoothed_logistic(active, flat[keep], lc.num_inputs, lc.projection, gamma,
                                    theta0)
        fits.append(LinearSoftmaxPolicy(task, fit.theta, gamma, {
            "log_loss_per_token": fit.log_loss, "grad_norm": fit.grad_norm,
            "iterations": fit.iterations, "converged": fit.converged}))
    return fits


def fit_smoothed(
    task: SequenceTask, demonstrations: Demonstrations | None, gamma: float
) -> FittedPolicy:
    """NTP over the class smoothed with ``gamma`` (population fit when no demonstrations)."""
    return fit_smoothed_grid(task, demonstrations, [gamma])[0]


def expected_log_loss(task: SequenceTask, fit: FittedPolicy) -> float:
    """A population smoothed fit's exact expected log loss per token, up to a constant that
    does not depend on the fit (a finite class: ``KL(P* || P^pi) / H``; a linear class: the
    cross-entropy per token on the expected counts)."""
    if isinstance(task.learner_class, FiniteClass):
        return float(min(fit.info["log_losses"])) / task.horizon
    return float(fit.info["log_loss_per_token"])


def held_out_token_log_loss(fit: FittedPolicy, prompts: IntArray, tokens: IntArray) -> float:
    """Mean ``-log pi(a_h | x, a_{<h})`` over every token of the held-out sequences."""
    return -float(np.mean(fit.token_logprobs(prompts, tokens)))


def check_holdout_fraction(value: object) -> float:
    """``value`` as a float in (0, 1), else a one-line ValueError naming holdout_fraction."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ValueError(f"holdout_fraction must lie in (0, 1), got {value!r}")
    return float(value)


def split_demonstrations(
    demonstrations: Demonstrations, holdout_fraction: float, rng: np.random.Generator,
    who: str,
) -> tuple[Demonstrations, Demonstrations]:
    """``(fitting, held_out)``: a random split with ``round(holdout_fraction n)`` (at least 1,
    at most ``n - 1``) sequences held out."""
    n = len(demonstrations)
    if n < 2:
        raise ValueError(f"{who} needs at least 2 demonstrations (fit + held out)")
    order = rng.permutation(n)
    n_held = min(max(1, round(holdout_fraction * n)), n - 1)
    return demonstrations.subset(order[n_held:]), demonstrations.subset(order[:n_held])


@dataclass
class RobustBC(Agent):
    """Smoothed NTP with gamma chosen by held-out token log loss, or for a population fit by
    the exact expected log loss (``robust``; module doc)."""

    gamma_grid: tuple[float, ...] | None = None
    holdout_fraction: float = 0.2
    name: str = "robust"
    needs_learner_class = True

    def __post_init__(self) -> None:
        self.grid()
        check_holdout_fraction(self.holdout_fraction)

    def grid(self) -> list[float]:
        """The gamma grid (default :data:`DEFAULT_GAMMAS`); ValueError if empty or a value
        leaves (0, 1)."""
        if self.gamma_grid is None:
            return list(DEFAULT_GAMMAS)
        try:
            grid = [float(g) for g in self.gamma_grid]
        except (TypeError, ValueError):
            raise ValueError(f"gamma_grid must be a list of numbers in (0, 1), got "
                             f"{self.gamma_grid!r}") from None
        if not grid:
            raise ValueError("gamma_grid must not be empty (values in (0, 1))")
        bad = [g for g in grid if not 0.0 < g < 1.0]
        if bad:
            raise ValueError(f"gamma_grid values must lie in (0, 1), got {bad}")
        return grid

    def fits_per_gamma(
        self, task: SequenceTask, demonstrations: Demonstrations | None
    ) -> tuple[list[float], list[FittedPolicy]]:
        """One smoothed fit per gamma of the grid, on all the given data."""
        grid = self.grid()
        return grid, fit_smoothed_grid(task, demonstrations, grid)

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        rng = np.random.default_rng(0) if rng is None else rng
        fraction = check_holdout_fraction(self.holdout_fraction)
        grid = self.grid()
        if demonstrations is None:
            fits = fit_smoothed_grid(task, None, grid)
            losses = [expected_log_loss(task, f) for f in fits]
            selection = "exact expected log loss"
        else:
            demonstration_arrays(task, demonstrations)
            fitting, held = split_demonstrations(demonstrations, fraction, rng, "RobustBC")
            prompts, tokens = demonstration_arrays(task, held)
            fits = fit_smoothed_grid(task, fitting, grid)
            losses = [held_out_token_log_loss(f, prompts, tokens) for f in fits]
            selection = f"held-out token log loss, n={len(held)}"
        best = int(np.argmin(losses))
        gamma = grid[best]
        final = fits[best] if demonstrations is None else fit_smoothed(task, demonstrations, gamma)
        final.info.update({"agent": self.name, "gamma": gamma, "gamma_grid": grid,
                           "selection": selection, "selection_losses": losses})
        return final


@dataclass
class RobustRho(Agent):
    """Smoothed NTP with gamma chosen by a held-out sequence-level rho tournament
    (``robust-rho``, a hybrid of NTP and rho; module doc)."""

    gamma_scales: tuple[float, ...] | None = None
    holdout_fraction: float = 0.2
    population_samples: int = 20_000
    name: str = "robust-rho"
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
        return grid, fit_smoothed_grid(task, demonstrations, grid)

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        rng = np.random.default_rng(0) if rng is None else rng
        fraction = check_holdout_fraction(self.holdout_fraction)
        grid = self.gammas(task.horizon)
        source = TournamentSource(task, task.horizon, population_samples=self.population_samples,
                                  rng=rng)
        if demonstrations is None:
            fitting = None
        else:
            demonstration_arrays(task, demonstrations)
            fitting, held = split_demonstrations(demonstrations, fraction, rng, "RobustRho")
            source.prompts, source.tokens = demonstration_arrays(task, held)
        fits = fit_smoothed_grid(task, fitting, grid)
        best, scores = source.select(fits)
        gamma = grid[best]
        final = fits[best] if demonstrations is None else fit_smoothed(task, demonstrations, gamma)
        final.info.update({"agent": self.name, "gamma": gamma, "gamma_grid": grid,
                           "tournament": source.description,
                           "tournament_scores": _finite(scores)})
        return final


def _finite(values: FloatArray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]
