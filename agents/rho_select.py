"""``rho-select:a+b+c``: the rho tournament over other agents' fits (a meta-agent).

The listed agents (built-in names, plug-in specs or entry points; ``+`` joins them because
``--agents`` splits on commas) each fit on a *fitting split*; the winner of the
sequence-level rho tournament (``psi(u) = (u - 1) / (u + 1)`` on sequence likelihood
ratios, :mod:`agents.tournament`) on the *held-out* sequences is returned. With
``demonstrations``, a ``holdout_fraction`` of them (drawn with the fit's generator) is held
out and the rest fit the candidates. A population fit (no demonstrations) fits every
candidate on the exact law and runs the tournament exactly where
:func:`agents.tournament.population_statistics` can (count-law experts with i.i.d. binary
candidates; finite-state experts and candidates while the atoms stay below its cap), else on
``population_samples`` expert sequences. ``info`` holds the split (``tournament``:
``exact`` / ``sampled, n=...`` / ``demonstrations, n=...``; fit and held-out sizes), every
candidate's tournament score and the winner's own ``info`` (``winner_info``).

The rho-estimator's guarantee (``C_apx = O(1)`` against the best candidate) makes the
selection within a constant factor of the best listed agent, up to the split's statistical
error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Agent, FittedPolicy
from agents.tournament import TournamentSource
from ntp_envs.task import SequenceTask
from ntp_envs.validation import check_float, check_int

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

__all__ = ["RHO_SELECT_PREFIX", "RhoSelect"]

RHO_SELECT_PREFIX = "rho-select:"


@dataclass
class RhoSelect(Agent):
    """The rho tournament over the fits of ``candidates`` (agent names; module doc)."""

    candidates: tuple[str, ...] = ("logloss", "robust")
    holdout_fraction: float = 0.5
    population_samples: int = 20_000
    name: str = "rho-select"

    _members: tuple[Agent, ...] = field(default=(), repr=False, compare=False)
    """The candidates' agents, in ``candidates`` order: ``agents.make_agent`` builds them
    from the names (``make_agent("rho-select:logloss+robust")``); their settings key the
    rows through ``candidates``."""

    def _agents(self) -> list[Agent]:
        if not self.candidates:
            raise ValueError(f"{RHO_SELECT_PREFIX} needs at least one agent, e.g. "
                             f"{RHO_SELECT_PREFIX}logloss+robust")
        if len(self._members) != len(self.candidates):
            raise ValueError(f"RhoSelect needs the agents of its candidates {self.candidates} "
                             f"as members: build it with agents.make_agent("
                             f"'{RHO_SELECT_PREFIX}{'+'.join(self.candidates)}')")
        return list(self._members)

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        rng = np.random.default_rng(0) if rng is None else rng
        agents = self._agents()
        check_float("holdout_fraction", self.holdout_fraction, 0.0, 1.0, low_open=True,
                    high_open=True)
        check_int("population_samples", self.population_samples, 1)
        seeds = rng.integers(2**63 - 1, size=len(agents))  # each fit its own stream
        if demonstrations is None:
            fit_on, split = None, {"fit": "population"}
            source = TournamentSource(task, task.horizon, rng=rng,
                                      population_samples=self.population_samples)
        else:
            n = len(demonstrations)
            held = int(round(self.holdout_fraction * n))
            if not 1 <= held < n:
                raise ValueError(f"holdout_fraction {self.holdout_fraction} of {n} "
                                 "demonstrations leaves no fitting or no held-out sequence")
            order = rng.permutation(n)
            fit_on = demonstrations.subset(np.sort(order[held:]))
            hold = demonstrations.subset(np.sort(order[:held]))
            split = {"fit": n - held, "held_out": held}
            source = TournamentSource(task, task.horizon, np.asarray(hold.prompts),
                                      np.asarray(hold.tokens))
        fits = [agent.fit(task, fit_on, np.random.default_rng(seed))
                for agent, seed in zip(agents, seeds, strict=True)]
        best, scores = source.select(fits)
        winner = fits[best]
        winner.info = {
            "agent": RHO_SELECT_PREFIX + "+".join(self.candidates),
            "selected": self.candidates[best], "tournament": source.description,
            "split": split,
            "scores": {name: float(s) for name, s in zip(self.candidates, scores, strict=True)},
            "winner_info": winner.info,
        }
        return winner
