"""Reference values for tests, by summing over every sequence (no DP, no evaluation module)."""

from __future__ import annotations

import itertools

import numpy as np

from ntp_envs.sequence_model import FinitePrompts, SequenceModel


def enumerated_divergences(expert: SequenceModel, model: SequenceModel,
                           prompts: FinitePrompts) -> dict[str, float]:
    """``D_H^2 = sum (sqrt p - sqrt q)^2``, ``KL(P* || P)`` and ``TV`` of ``model`` against
    ``expert``, summed over all ``C * V**H`` (prompt, sequence) pairs of the finite prompt
    law ``prompts`` from each model's ``sequence_logprob``."""
    tokens = np.array(list(itertools.product(range(expert.vocab_size), repeat=expert.horizon)))
    hellinger2 = kl = tv = 0.0
    for context, log_mu in zip(prompts.contexts, prompts.log_probs, strict=True):
        rows = np.repeat(context[None, :], len(tokens), axis=0)
        log_p = log_mu + expert.sequence_logprob(rows, tokens)
        log_q = log_mu + model.sequence_logprob(rows, tokens)
        hellinger2 += ((np.exp(0.5 * log_p) - np.exp(0.5 * log_q)) ** 2).sum()
        seen = log_p > -np.inf
        kl += (np.exp(log_p[seen]) * (log_p[seen] - log_q[seen])).sum()
        tv += 0.5 * np.abs(np.exp(log_p) - np.exp(log_q)).sum()
    return {"hellinger2": hellinger2, "kl": kl, "tv": tv}
