"""Monte Carlo divergences for any sequence models and any prompt law.

Sequences are drawn from ``P = mu x expert``; with ``r = log Q(tau) - log P(tau)`` (exact
sequence log-likelihoods, ``mu`` cancels):
``BC = E[exp(r / 2)]``, ``KL(P || Q) = E[-r]``, ``TV = E[max(0, 1 - exp(r))]``.
Estimates are plain sample means (unbiased, so ``D_H^2`` may leave ``[0, 2]`` by noise),
each with its standard error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ntp_envs.sequence_model import PromptDistribution, SequenceModel
from ntp_envs.type_aliases import FloatArray

__all__ = ["CHUNK_TOKENS", "MonteCarloEstimate", "log_ratios", "monte_carlo_divergences"]

CHUNK_TOKENS = 2**23
"""Tokens sampled per chunk (bounds memory at long horizons)."""


class MonteCarloEstimate(NamedTuple):
    """Estimates of ``D_H^2``, ``KL(P || Q)``, ``TV`` and their standard errors."""

    hellinger2: float
    hellinger2_stderr: float
    kl: float
    kl_stderr: float
    tv: float
    tv_stderr: float


def log_ratios(
    expert: SequenceModel,
    learner: SequenceModel,
    prompts: PromptDistribution,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    """``log Q(tau) - log P(tau)`` for ``n_samples`` draws ``tau ~ P``, shape ``(n,)``."""
    chunk = max(1, CHUNK_TOKENS // max(expert.horizon, 1))
    out = np.empty(n_samples, dtype=np.float64)
    for start in range(0, n_samples, chunk):
        size = min(chunk, n_samples - start)
        x = prompts.sample(size, rng)
        tokens = expert.sample(x, rng)
        out[start : start + size] = learner.sequence_logprob(x, tokens) - (
            expert.sequence_logprob(x, tokens)
        )
    return out


def _mean_and_stderr(values: FloatArray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def monte_carlo_divergences(
    expert: SequenceModel,
    learner: SequenceModel,
    prompts: PromptDistribution,
    n_samples: int,
    rng: np.random.Generator,
) -> MonteCarloEstimate:
    """Sample-mean estimates (with standard errors) from ``n_samples >= 2`` draws of ``P``."""
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    r = log_ratios(expert, learner, prompts, n_samples, rng)
    if np.isnan(r).any() or (r == math.inf).any():
        raise ValueError("the expert gave probability zero to one of its own samples")
    bc, bc_se = _mean_and_stderr(np.exp(0.5 * r))
    if (r == -math.inf).any():  # Q misses a sequence P emits: KL is exactly infinite
        kl, kl_se = math.inf, 0.0
    else:
        kl, kl_se = _mean_and_stderr(-r)
    tv, tv_se = _mean_and_stderr(np.maximum(0.0, -np.expm1(r)))
    return MonteCarloEstimate(2.0 - 2.0 * bc, 2.0 * bc_se, kl, kl_se, tv, tv_se)
