"""The rho tournament over chunks: its statistics, exact where the expert law allows.

The chunked rho objective of a candidate ``pi`` against ``pi'`` is
``sum_i sum_j tanh((l_pi'(o_ij | x, prefix) - l_pi(o_ij | x, prefix)) / 4)``: ``o_ij`` is
chunk ``j`` of sequence ``i`` (``K`` tokens; chunk 0 starts at position 0, the last one is
shorter when ``K`` does not divide ``H``) and ``l`` its conditional log-likelihood. With
``K = H`` it is the sequence-level rho-estimator (``psi(sqrt(r)) = tanh(log(r) / 4)``).

Everything reduces to one weighted tournament over *statistics*: a statistic carries the
chunk log-likelihood of every candidate and a weight; :func:`rho_tournament` scores it.
The statistics come from (see :class:`TournamentSource`):

* demonstrations or sampled expert sequences: one statistic per (sequence, chunk), grouped
  by the count of ones of the chunk for i.i.d. binary candidates;
* the exact expert law (a population fit), in two forms:

  - a count-law expert (exchangeable binary) and i.i.d. binary candidates: a chunk's
    log-likelihood depends only on its number of ones ``j``, whose law is the same for every
    chunk of a given length: statistics ``(context, length, j)``, ``O(H / K + K)`` of them;
  - a finite-state expert and finite-state candidates: for each chunk phase and window state
    ``s`` before the chunk, the law of the vector of candidate chunk log-likelihoods is built
    token by token, merging paths whose log-likelihood vectors agree (to
    :data:`ATOM_TOLERANCE`) into one atom; the weight of an atom is the expert's probability
    of ``s`` at the chunk starts of that phase times the atom's probability. Models whose
    log-likelihoods depend on counts (FiniteClassBarrier, i.i.d. candidates) keep ``O(K)``
    atoms per state; in general the atoms are the ``V^K`` chunk outcomes. Above
    :data:`MAX_ATOMS` atoms it gives up.

  Otherwise the population tournament runs on sampled expert sequences. Statistics whose
  weight is below ``1e-20`` of the total are dropped (their sum is below float64 rounding
  of the scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.base import FittedPolicy
from ntp_envs.chunk_tables import count_law_chunk_logprobs
from ntp_envs.sequence_model import CountLaw, FinitePrompts, FiniteStateTables, log_binomial
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

BLOCK_ELEMENTS = 2**24
MAX_ATOMS = 2**16
"""Largest number of atoms (context, start state, end state, log-likelihood vector) the exact
finite-state statistics keep after any token; above it the population tournament samples."""
ATOM_TOLERANCE = 1e-9
"""Paths whose candidate log-likelihoods agree to this (absolute, in nats) share an atom."""
NEGLIGIBLE = 1e-20


def rho_tournament(loglik: FloatArray, weights: FloatArray | None = None) -> tuple[int, FloatArray]:
    """Winner and scores ``max_k' sum_i w_i psi(...)`` of candidates (rows of ``loglik``).

    ``loglik[k, i]`` is the log-likelihood of sequence (or statistic) ``i`` under candidate
    ``k``; ``weights`` are multiplicities (default 1). Ties go to the lowest index.
    """
    loglik = np.asarray(loglik, dtype=np.float64)
    if loglik.ndim != 2 or loglik.shape[0] < 1 or loglik.shape[1] < 1:
        raise ValueError(f"loglik must have shape (K >= 1, m >= 1), got {loglik.shape}")
    n_cand, n_seq = loglik.shape
    weights = np.ones(n_seq) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (n_seq,) or (weights < 0).any():
        raise ValueError(f"weights must be {n_seq} non-negative numbers")
    scores = np.full(n_cand, -np.inf)
    finite = bool(np.isfinite(loglik).all())
    rows = max(1, BLOCK_ELEMENTS // (n_cand * n_seq))
    for start in range(0, n_cand, rows):
        block = loglik[start : start + rows]  # (b, m): the "pi" side
        with np.errstate(invalid="ignore"):
            psi = np.subtract(loglik[None, :, :], block[:, None, :])  # (b, K, m): pi' vs pi
        if not finite:
            np.nan_to_num(psi, copy=False, nan=0.0)  # 0/0 (both impossible) counts 0
        psi *= 0.25
        np.tanh(psi, out=psi)
        scores[start : start + rows] = (psi @ weights).max(axis=1)
    return int(np.argmin(scores)), scores


def chunk_bounds(horizon: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(start, length)`` of every chunk: chunk 0 starts at 0, the last may be shorter."""
    return [(start, min(chunk_size, horizon - start)) for start in range(0, horizon, chunk_size)]


def iid_binary_logprobs(candidates: list[FittedPolicy]) -> FloatArray | None:
    """``(K, C, 2)`` token log-probabilities when every candidate is i.i.d. binary per context
    (memory 0, one table position), else None."""
    out = []
    for candidate in candidates:
        tables = candidate.finite_state()
        if tables is None or tables.memory != 0 or tables.num_positions != 1 or \
                tables.vocab_size != 2:
            return None
        out.append(tables.logp[:, 0, 0, :])
    return np.stack(out)


def _iid_loglik(logp: FloatArray, ctx: IntArray, length: IntArray, ones: IntArray
                ) -> FloatArray:
    """Chunk log-likelihoods ``(K, m)`` of i.i.d. binary candidates for statistics
    ``(context, chunk length, ones)``."""
    with np.errstate(invalid="ignore"):
        one = np.where(ones > 0, ones * logp[:, ctx, 1], 0.0)
        zero = np.where(length > ones, (length - ones) * logp[:, ctx, 0], 0.0)
    return one + zero


def sample_statistics(candidates: list[FittedPolicy], prompts: IntArray, tokens: IntArray,
                      chunk_size: int) -> tuple[FloatArray, FloatArray]:
    """``(loglik (K, m), weights (m,))`` of the chunks of the given sequences."""
    task = candidates[0].task
    horizon = tokens.shape[1]
    bounds = chunk_bounds(horizon, chunk_size)
    starts = np.array([s for s, _ in bounds])
    iid = iid_binary_logprobs(candidates)
    if iid is not None and isinstance(task.prompts, FinitePrompts):
        ctx = task.prompts.index_of(prompts)
        ones = np.add.reduceat(tokens, starts, axis=1)  # (n, chunks)
        lengths = np.array([n for _, n in bounds])
        keys = np.stack([np.repeat(ctx, len(bounds)), np.tile(lengths, len(ctx)),
                         ones.ravel()], axis=1)
        keys, weights = np.unique(keys, axis=0, return_counts=True)
        loglik = _iid_loglik(iid, keys[:, 0], keys[:, 1], keys[:, 2])
        return loglik, weights.astype(np.float64)
    loglik = np.stack([np.add.reduceat(c.token_logprobs(prompts, tokens), starts, axis=1).ravel()
                       for c in candidates])
    return loglik, np.ones(loglik.shape[1])


def population_statistics(candidates: list[FittedPolicy], task: SequenceTask, chunk_size: int
                          ) -> tuple[FloatArray, FloatArray] | None:
    """Exact ``(loglik, weights)`` under the expert law (module doc), or None where the
    expert's form, the candidates' or the atom cap does not allow it."""
    if not isinstance(task.prompts, FinitePrompts):
        return None
    mu = np.exp(task.prompts.log_probs)
    n_ctx = task.prompts.num_contexts
    law = task.expert.count_law()
    iid = iid_binary_logprobs(candidates)
    if law is not None and iid is not None and law.log_seq.shape[0] == n_ctx == iid.shape[1]:
        return _prune(*_count_law_statistics(law, iid, chunk_size, mu))
    expert = task.expert.finite_state()
    tables = [c.finite_state() for c in candidates]
    if expert is None or any(t is None for t in tables):
        return None
    if any(t.num_contexts != n_ctx for t in [expert, *tables]):
        return None
    result = _finite_state_statistics(expert, tables, chunk_size, mu)
    return None if result is None else _prune(*result)


def _prune(loglik: FloatArray, weights: FloatArray) -> tuple[FloatArray, FloatArray]:
    keep = weights > NEGLIGIBLE * weights.sum()
    return loglik[:, keep], weights[keep]


def _count_law_statistics(law: CountLaw, iid: FloatArray, chunk_size: int, mu: FloatArray
                          ) -> tuple[FloatArray, FloatArray]:
    horizon = law.horizon
    per_length: dict[int, int] = {}
    for _, length in chunk_bounds(horizon, chunk_size):
        per_length[length] = per_length.get(length, 0) + 1
    logliks, weights = [], []
    for length, chunks in per_length.items():
        if length == horizon:
            log_probs = law.log_seq + log_binomial(horizon)[None, :]  # (C, H + 1)
        else:
            log_probs = count_law_chunk_logprobs(law, length) + log_binomial(length)[None, :]
        ctx, ones = (a.ravel() for a in np.meshgrid(np.arange(len(mu)), np.arange(length + 1),
                                                    indexing="ij"))
        logliks.append(_iid_loglik(iid, ctx, np.full(ctx.shape, length), ones))
        weights.append(chunks * mu[ctx] * np.exp(log_probs.ravel()))
    return np.concatenate(logliks, axis=1), np.concatenate(weights)


def _finite_state_statistics(expert: FiniteStateTables, tables: list[FiniteStateTables],
                             chunk_size: int, mu: FloatArray
                             ) -> tuple[FloatArray, FloatArray] | None:
    memory = max(expert.memory, *(t.memory for t in tables))
    positions = max(expert.num_positions, *(t.num_positions for t in tables))
    expert = expert.lift(memory, positions)
    lifted = [t.lift(memory, positions) for t in tables]
    marginals = expert.forward_marginals()  # (C, H, S)
    phases: dict[tuple[int, int], FloatArray] = {}
    for start, length in chunk_bounds(expert.horizon, chunk_size):
        key = (min(start, positions - 1), length)
        phases[key] = phases.get(key, 0.0) + marginals[:, start]
    logliks, weights = [], []
    for (start, length), mass in phases.items():
        atoms = _chunk_atoms(expert, lifted, start, length)
        if atoms is None:
            return None
        ctx, origin, log_prob, loglik = atoms
        logliks.append(loglik.T)
        weights.append(mu[ctx] * mass[ctx, origin] * np.exp(log_prob))
    return np.concatenate(logliks, axis=1), np.concatenate(weights)


def _chunk_atoms(expert: FiniteStateTables, tables: list[FiniteStateTables], start: int,
                 length: int) -> tuple[IntArray, IntArray, FloatArray, FloatArray] | None:
    """Atoms ``(context, start state, log P*, candidate chunk log-likelihoods (N, K))`` of the
    chunk ``[start, start + length)`` given each window state before it."""
    n_ctx, n_states, vocab = expert.num_contexts, expert.num_states, expert.vocab_size
    ctx = np.repeat(np.arange(n_ctx), n_states)
    origin = np.tile(np.arange(n_states), n_ctx)
    state = origin.copy()
    log_prob = np.zeros(len(ctx))
    loglik = np.zeros((len(ctx), len(tables)))
    tokens = np.arange(vocab)
    for h in range(start, start + length):
        step = expert.at_position(h)[ctx, state]  # (N, V)
        cand = np.stack([t.at_position(h)[ctx, state] for t in tables], axis=-1)  # (N, V, K)
        ok = np.isfinite(step)
        rows, a = np.nonzero(ok)
        log_prob = log_prob[rows] + step[rows, a]
        loglik = loglik[rows] + cand[rows, a]
        ctx, origin = ctx[rows], origin[rows]
        state = (state[rows] * vocab + tokens[a]) % n_states
        last = h == start + length - 1
        ctx, origin, state, log_prob, loglik = _merge(ctx, origin, None if last else state,
                                                      log_prob, loglik)
        if len(ctx) > MAX_ATOMS:
            return None
    return ctx, origin, log_prob, loglik


def _merge(ctx: IntArray, origin: IntArray, state: IntArray | None, log_prob: FloatArray,
           loglik: FloatArray) -> tuple[IntArray, IntArray, IntArray, FloatArray, FloatArray]:
    """Merge atoms with equal ``(ctx, origin, state, rounded loglik)``, adding probabilities."""
    with np.errstate(invalid="ignore"):
        rounded = np.where(np.isfinite(loglik), np.round(loglik / ATOM_TOLERANCE),
                           np.iinfo(np.int64).min).astype(np.int64)
    columns = [ctx, origin] + ([] if state is None else [state])
    keys = np.concatenate([np.stack(columns, axis=1), rounded], axis=1)
    _, first, group = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    group = group.ravel()
    n = len(first)
    top = np.full(n, -np.inf)
    np.maximum.at(top, group, log_prob)
    merged = np.log(np.bincount(group, weights=np.exp(log_prob - top[group]), minlength=n)) + top
    state_out = np.zeros(n, dtype=np.int64) if state is None else state[first]
    return ctx[first], origin[first], state_out, merged, loglik[first]


@dataclass
class TournamentSource:
    """Where a fit's tournament statistics come from: demonstrations, or (a population fit,
    ``prompts is None``) the exact expert law, else ``population_samples`` expert sequences."""

    task: SequenceTask
    chunk_size: int
    prompts: IntArray | None = None
    tokens: IntArray | None = None
    population_samples: int = 20_000
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    description: str = ""

    def statistics(self, candidates: list[FittedPolicy]) -> tuple[FloatArray, FloatArray]:
        """``(loglik, weights)`` for ``candidates``; sets :attr:`description`."""
        if not candidates:
            raise ValueError("the candidate set must not be empty")
        if self.prompts is None and self.description in ("", "exact"):
            exact = population_statistics(candidates, self.task, self.chunk_size)
            if exact is not None:
                self.description = "exact"
                return exact
            self.prompts, self.tokens = self.task.sample_demonstrations(
                self.population_samples, self.rng)
            self.description = f"sampled, n={self.population_samples}"
        elif not self.description:
            self.description = f"demonstrations, n={len(self.prompts)}"
        assert self.prompts is not None and self.tokens is not None
        return sample_statistics(candidates, self.prompts, self.tokens, self.chunk_size)

    def select(self, candidates: list[FittedPolicy]) -> tuple[int, FloatArray]:
        """Tournament winner and scores among ``candidates``."""
        return rho_tournament(*self.statistics(candidates))


def rho_select(candidates: list[FittedPolicy], prompts: IntArray, tokens: IntArray
               ) -> tuple[int, FloatArray]:
    """Index of the sequence-level tournament winner among ``candidates`` on given sequences."""
    if not candidates:
        raise ValueError("the candidate set must not be empty")
    source = TournamentSource(candidates[0].task, tokens.shape[1], prompts, tokens)
    return source.select(candidates)


__all__ = ["ATOM_TOLERANCE", "MAX_ATOMS", "TournamentSource", "chunk_bounds",
           "iid_binary_logprobs", "population_statistics", "rho_select", "rho_tournament",
           "sample_statistics"]
