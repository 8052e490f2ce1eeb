"""LogLossBC: next-token prediction = behavior cloning with the log loss, solved exactly.

* Linear-softmax class: multinomial logistic regression on the visit counts
  ``N[c, t, s, a]`` (for a population fit, their expectations under the expert law):
  ``theta_hat = argmin -sum N[c,t,s,a] log pi_theta(a | c, t, s) + (l2/2) |theta|^2``.
* Finite class: the member with the smallest empirical log loss (population: smallest
  ``KL(P* || P^pi)``, computed exactly from the expert's forward marginals for finite-state
  members: ``sum_{c, t, s} mu_c E[visits] KL(p*(.|c, t, s) || pi(.|c, t, s))``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Agent, FittedPolicy, demonstration_arrays
from agents.logistic import fit_logistic
from agents.policies import FiniteMemberPolicy, LinearSoftmaxPolicy, linear_class
from agents.smoothing import smoothed
from ntp_envs.finite_class import FiniteClass
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import FinitePrompts, FiniteStateTables
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations


def target_counts(task: SequenceTask, demonstrations: Demonstrations | None) -> FloatArray:
    """Visit counts ``N[c, t, s, a]`` of the demonstrations, or their expectation under P*."""
    lc = linear_class(task)
    if demonstrations is not None:
        prompts, tokens = demonstration_arrays(task, demonstrations)
        return lc.counts(lc.prompts.index_of(prompts), tokens)
    if not isinstance(task.prompts, FinitePrompts):
        raise ValueError(f"{task.env_id}: a population fit needs a finite prompt law")
    tables = task.expert.finite_state()
    if tables is not None:
        return lc.expected_counts(tables if tables.memory >= lc.memory else tables.lift(lc.memory))
    law = task.expert.count_law()
    if law is not None and lc.memory == 0 and lc.vocab_size == 2:
        probs = np.exp(law.log_count_probs())  # (C, H + 1)
        ones = probs @ np.arange(law.horizon + 1)
        counts = np.stack([law.horizon - ones, ones], axis=-1)[:, None, None, :]
        return counts * np.exp(lc.prompts.log_probs)[:, None, None, None]
    raise ValueError(f"{task.env_id}: a population fit needs an expert with a finite-state or "
                     "count-law form that the learner class can match")


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


def finite_state_kl(expert: FiniteStateTables, model: FiniteStateTables,
                    log_mu: FloatArray) -> float:
    """Exact ``KL(P* || P^pi)`` of two finite-state laws over the same contexts (``inf`` when
    ``pi`` gives zero probability to a token the expert emits on a visited row)."""
    if expert.num_contexts != model.num_contexts or expert.horizon != model.horizon:
        raise ValueError("expert and model tables must share contexts and horizon")
    memory = max(expert.memory, model.memory)
    positions = max(expert.num_positions, model.num_positions)
    expert, model = expert.lift(memory, positions), model.lift(memory, positions)
    marginals = expert.forward_marginals()  # (C, H, S)
    visits = np.concatenate([marginals[:, : positions - 1],
                             marginals[:, positions - 1 :].sum(axis=1, keepdims=True)], axis=1)
    weights = np.exp(log_mu)[:, None, None, None] * visits[..., None] * np.exp(expert.logp)
    used = weights > 0
    if (used & ~np.isfinite(model.logp)).any():
        return float("inf")
    gap = np.where(used, expert.logp - np.where(used, model.logp, 0.0), 0.0)
    return max(float((weights * gap).sum()), 0.0)


def finite_class_losses(
    task: SequenceTask, demonstrations: Demonstrations | None, gamma: float = 0.0
) -> FloatArray:
    """Per-member log loss of the (smoothed) finite class: empirical mean sequence log loss,
    or, for a population fit, ``KL(P* || P^pi)`` (the log loss up to the expert's entropy)."""
    members: FiniteClass = task.learner_class
    models = [smoothed(m, gamma, task.prompts) for m in members.members]
    if demonstrations is None:
        expert = task.expert.finite_state()
        tables = [m.finite_state() for m in models]
        if expert is None or any(t is None for t in tables) or \
                not isinstance(task.prompts, FinitePrompts):
            raise ValueError(f"{task.env_id}: a population fit over a finite class needs a "
                             "finite-state expert and members and a finite prompt law")
        return np.array([finite_state_kl(expert, t, task.prompts.log_probs) for t in tables])
    prompts, tokens = demonstration_arrays(task, demonstrations)
    with np.errstate(divide="ignore"):
        return np.array([-m.sequence_logprob(prompts, tokens).mean() for m in models])


@dataclass
class LogLossBC(Agent):
    """Next-token prediction (maximum likelihood) over the task's learner class.

    ``l2`` (per token, on the normalised log loss) defaults to 0 for population fits, where
    the maximum-likelihood parameter exists, and to ``1e-8`` for sample fits, where a token
    never seen after some context would otherwise send ``theta`` to infinity.
    """

    l2: float | None = None
    name: str = "logloss"
    needs_learner_class = True

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        if isinstance(task.learner_class, FiniteClass):
            losses = finite_class_losses(task, demonstrations)
            index = int(np.argmin(losses))
            return FiniteMemberPolicy(task, index, 0.0, {"agent": self.name,
                                                         "log_losses": losses.tolist()})
        counts = target_counts(task, demonstrations)
        l2 = self.l2 if self.l2 is not None else (0.0 if demonstrations is None else 1e-8)
        theta, info = fit_linear_softmax(linear_class(task), counts, l2)
        return LinearSoftmaxPolicy(task, theta, 0.0, {"agent": self.name, **info})
