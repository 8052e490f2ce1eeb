"""Smoothed policies ``pi^gamma = (1 - gamma) pi + gamma Unif(A)`` (the class of ``robust`` and
``robust-rho``), in log space: ``gamma`` down to 1e-15 against log-probabilities down to
log(1e-300) stays finite."""

from __future__ import annotations

import numpy as np

from ntp_envs.sequence_model import (
    FinitePrompts,
    FiniteStateModel,
    FiniteStateTables,
    PromptDistribution,
    SequenceModel,
)
from ntp_envs.type_aliases import FloatArray, IntArray


def smooth_logprobs(logp: FloatArray, gamma: float) -> FloatArray:
    """``log((1 - gamma) p + gamma / V)`` along the last axis, in log space."""
    if gamma == 0.0:
        return logp
    vocab = logp.shape[-1]
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log1p(-gamma) + logp, np.log(gamma / vocab))


class SmoothedModel(SequenceModel):
    """``(1 - gamma) model + gamma Unif(A)`` for any sequence model."""

    def __init__(self, model: SequenceModel, gamma: float) -> None:
        self.base = model
        self.gamma = float(gamma)
        self.vocab_size = model.vocab_size
        self.horizon = model.horizon

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        return smooth_logprobs(self.base.next_token_logprobs(prompts, prefixes), self.gamma)

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        tokens = self._check_tokens(tokens)
        base = self.base.token_logprobs(prompts, tokens)
        with np.errstate(divide="ignore"):
            return np.logaddexp(np.log1p(-self.gamma) + base, np.log(self.gamma / self.vocab_size))


def smoothed(model: SequenceModel, gamma: float, prompts: PromptDistribution) -> SequenceModel:
    """The smoothed model, keeping the finite-state form (and so exact evaluation) if any."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must lie in [0, 1), got {gamma}")
    if gamma == 0.0:
        return model
    tables = model.finite_state()
    if tables is not None and isinstance(prompts, FinitePrompts):
        logp = smooth_logprobs(tables.logp, gamma)
        return FiniteStateModel(FiniteStateTables(logp, tables.memory, tables.horizon), prompts)
    return SmoothedModel(model, gamma)


__all__ = ["SmoothedModel", "smooth_logprobs", "smoothed"]
