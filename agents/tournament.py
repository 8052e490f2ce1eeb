"""The rho tournament over chunks: its statistics, exact where the expert law allows.

The chunked rho objective of a candidate ``pi`` against ``pi'`` is
``sum_i sum_j tanh((l_pi'(o_ij | x, prefix) - l_pi(o_ij | x, prefix)) / 4)``: ``o_ij`` is
chunk ``j`` of sequence ``i`` (``K`` tokens; chunk 0 starts at position 0, the last one is
shorter when ``K`` does not divide ``H``) and ``l`` its conditional log-likelihood. With
``K = H`` it is the sequence-level rho-estimator (``psi(sqrt(r)) = tanh(log(r) / 4)``).

Everything reduces to one weighted tournament over *statistics*: a statistic carries the
chunk log-likelihood of every candidate and a weight; :func:`rho_tournament` scores it
(every candidate's score, ``O(K^2 m)`` for ``K`` candidates and ``m`` statistics) and
:func:`rho_winner` finds the same winner and its score computing full score rows only for
candidates that bounds cannot rule out (a few rows on the rho-estimator's logit grids).
The statistics come from (see :class:`TournamentSource`):

* demonstrations or sampled expert sequences: one statistic per (sequence, chunk), grouped
  by the count of ones of the chunk for i.i.d. binary candidates;
* the exact expert law (a population fit), in two forms:

  - a count-law expert (exchangeable binary) and i.i.d. binary candidates: a chunk's
    log-likelihood depends only on its number of ones ``j``, whose law is the same for every
    chunk of a given length: statistics ``(context, length, j)``, ``O(H / K + K)`` of them
    (those of negligible weight dropped before any candidate is evaluated on them);
  - a finite-state expert and finite-state candidates: for each chunk phase and window state
    ``s`` before the chunk, the law of the vector of candidate chunk log-likelihoods is built
    token by token, merging paths whose log-likelihood vectors agree (to
    :data:`ATOM_TOLERANCE`) into one atom; the weight of an atom is the expert's probability
    of ``s`` at the chunk starts of that phase times the atom's probability. Once a path
    reaches a state from which every model emits i.i.d. tokens for good (the same rows, at
    the expert's possible tokens, in every state it can reach: FiniteClassBarrier's coin
    and event states, memory-0 models), the rest of the chunk is a multinomial law over the
    counts of tokens with distinct candidate log-probabilities, in closed form: ``O(K)``
    atoms and no token-by-token work on the barrier (``O(H)`` at ``K = H``). In general the
    atoms are the ``V^K`` chunk outcomes; above :data:`MAX_ATOMS` atoms it gives up.

  Otherwise the population tournament runs on sampled expert sequences. Statistics whose
  weight is below ``1e-20`` of the total are dropped (their sum is below float64 rounding
  of the scores).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln

from agents.base import FittedPolicy
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


def _checked(loglik: FloatArray, weights: FloatArray | None) -> tuple[FloatArray, FloatArray]:
    """``loglik`` (K >= 1, m >= 1) and ``weights`` (m non-negative; default ones) as float64;
    ValueError naming the one that is wrong."""
    loglik = np.asarray(loglik, dtype=np.float64)
    if loglik.ndim != 2 or loglik.shape[0] < 1 or loglik.shape[1] < 1:
        raise ValueError(f"loglik must have shape (K >= 1, m >= 1), got {loglik.shape}")
    n_seq = loglik.shape[1]
    weights = np.ones(n_seq) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (n_seq,) or (weights < 0).any():
        raise ValueError(f"weights must be {n_seq} non-negative numbers")
    return loglik, weights


def rho_tournament(loglik: FloatArray, weights: FloatArray | None = None) -> tuple[int, FloatArray]:
    """Winner and scores ``max_k' sum_i w_i psi(...)`` of candidates (rows of ``loglik``).

    ``loglik[k, i]`` is the log-likelihood of sequence (or statistic) ``i`` under candidate
    ``k``; ``weights`` are multiplicities (default 1). Ties go to the lowest index.
    """
    loglik, weights = _checked(loglik, weights)
    n_cand, n_seq = loglik.shape
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


def rho_winner(loglik: FloatArray, weights: FloatArray | None = None, start: int | None = None
               ) -> tuple[int, float]:
    """The winner of :func:`rho_tournament` and its score, without every score.

    Any pair score ``S(k, k')`` bounds ``k``'s score from below, and pair scores are
    antisymmetric (``S(k, k') = -S(k', k)``), so a full score row ``S(k, .)`` also bounds
    every other candidate. A candidate is left out once a bound exceeds the best full score
    found by a margin (``1e-9`` of the total weight, for rounding); bounds come from full
    rows, then from a pattern search over ``k'`` (candidate order: a grid's neighbours are
    its neighbours in parameter) for each candidate still in, and full rows go to the
    lowest bound first, starting from ``start`` (a guess at the winner; default the
    candidate of largest weighted log-likelihood). The winner (ties to the lowest index) and
    its score are those of the full tournament, whatever the guess.
    """
    loglik, weights = _checked(loglik, weights)
    n_cand, n_seq = loglik.shape
    if n_cand <= 16:
        best, scores = rho_tournament(loglik, weights)
        return best, float(scores[best])
    pairs = _PairScores(loglik, weights)
    margin = 1e-9 * float(weights.sum())
    if start is None:
        with np.errstate(invalid="ignore"):
            fit = np.nan_to_num(np.where(weights > 0, loglik, 0.0) @ weights, nan=-np.inf)
        start = int(np.argmax(fit))
    elif not 0 <= start < n_cand:
        raise ValueError(f"start must lie in [0, {n_cand - 1}], got {start}")
    lower = np.full(n_cand, -np.inf)  # lower[j] = S(j, holder[j])
    holder = np.zeros(n_cand, dtype=np.int64)
    searched_from = np.full(n_cand, -1)  # the holder a pattern search last started from
    scores = np.full(n_cand, np.inf)
    done = np.zeros(n_cand, dtype=bool)
    k, top = int(start), np.inf
    while True:
        row = pairs.row(k)
        scores[k], done[k] = row.max(), True
        top = min(top, float(scores[k]))
        better = -row > lower
        lower[better], holder[better] = -row[better], k
        todo = np.flatnonzero(~done & (lower <= top + margin))
        if todo.size:  # k's best response may be the others' too (another mode)
            reply = np.full(todo.size, int(np.argmax(row)))
            got = pairs.pairs(todo, reply)
            up = got > lower[todo]
            lower[todo[up]], holder[todo[up]] = got[up], reply[up]
        todo = np.flatnonzero(~done & (lower <= top + margin) & (searched_from != holder))
        if todo.size:
            searched_from[todo] = holder[todo]
            lower[todo], holder[todo] = pairs.search(todo, holder[todo], lower[todo],
                                                     top + margin)
        open_ = ~done & (lower <= top + margin)
        if not open_.any():
            break
        k = int(np.flatnonzero(open_)[np.argmin(lower[open_])])
    best = int(np.argmin(scores))  # candidates without a full row keep +inf
    return best, float(scores[best])


class _PairScores:
    """``S(k, k') = sum_i w_i tanh((l_k'(i) - l_k(i)) / 4)``: full rows and pair searches."""

    def __init__(self, loglik: FloatArray, weights: FloatArray) -> None:
        self.loglik, self.weights = loglik, weights
        self.finite = bool(np.isfinite(loglik).all())
        self.rows = max(1, BLOCK_ELEMENTS // loglik.shape[1])

    def _psi(self, higher: FloatArray, lower: FloatArray) -> FloatArray:
        with np.errstate(invalid="ignore"):
            psi = np.subtract(higher, lower)
        if not self.finite:
            np.nan_to_num(psi, copy=False, nan=0.0)  # 0/0 (both impossible) counts 0
        psi *= 0.25
        np.tanh(psi, out=psi)
        return psi @ self.weights

    def row(self, k: int) -> FloatArray:
        """``S(k, k')`` for every ``k'``."""
        n = self.loglik.shape[0]
        return np.concatenate([self._psi(self.loglik[s : s + self.rows], self.loglik[k][None])
                               for s in range(0, n, self.rows)])

    def pairs(self, k: IntArray, other: IntArray) -> FloatArray:
        """``S(k[i], other[i])`` for every ``i``."""
        return np.concatenate([np.empty(0)] + [
            self._psi(self.loglik[other[s : s + self.rows]], self.loglik[k[s : s + self.rows]])
            for s in range(0, len(k), self.rows)])

    def search(self, k: IntArray, start: IntArray, value: FloatArray, target: float
               ) -> tuple[FloatArray, IntArray]:
        """Larger ``S(k, k')`` by a pattern search over ``k'`` from the best of ``start`` and
        ``k``'s neighbours (steps halving from a quarter of the candidates), stopping for each
        ``k`` once above ``target``."""
        n = self.loglik.shape[0]
        value, at = value.copy(), start.copy()
        for side in (1, -1):  # the neighbours: where the best response sits at large H
            live = np.flatnonzero((value <= target) & (0 <= k + side) & (k + side < n))
            got = self.pairs(k[live], k[live] + side)
            up = got > value[live]
            value[live[up]], at[live[up]] = got[up], k[live[up]] + side
        step = 1 << max(0, (n // 4).bit_length() - 1)
        while step >= 1:
            for _ in range(8):
                moved = False
                for sign in (1, -1):
                    live = np.flatnonzero(value <= target)
                    if not live.size:
                        return value, at
                    trial = np.clip(at[live] + sign * step, 0, n - 1)
                    got = self.pairs(k[live], trial)
                    up = got > value[live]
                    value[live[up]], at[live[up]] = got[up], trial[up]
                    moved |= bool(up.any())
                if not moved:
                    break
            step //= 2
        return value, at


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


def population_statistics(candidates: list[FittedPolicy], task: SequenceTask, chunk_size: int,
                          closed_form: bool = True) -> tuple[FloatArray, FloatArray] | None:
    """Exact ``(loglik, weights)`` under the expert law (module doc), or None where the
    expert's form, the candidates' or the atom cap does not allow it. ``closed_form=False``
    builds every finite-state atom token by token (the reference path, ``O(H^2)`` work)."""
    if not isinstance(task.prompts, FinitePrompts):
        return None
    mu = np.exp(task.prompts.log_probs)
    n_ctx = task.prompts.num_contexts
    law = task.expert.count_law()
    iid = iid_binary_logprobs(candidates)
    if law is not None and iid is not None and law.log_seq.shape[0] == n_ctx == iid.shape[1]:
        return _count_law_statistics(law, iid, chunk_size, mu)
    expert = task.expert.finite_state()
    tables = [c.finite_state() for c in candidates]
    if expert is None or any(t is None for t in tables):
        return None
    if any(t.num_contexts != n_ctx for t in [expert, *tables]):
        return None
    result = _finite_state_statistics(expert, tables, chunk_size, mu, closed_form)
    return None if result is None else _prune(*result)


def _prune(loglik: FloatArray, weights: FloatArray) -> tuple[FloatArray, FloatArray]:
    keep = weights > NEGLIGIBLE * weights.sum()
    return loglik[:, keep], weights[keep]


def _count_law_statistics(law: CountLaw, iid: FloatArray, chunk_size: int, mu: FloatArray
                          ) -> tuple[FloatArray, FloatArray]:
    """Statistics ``(context, length, ones)`` with non-negligible weight (:func:`_prune`'s
    rule), their candidate log-likelihoods computed for those only."""
    key, weight = _count_law_weights(law.log_seq.tobytes(), law.log_seq.shape, chunk_size,
                                     mu.tobytes())
    return _iid_loglik(iid, key[0], key[1], key[2]), weight.copy()


@functools.lru_cache(maxsize=8)
def _count_law_weights(log_seq: bytes, shape: tuple[int, int], chunk_size: int, mu: bytes
                       ) -> tuple[IntArray, FloatArray]:
    """``(keys (3, m), weights (m,))`` of the non-negligible statistics of a count law (given
    by value, so that a fit's successive tournaments share them)."""
    law = CountLaw(np.frombuffer(log_seq).reshape(shape))
    probs = np.frombuffer(mu)
    horizon = law.horizon
    per_length: dict[int, int] = {}
    for _, length in chunk_bounds(horizon, chunk_size):
        per_length[length] = per_length.get(length, 0) + 1
    keys, weights = [], []
    for length, chunks in per_length.items():
        log_probs = _chunk_count_logprobs(law, length) + log_binomial(length)[None, :]
        ctx, ones = (a.ravel() for a in np.meshgrid(np.arange(len(probs)),
                                                    np.arange(length + 1), indexing="ij"))
        keys.append(np.stack([ctx, np.full(ctx.shape, length), ones]))
        weights.append(chunks * probs[ctx] * np.exp(log_probs.ravel()))
    key, weight = np.concatenate(keys, axis=1), np.concatenate(weights)
    keep = weight > NEGLIGIBLE * weight.sum()
    return key[:, keep], weight[keep]


def _chunk_count_logprobs(law: CountLaw, length: int) -> FloatArray:
    """``log P(chunk = one given pattern with j ones)``, ``j = 0..length``, shape
    ``(C, length + 1)``: :func:`ntp_envs.chunk_tables.count_law_chunk_logprobs` (to rounding),
    in blocks of ``j`` instead of one ``j`` at a time."""
    horizon = law.horizon
    if length == horizon:
        return law.log_seq
    spread = horizon - length
    rest = log_binomial(spread)  # ways to place the other ones
    out = np.empty((law.log_seq.shape[0], length + 1))
    step = max(1, BLOCK_ELEMENTS // (4 * out.shape[0] * (spread + 1)))
    for j in range(0, length + 1, step):
        rows = np.arange(j, min(j + step, length + 1))
        terms = law.log_seq[:, rows[:, None] + np.arange(spread + 1)[None, :]] + rest
        top = terms.max(axis=2, keepdims=True)
        top[~np.isfinite(top)] = 0.0
        terms -= top
        np.exp(terms, out=terms)
        with np.errstate(divide="ignore"):
            out[:, rows] = np.log(terms.sum(axis=2)) + top[..., 0]
    return out


def _finite_state_statistics(expert: FiniteStateTables, tables: list[FiniteStateTables],
                             chunk_size: int, mu: FloatArray, closed_form: bool = True
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
    iid = _IidStates.build(expert, lifted) if closed_form else None
    logliks, weights = [], []
    for (start, length), mass in phases.items():
        atoms = _chunk_atoms(expert, lifted, start, length, iid)
        if atoms is None:
            return None
        ctx, origin, log_prob, loglik = atoms
        logliks.append(loglik.T)
        weights.append(mu[ctx] * mass[ctx, origin] * np.exp(log_prob))
    return np.concatenate(logliks, axis=1), np.concatenate(weights)


@dataclass(frozen=True)
class _IidStates:
    """Window states from which every model emits i.i.d. tokens for the rest of a chunk.

    At the stationary table position ``T - 1``, state ``s`` of context ``c`` qualifies when
    every state reachable from it along the expert's possible tokens has the same row as
    ``s`` in the expert and, at those tokens, in every candidate. From such a state the
    remaining ``R`` tokens of a chunk are i.i.d.; tokens whose candidate log-probabilities
    all agree form one group, and the candidate log-likelihoods depend only on the group
    counts, whose law is multinomial: ``C(R + G - 1, G - 1)`` atoms in closed form.
    """

    position: int
    good: np.ndarray  # (C, S) bool
    expert: FloatArray  # (C, S, V) expert log-probabilities at the stationary position
    candidates: FloatArray  # (C, S, V, K) candidate log-probabilities there

    @classmethod
    def build(cls, expert: FiniteStateTables, tables: list[FiniteStateTables]
              ) -> _IidStates | None:
        """The qualifying states (all models lifted to the same window and positions)."""
        t = expert.num_positions - 1
        n_ctx, n_states, vocab = expert.num_contexts, expert.num_states, expert.vocab_size
        width = vocab * (2 + len(tables))
        if n_ctx * n_states * vocab * width > BLOCK_ELEMENTS:
            return None
        logp = expert.logp[:, t]
        cand = np.stack([tab.logp[:, t] for tab in tables], axis=-1)
        allowed = np.isfinite(logp)
        signature = np.concatenate([
            allowed, np.where(allowed, logp, 0.0),
            np.where(allowed[..., None], cand, 0.0).reshape(n_ctx, n_states, -1)], axis=2)
        succ = (np.arange(n_states)[:, None] * vocab + np.arange(vocab)[None, :]) % n_states
        differs = (signature[:, succ] != signature[:, :, None, :]).any(axis=3)  # (C, S, V)
        tainted = (differs & allowed).any(axis=2)
        while True:  # states that can reach a differing one along possible tokens
            spread = tainted | (allowed & tainted[:, succ]).any(axis=2)
            if (spread == tainted).all():
                break
            tainted = spread
        return cls(t, ~tainted, logp, cand)

    def expand(self, ctx: IntArray, origin: IntArray, state: IntArray, log_prob: FloatArray,
               loglik: FloatArray, remaining: int
               ) -> tuple[IntArray, IntArray, FloatArray, FloatArray] | None:
        """Atoms after the last ``remaining`` tokens of the chunk, from atoms in qualifying
        states; None when the closed form would exceed the caps."""
        pairs, group = np.unique(np.stack([ctx, state], axis=1), axis=0, return_inverse=True)
        group = group.ravel()
        laws = [self._group_law(int(c), int(s), remaining) for c, s in pairs]
        sizes = np.array([0 if law is None else len(law[0]) for law in laws])
        if any(law is None for law in laws) or \
                int(sizes[group].sum()) * (1 + loglik.shape[1]) > BLOCK_ELEMENTS:
            return None
        out: list[list[np.ndarray]] = [[], [], [], []]
        for i, (law_prob, law_loglik) in enumerate(laws):  # type: ignore[misc]
            rows = np.flatnonzero(group == i)
            n = len(law_prob)
            out[0].append(np.repeat(ctx[rows], n))
            out[1].append(np.repeat(origin[rows], n))
            out[2].append((log_prob[rows, None] + law_prob[None, :]).ravel())
            out[3].append((loglik[rows, None, :] + law_loglik[None, :, :]).reshape(
                -1, loglik.shape[1]))
        return tuple(np.concatenate(part) for part in out)  # type: ignore[return-value]

    def _group_law(self, c: int, s: int, remaining: int
                   ) -> tuple[FloatArray, FloatArray] | None:
        """``(log P, candidate log-likelihoods (N, K))`` of the group counts of ``remaining``
        i.i.d. tokens from state ``s`` of context ``c``."""
        tokens = np.flatnonzero(np.isfinite(self.expert[c, s]))
        keys: dict[tuple[float, ...], list[int]] = {}
        for a in tokens:
            keys.setdefault(tuple(self.candidates[c, s, a].tolist()), []).append(int(a))
        groups = list(keys.values())
        n_groups = len(groups)
        if math.comb(remaining + n_groups - 1, n_groups - 1) > MAX_ATOMS:
            return None
        log_q = np.array([np.logaddexp.reduce(self.expert[c, s, g]) for g in groups])
        vectors = np.stack([self.candidates[c, s, g[0]] for g in groups])  # (G, K)
        counts = _compositions(remaining, n_groups)  # (N, G)
        with np.errstate(invalid="ignore"):
            log_prob = gammaln(remaining + 1) - gammaln(counts + 1).sum(axis=1) + \
                np.where(counts > 0, counts * log_q, 0.0).sum(axis=1)
            loglik = np.where(counts[:, :, None] > 0, counts[:, :, None] * vectors[None],
                              0.0).sum(axis=1)
        return log_prob, loglik


def _compositions(total: int, parts: int) -> IntArray:
    """Every ``(n_1, ..., n_parts)`` of non-negative integers summing to ``total``."""
    if parts == 1:
        return np.array([[total]], dtype=np.int64)
    if parts == 2:
        first = np.arange(total + 1)
        return np.stack([first, total - first], axis=1)
    bars = np.array(list(itertools.combinations(range(total + parts - 1), parts - 1)),
                    dtype=np.int64).reshape(-1, parts - 1)
    edges = np.concatenate([np.full((len(bars), 1), -1), bars,
                            np.full((len(bars), 1), total + parts - 1)], axis=1)
    return np.diff(edges, axis=1) - 1


def _chunk_atoms(expert: FiniteStateTables, tables: list[FiniteStateTables], start: int,
                 length: int, iid: _IidStates | None = None
                 ) -> tuple[IntArray, IntArray, FloatArray, FloatArray] | None:
    """Atoms ``(context, start state, log P*, candidate chunk log-likelihoods (N, K))`` of the
    chunk ``[start, start + length)`` given each window state before it: token by token,
    except that atoms in a state of ``iid`` jump to the chunk end in closed form."""
    n_ctx, n_states, vocab = expert.num_contexts, expert.num_states, expert.vocab_size
    ctx = np.repeat(np.arange(n_ctx), n_states)
    origin = np.tile(np.arange(n_states), n_ctx)
    state = origin.copy()
    log_prob = np.zeros(len(ctx))
    loglik = np.zeros((len(ctx), len(tables)))
    tokens = np.arange(vocab)
    done: list[tuple[IntArray, IntArray, FloatArray, FloatArray]] = []
    end = start + length
    for h in range(start, end):
        if iid is not None and h >= iid.position:
            take = iid.good[ctx, state]
            jumped = None if not take.any() else iid.expand(
                ctx[take], origin[take], state[take], log_prob[take], loglik[take], end - h)
            if jumped is None and take.any():
                iid = None  # over the caps: token by token for the rest of this chunk
            elif jumped is not None:
                done.append(jumped)
                keep = ~take
                ctx, origin, state = ctx[keep], origin[keep], state[keep]
                log_prob, loglik = log_prob[keep], loglik[keep]
                if not len(ctx):
                    break
        step = expert.at_position(h)[ctx, state]  # (N, V)
        cand = np.stack([t.at_position(h)[ctx, state] for t in tables], axis=-1)  # (N, V, K)
        ok = np.isfinite(step)
        rows, a = np.nonzero(ok)
        log_prob = log_prob[rows] + step[rows, a]
        loglik = loglik[rows] + cand[rows, a]
        ctx, origin = ctx[rows], origin[rows]
        state = (state[rows] * vocab + tokens[a]) % n_states
        last = h == end - 1
        ctx, origin, state, log_prob, loglik = _merge(ctx, origin, None if last else state,
                                                      log_prob, loglik)
        if len(ctx) > MAX_ATOMS:
            return None
    if not done:
        return ctx, origin, log_prob, loglik
    parts = [*done, (ctx, origin, log_prob, loglik)]
    ctx, origin, _, log_prob, loglik = _merge(
        *(np.concatenate([p[i] for p in parts]) for i in range(2)), None,
        *(np.concatenate([p[i] for p in parts]) for i in range(2, 4)))
    return None if len(ctx) > MAX_ATOMS else (ctx, origin, log_prob, loglik)


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
    closed_form: bool = True
    """``False``: finite-state atoms token by token (the reference path of
    :func:`population_statistics`)."""

    def statistics(self, candidates: list[FittedPolicy]) -> tuple[FloatArray, FloatArray]:
        """``(loglik, weights)`` for ``candidates``; sets :attr:`description`."""
        if not candidates:
            raise ValueError("the candidate set must not be empty")
        if self.prompts is None and self.description in ("", "exact"):
            exact = population_statistics(candidates, self.task, self.chunk_size,
                                          self.closed_form)
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

    def winner(self, candidates: list[FittedPolicy], start: int | None = None
               ) -> tuple[int, float]:
        """Tournament winner among ``candidates`` and its score (:func:`rho_winner`: the
        winner of :meth:`select` without every candidate's score; ``start`` a guess)."""
        return rho_winner(*self.statistics(candidates), start=start)


def rho_select(candidates: list[FittedPolicy], prompts: IntArray, tokens: IntArray
               ) -> tuple[int, FloatArray]:
    """Index of the sequence-level tournament winner among ``candidates`` on given sequences."""
    if not candidates:
        raise ValueError("the candidate set must not be empty")
    source = TournamentSource(candidates[0].task, tokens.shape[1], prompts, tokens)
    return source.select(candidates)


__all__ = ["ATOM_TOLERANCE", "MAX_ATOMS", "TournamentSource", "chunk_bounds",
           "iid_binary_logprobs", "population_statistics", "rho_select", "rho_tournament",
           "rho_winner", "sample_statistics"]
