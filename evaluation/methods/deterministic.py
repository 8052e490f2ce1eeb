"""Divergences from a deterministic expert: one sequence ``tau*(x)`` per prompt.

With ``P*`` a point mass on ``tau*(x)`` for each prompt and ``q(x) = Q(tau*(x) | x)``:

``D_H^2 = 2 - 2 E_x sqrt(q(x))``, ``KL(P* || Q) = E_x[-log q(x)]``, ``TV = E_x[1 - q(x)]``.

Exact (a ``mu``-weighted sum over the support, in log space) for a
:class:`~ntp_envs.sequence_model.FinitePrompts` law of at most :data:`MAX_EXACT_TOKENS`
support tokens (``C * H``); otherwise a Monte Carlo average over ``n_samples`` prompts with
standard errors (:func:`evaluation.methods.monte_carlo.monte_carlo_divergences`, which for a
deterministic expert is exactly this average). :func:`evaluation.divergences.divergence`
names the two apart: ``eval_method`` ``deterministic_exact`` and ``deterministic_mc``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from evaluation.methods.monte_carlo import MonteCarloEstimate, monte_carlo_divergences
from evaluation.methods.roundoff import checked_kl, hellinger2_from_log_bc, tv_from_log_overlap
from ntp_envs.sequence_model import FinitePrompts, PromptDistribution, SequenceModel

__all__ = [
    "MAX_EXACT_TOKENS",
    "deterministic_divergences",
    "exact_over_support",
    "is_deterministic",
]

MAX_EXACT_TOKENS = 2**23
"""Largest support size ``C * H`` (tokens scored) summed exactly; larger laws are sampled."""

CHUNK_TOKENS = 2**20
"""Tokens scored per chunk of the exact sum (bounds memory)."""


def _probe(prompts: PromptDistribution) -> np.ndarray:
    if isinstance(prompts, FinitePrompts):
        return prompts.contexts[:1]
    return prompts.sample(1, np.random.default_rng(0))


def is_deterministic(model: SequenceModel, prompts: PromptDistribution) -> bool:
    """Whether ``model`` declares one sequence per prompt of ``prompts``."""
    return model.deterministic_sequences(_probe(prompts)) is not None


def exact_over_support(prompts: PromptDistribution, horizon: int) -> bool:
    """Whether :func:`deterministic_divergences` sums over the support (else samples)."""
    return isinstance(prompts, FinitePrompts) and prompts.num_contexts * horizon <= (
        MAX_EXACT_TOKENS
    )


def deterministic_divergences(
    expert: SequenceModel,
    learner: SequenceModel,
    prompts: PromptDistribution,
    n_samples: int,
    rng: np.random.Generator,
) -> MonteCarloEstimate:
    """``D_H^2``, ``KL(P* || Q)``, ``TV`` and standard errors (0 when exact) for a
    deterministic ``expert``."""
    if not is_deterministic(expert, prompts):
        raise ValueError(f"{type(expert).__name__} is not deterministic")
    if not exact_over_support(prompts, expert.horizon):
        return monte_carlo_divergences(expert, learner, prompts, n_samples, rng)
    assert isinstance(prompts, FinitePrompts)
    chunk = max(1, CHUNK_TOKENS // max(expert.horizon, 1))
    half, full, kl = [], [], 0.0
    for start in range(0, prompts.num_contexts, chunk):
        contexts = prompts.contexts[start : start + chunk]
        log_mu = prompts.log_probs[start : start + chunk]
        log_q = learner.sequence_logprob(contexts, expert.deterministic_sequences(contexts))
        if np.isnan(log_q).any():
            raise ValueError("the learner gave a NaN log-likelihood")
        half.append(logsumexp(log_mu + 0.5 * log_q))
        full.append(logsumexp(log_mu + log_q))
        support = log_mu > -math.inf
        if (log_q[support] == -math.inf).any():
            kl = math.inf
        elif math.isfinite(kl):
            kl += float(np.sum(np.exp(log_mu[support]) * -log_q[support]))
    return MonteCarloEstimate(
        hellinger2=hellinger2_from_log_bc(float(logsumexp(half))), hellinger2_stderr=0.0,
        kl=checked_kl(kl), kl_stderr=0.0,
        tv=tv_from_log_overlap(float(logsumexp(full))), tv_stderr=0.0,
    )
