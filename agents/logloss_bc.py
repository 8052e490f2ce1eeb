"""LogLossBC: next-token prediction = behavior cloning with the log loss, solved exactly.

For a linear-softmax class the fit is multinomial logistic regression on the visit counts
``N[c, t, s, a]`` (or, for a population fit, their expectations under the expert law):
``theta_hat = argmin -sum N[c,t,s,a] log pi_theta(a | c, t, s) + (l2/2) |theta|^2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Agent, demonstration_arrays
from agents.linear_policy import LinearSoftmaxPolicy, linear_class
from agents.logistic import fit_logistic
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import FinitePrompts
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations


def target_counts(
    task: SequenceTask, demonstrations: Demonstrations | None
) -> FloatArray:
    """Visit counts ``N[c, t, s, a]`` of the demonstrations, or their expectation under P*."""
    lc = linear_class(task)
    if demonstrations is None:
        tables = task.expert.finite_state()
        if tables is None or not isinstance(task.prompts, FinitePrompts):
            raise ValueError(f"{task.env_id}: a population fit needs a finite-state expert")
        if tables.memory < lc.memory:
            tables = tables.lift(lc.memory)
        return lc.expected_counts(tables)
    prompts, tokens = demonstration_arrays(task, demonstrations)
    return lc.counts(lc.prompts.index_of(prompts), tokens)


def fit_linear_softmax(
    lc: LinearSoftmaxClass, counts: FloatArray, l2: float
) -> tuple[FloatArray, dict[str, float | int | bool]]:
    """``argmin`` of the count-weighted log loss over the class; returns theta and diagnostics."""
    c, t, s = lc.all_rows()
    flat = counts.reshape(-1, lc.vocab_size)
    keep = flat.sum(axis=1) > 0
    fit = fit_logistic(
        lc.active_inputs(c[keep], t[keep], s[keep]), flat[keep], lc.num_inputs,
        lc.projection, l2=l2,
    )
    info = {"log_loss_per_token": fit.log_loss, "grad_norm": fit.grad_norm,
            "iterations": fit.iterations, "converged": fit.converged}
    return fit.theta, info


@dataclass
class LogLossBC(Agent):
    """Next-token prediction (maximum likelihood) over the task's learner class.

    ``l2`` (per token, on the normalised log loss) defaults to 0 for population fits, where
    the maximum-likelihood parameter exists, and to ``1e-8`` for sample fits, where a token
    never seen after some context would otherwise send ``theta`` to infinity.
    """

    l2: float | None = None
    name: str = "logloss"

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> LinearSoftmaxPolicy:
        counts = target_counts(task, demonstrations)
        l2 = self.l2 if self.l2 is not None else (0.0 if demonstrations is None else 1e-8)
        theta, info = fit_linear_softmax(linear_class(task), counts, l2)
        return LinearSoftmaxPolicy(task, theta, {"agent": self.name, **info})
