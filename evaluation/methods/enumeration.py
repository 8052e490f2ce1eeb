"""Exact divergences by enumerating every (context, sequence) pair of a finite prompt law.

Works for any :class:`SequenceModel` whose vocabulary and horizon are small enough that
``V**H`` sequences per context can be scored (in chunks, to bound memory). Each prefix of
length ``H - 1`` is scored with its ``V`` completions in one call
(:meth:`~ntp_envs.sequence_model.SequenceModel.extension_logprobs`: one teacher-forced pass
for a network, so ``V**(H-1)`` passes per context, not ``V**H``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import logsumexp

from evaluation.methods.roundoff import checked_kl, hellinger2_from_log_bc, tv_from_log_overlap
from ntp_envs.sequence_model import FinitePrompts, SequenceModel
from ntp_envs.type_aliases import IntArray

__all__ = ["MAX_SEQUENCES", "ExactDivergences", "enumerate_divergences", "sequences_at"]

MAX_SEQUENCES = 2**20
"""Largest ``V**H`` (sequences per context) that enumeration accepts."""

CHUNK_ELEMENTS = 2**22
"""Tokens scored per chunk (bounds memory)."""


class ExactDivergences(NamedTuple):
    """``D_H^2(P, Q)``, ``KL(P || Q)`` and ``TV(P, Q)``, exact."""

    hellinger2: float
    kl: float
    tv: float


def sequences_at(index: IntArray, vocab_size: int, horizon: int) -> IntArray:
    """The sequences with lexicographic ranks ``index`` (first token most significant)."""
    weights = vocab_size ** np.arange(horizon - 1, -1, -1, dtype=np.int64)
    return (np.asarray(index, dtype=np.int64)[:, None] // weights) % vocab_size


def enumerate_divergences(
    expert: SequenceModel, learner: SequenceModel, prompts: FinitePrompts
) -> ExactDivergences:
    """Exact divergences between ``mu x expert`` and ``mu x learner`` by full enumeration."""
    vocab, horizon = expert.vocab_size, expert.horizon
    if learner.vocab_size != vocab or learner.horizon != horizon:
        raise ValueError("expert and learner must share vocab_size and horizon")
    n_seq = vocab**horizon
    if n_seq > MAX_SEQUENCES:
        raise ValueError(f"V**H = {vocab}**{horizon} exceeds {MAX_SEQUENCES} sequences")
    n_parent = vocab ** (horizon - 1)  # each scored with its V children in one call
    chunk = max(1, CHUNK_ELEMENTS // (horizon * vocab))
    total = prompts.num_contexts * n_parent  # flat index = context * V**(H-1) + parent
    log_bc_parts, log_min_parts = [], []
    kl, kl_infinite = 0.0, False
    for start in range(0, total, chunk):
        flat = np.arange(start, min(start + chunk, total), dtype=np.int64)
        ctx, parent = flat // n_parent, flat % n_parent
        parents = sequences_at(parent, vocab, horizon - 1)
        context, log_mu = prompts.contexts[ctx], prompts.log_probs[ctx][:, None]
        lp = (expert.extension_logprobs(context, parents) + log_mu).ravel()
        lq = (learner.extension_logprobs(context, parents) + log_mu).ravel()
        log_bc_parts.append(logsumexp(0.5 * (lp + lq)))
        log_min_parts.append(logsumexp(np.minimum(lp, lq)))
        support = lp > -math.inf
        kl_infinite |= bool((support & (lq == -math.inf)).any())
        ok = support & (lq > -math.inf)
        kl += float(np.sum(np.exp(lp[ok]) * (lp[ok] - lq[ok])))
    return ExactDivergences(
        hellinger2=hellinger2_from_log_bc(float(logsumexp(log_bc_parts))),
        kl=math.inf if kl_infinite else checked_kl(kl),
        tv=tv_from_log_overlap(float(logsumexp(log_min_parts))),
    )
