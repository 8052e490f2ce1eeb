"""Exact divergences between an expert and a chunk model, by a recursion over chunks.

The learner emits chunks of ``K`` tokens (:class:`~ntp_envs.chunk_tables.ChunkTables`):
chunk ``i`` has the law ``q_i(o | c, s)`` over ``V^K`` outcomes given the window ``s`` of
the ``m`` tokens before it. Two expert forms are handled, both exactly and in log space:

* **finite-state expert** (memory ``k``): with ``M = max(k, m)`` and ``S = V^M`` window
  states at chunk boundaries,
  ``alpha_{i+1}(s') = sum_{s, o: s' = (s V^L + o) mod S} alpha_i(s) sqrt(p_i(o|s) q_i(o|s))``,
  where ``p_i(o | s)`` is the expert's chunk law
  (:func:`~ntp_envs.chunk_tables.finite_state_chunk_logprobs`, computed once per distinct
  chunk phase). ``KL = sum_i E_{P*}[KL(p_i(.|s) || q_i(.|s))]`` with the expert's forward
  marginals at chunk boundaries. Cost ``O((H / K) C V^M V^K)``.
* **count-law expert** (binary, exchangeable) and a memory-0 chunk model: a sequence's
  expert probability depends only on its number of ones ``n``, the learner's is a product
  over chunks, so ``BC_c = sum_n sqrt(P*_n) G(n)`` with ``G`` the convolution over chunks of
  ``g_i(j) = sum_{o with j ones} sqrt(q_i(o))``; ``KL = sum_n binom(H, n) P*_n log P*_n -
  sum_i sum_o P*(chunk i = o) log q_i(o)``, where ``P*(chunk i = o)`` depends only on the
  number of ones of ``o`` (:func:`~ntp_envs.chunk_tables.count_law_chunk_logprobs`).
  Cost ``O(H^2 + (H / K) V^K)`` per context.

Neither gives TV.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from evaluation.methods.roundoff import checked_kl, hellinger2_from_log_bc
from ntp_envs.chunk_tables import (
    ChunkTables,
    advance_window,
    count_law_chunk_logprobs,
    finite_state_chunk_logprobs,
    ones_per_outcome,
)
from ntp_envs.sequence_model import CountLaw, FiniteStateTables, log_binomial
from ntp_envs.type_aliases import FloatArray

__all__ = [
    "MAX_CHUNK_DP_ELEMENTS",
    "chunk_dp_elements",
    "count_law_chunk_divergences",
    "finite_state_chunk_divergences",
]

MAX_CHUNK_DP_ELEMENTS = 2**24
"""Largest ``C * V^M * V^K`` (one chunk step of the finite-state recursion) accepted."""


def chunk_dp_elements(expert_memory: int, learner: ChunkTables) -> int:
    """Entries of one chunk step of :func:`finite_state_chunk_divergences`."""
    vocab = learner.vocab_size
    return (learner.num_contexts * vocab ** max(expert_memory, learner.memory)
            * vocab**learner.chunk_size)


def finite_state_chunk_divergences(
    expert: FiniteStateTables, learner: ChunkTables, log_mu: FloatArray
) -> tuple[float, float]:
    """``(D_H^2(P*, Q), KL(P* || Q))`` for a finite-state expert and a chunk model."""
    _check(expert.horizon, expert.vocab_size, expert.num_contexts, learner, log_mu)
    if chunk_dp_elements(expert.memory, learner) > MAX_CHUNK_DP_ELEMENTS:
        raise ValueError(f"the chunk recursion needs C V^M V^K <= {MAX_CHUNK_DP_ELEMENTS}, got "
                         f"{chunk_dp_elements(expert.memory, learner)}")
    vocab, n_ctx = learner.vocab_size, learner.num_contexts
    memory = max(expert.memory, learner.memory)
    lifted = expert.lift(memory)
    n_states = vocab**memory
    to_learner = np.arange(n_states) % learner.num_states
    log_alpha = np.full((n_ctx, n_states), -np.inf)
    log_alpha[:, 0] = 0.0
    mass = np.zeros((n_ctx, n_states))
    mass[:, 0] = 1.0
    kl = np.zeros(n_ctx)
    missing = np.zeros(n_ctx, dtype=bool)
    laws: dict[tuple[int, int], FloatArray] = {}
    for i in range(learner.num_chunks):
        start, length = learner.chunk_start(i), learner.chunk_length(i)
        phase = (min(start, lifted.num_positions - 1), length)
        if phase not in laws:
            laws[phase] = finite_state_chunk_logprobs(lifted, start, length)
        lp = laws[phase]  # (C, S, V^L)
        lq = learner.chunk_law(i)[:, to_learner]
        with np.errstate(invalid="ignore", divide="ignore"):
            log_alpha = advance_window(log_alpha[:, :, None] + 0.5 * (lp + lq), vocab, length,
                                 n_states, log=True)
            probs = np.exp(lp)
            support = probs > 0
            finite = support & np.isfinite(lq)
            row_kl = np.where(finite, probs * np.where(finite, lp - lq, 0.0), 0.0).sum(-1)
        missing |= ((mass > 0) & (support & ~finite).any(-1)).any(-1)
        kl += (mass * row_kl).sum(-1)
        mass = advance_window(mass[:, :, None] * probs, vocab, length, n_states, log=False)
    return _combine(logsumexp(log_alpha, axis=1), kl, missing, log_mu)


def count_law_chunk_divergences(
    expert: CountLaw, learner: ChunkTables, log_mu: FloatArray
) -> tuple[float, float]:
    """``(D_H^2(P*, Q), KL(P* || Q))`` for a binary count-law expert and a memory-0 chunk
    model."""
    _check(expert.horizon, 2, expert.log_seq.shape[0], learner, log_mu)
    if learner.memory != 0:
        raise ValueError(f"a count-law expert needs a memory-0 chunk model, got memory "
                         f"{learner.memory}")
    log_seq, horizon = expert.log_seq, expert.horizon
    n_ctx = log_seq.shape[0]
    log_g = np.zeros((n_ctx, 1))  # log G over the ones so far
    cross = np.zeros(n_ctx)  # sum_i E_{P*}[log q_i(o_i)]
    missing = np.zeros(n_ctx, dtype=bool)
    per_table: dict[int, tuple[FloatArray, FloatArray, FloatArray]] = {}
    for i in range(learner.num_chunks):
        key, length = learner.table_key(i), learner.chunk_length(i)
        if key not in per_table:
            lq = learner.chunk_law(i)[:, 0]  # (C, 2^L)
            ones = ones_per_outcome(length)
            marginal = count_law_chunk_logprobs(expert, length)  # (C, L + 1)
            g = np.full((n_ctx, length + 1), -np.inf)
            log_sum = np.zeros((n_ctx, length + 1))
            gap = np.zeros(n_ctx, dtype=bool)
            for j in range(length + 1):
                group = lq[:, ones == j]
                g[:, j] = logsumexp(0.5 * group, axis=1)
                log_sum[:, j] = group.sum(axis=1)
                gap |= (marginal[:, j] > -np.inf) & ~np.isfinite(group).all(axis=1)
            with np.errstate(invalid="ignore"):
                term = np.where(marginal > -np.inf, np.exp(marginal) * log_sum, 0.0).sum(1)
            per_table[key] = (g, term, gap)
        g, term, gap = per_table[key]
        log_g = _log_convolve(log_g, g)
        cross += np.where(gap, 0.0, term)
        missing |= gap
    with np.errstate(invalid="ignore"):
        log_bc_c = logsumexp(0.5 * log_seq + log_g, axis=1)
        weights = log_binomial(horizon)[None, :] + log_seq
        entropy_part = np.where(log_seq > -np.inf, np.exp(weights) * log_seq, 0.0).sum(1)
    return _combine(log_bc_c, entropy_part - cross, missing, log_mu)


def _log_convolve(log_a: FloatArray, log_b: FloatArray) -> FloatArray:
    """``log(a * b)`` (convolution along the last axis) of log arrays ``(C, n)``, ``(C, m)``."""
    n, m = log_a.shape[1], log_b.shape[1]
    terms = np.full((log_a.shape[0], m, n + m - 1), -np.inf)
    for j in range(m):  # over counts within a chunk, not over outcomes
        terms[:, j, j : j + n] = log_a + log_b[:, j : j + 1]
    return logsumexp(terms, axis=1)


def _combine(log_bc_c: FloatArray, kl_c: FloatArray, missing: FloatArray, log_mu: FloatArray
             ) -> tuple[float, float]:
    mu = np.exp(log_mu)
    log_bc = float(logsumexp(log_bc_c + log_mu))
    if (missing & (mu > 0)).any():
        kl = math.inf
    else:
        kl = checked_kl(float(np.sum(np.where(mu > 0, mu * kl_c, 0.0))))
    return hellinger2_from_log_bc(log_bc), kl


def _check(horizon: int, vocab: int, n_ctx: int, learner: ChunkTables, log_mu: FloatArray
           ) -> None:
    if (horizon, vocab) != (learner.horizon, learner.vocab_size):
        raise ValueError(f"expert (H={horizon}, V={vocab}) and chunk model "
                         f"(H={learner.horizon}, V={learner.vocab_size}) must share H and V")
    if n_ctx != learner.num_contexts or np.shape(log_mu) != (n_ctx,):
        raise ValueError("expert, chunk model and log_mu must share the number of contexts")
