"""Chunk laws: sequence models that emit ``K`` tokens at a time (the form of ChunkedBC).

A chunk model cuts ``a_{1:H}`` into ``ceil(H / K)`` chunks of ``K`` consecutive tokens (the
last holds ``L = H mod K`` tokens when ``K`` does not divide ``H``) and gives each chunk a
law over its ``V^K`` (or ``V^L``) outcomes given the context and the window of the
``memory`` tokens before the chunk:

``q_i(o | c, s)`` with ``o = sum_j b_j V^(K-1-j)`` for the chunk tokens ``b_0..b_{K-1}``
(lexicographic: first token most significant) and ``s`` the window state before the chunk
start (conventions of :mod:`ntp_envs.sequence_model`: most recent token least significant,
tokens before the sequence start read as 0).

:class:`ChunkTables` stores ``logq[c, t, s, o]`` for the full chunks (chunk ``i`` uses table
``t = min(i, T - 1)``) and ``last[c, s, o]`` for a shorter last chunk. The token
conditionals are the chunk law marginalised within the chunk,
``pi(b_j | c, s, b_{<j}) = q(b_{<=j} | c, s) / q(b_{<j} | c, s)`` with
``q(b_{<=j}) = sum_{b_{>j}} q(b)``, so the product of the conditionals over a chunk
reproduces the chunk law exactly. Within a chunk a token depends on the ``memory`` tokens
before the chunk and the chunk tokens before it: the model is finite-state with memory
``memory + K - 1`` and ``T = H`` (phase-dependent) table positions
(:meth:`ChunkTables.finite_state`).

Also here: the chunk laws of finite-state and count-law models
(:func:`finite_state_chunk_logprobs`, :func:`count_law_chunk_logprobs`), shared by
ChunkedBC's population fits and the chunk-level evaluator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from ntp_envs.sequence_model import (
    CountLaw,
    FiniteStateTables,
    TabulatedModel,
    log_binomial,
    window_states,
)
from ntp_envs.type_aliases import FloatArray, IntArray

__all__ = [
    "MAX_CHUNK_OUTCOMES",
    "MAX_CHUNK_TABLE_ELEMENTS",
    "MAX_FINITE_STATE_ELEMENTS",
    "ChunkModel",
    "ChunkTables",
    "advance_window",
    "check_chunk_size",
    "chunk_codes",
    "chunk_tokens",
    "count_law_chunk_logprobs",
    "finite_state_chunk_logprobs",
    "ones_per_outcome",
]

MAX_CHUNK_OUTCOMES = 2**16
"""Memory cap on the chunk vocabulary: ``V**K <= 65536`` (``K <= 16`` for binary tokens,
``K <= 10`` for ``V = 3``)."""

MAX_CHUNK_TABLE_ELEMENTS = 2**24
"""Memory cap on one chunk table, ``C * T * V**memory * V**K`` float64 entries (128 MiB)."""

MAX_FINITE_STATE_ELEMENTS = 2**22
"""Largest token-level finite-state form (``C * H * V**(memory + K - 1) * V`` entries) that
:meth:`ChunkTables.finite_state` builds; larger chunk models have none."""


def check_chunk_size(chunk_size: object, vocab_size: int, horizon: int) -> int:
    """``chunk_size`` as an int ``K`` in ``[1, H]`` with ``V**K <= MAX_CHUNK_OUTCOMES``.

    ValueError naming the accepted range otherwise; nothing is allocated.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    k = int(chunk_size)
    if k < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {k}")
    if k > horizon:
        raise ValueError(f"chunk_size must lie in [1, H = {horizon}], got {k}")
    largest = int(math.floor(math.log(MAX_CHUNK_OUTCOMES, vocab_size) + 1e-9))
    if vocab_size**k > MAX_CHUNK_OUTCOMES:
        raise ValueError(
            f"chunk_size must satisfy V**K <= {MAX_CHUNK_OUTCOMES} (memory cap), i.e. lie in "
            f"[1, {min(largest, horizon)}] for V = {vocab_size}; got K = {k} "
            f"(V**K = {vocab_size}**{k})"
        )
    return k


def chunk_codes(tokens: IntArray, vocab_size: int) -> IntArray:
    """Lexicographic outcome codes of chunks ``(..., L)`` -> ``(...)`` (first token most
    significant)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    weights = vocab_size ** np.arange(tokens.shape[-1] - 1, -1, -1, dtype=np.int64)
    return tokens @ weights


def chunk_tokens(codes: IntArray, vocab_size: int, length: int) -> IntArray:
    """Inverse of :func:`chunk_codes`: codes ``(...)`` -> tokens ``(..., length)``."""
    weights = vocab_size ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return (np.asarray(codes, dtype=np.int64)[..., None] // weights) % vocab_size


def ones_per_outcome(length: int) -> IntArray:
    """Number of ones in each binary chunk outcome ``o in [0, 2**length)``."""
    return chunk_tokens(np.arange(2**length), 2, length).sum(axis=-1)


def _shift_states(states: IntArray, codes: IntArray, vocab: int, length: int,
                  n_states: int) -> IntArray:
    """Window state after a chunk of ``length`` tokens with code ``codes``."""
    if n_states == 1:
        return np.zeros(np.broadcast_shapes(np.shape(states), np.shape(codes)), dtype=np.int64)
    return (states * vocab**length + codes) % n_states


def advance_window(x: FloatArray, vocab: int, length: int, n_states: int, *, log: bool
                   ) -> FloatArray:
    """Sum ``x[c, s, o]`` (state ``s`` before a chunk of ``length`` tokens, outcome ``o``)
    into the state after it, ``s' = (s V^length + o) mod n_states``: ``(C, n_states)``.

    ``log=True`` sums log-weights (logsumexp), else plain weights.
    """
    def total(a: FloatArray, axis: int) -> FloatArray:
        return logsumexp(a, axis=axis) if log else a.sum(axis=axis)

    n_ctx = x.shape[0]
    if n_states == 1:
        return total(x.reshape(n_ctx, -1), 1)[:, None]
    if vocab**length >= n_states:  # s' = o mod S
        return total(total(x, 1).reshape(n_ctx, -1, n_states), 1)
    # s = hi V^(M - L) + lo  ->  s' = lo V^L + o
    x = x.reshape(n_ctx, vocab**length, n_states // vocab**length, vocab**length)
    return total(x, 1).reshape(n_ctx, n_states)


def _prefix_tables(logq: FloatArray, vocab: int, length: int) -> list[FloatArray]:
    """Token conditionals ``cond[j][..., p, a]`` (``p`` = code of the first ``j`` chunk tokens)
    of chunk laws ``logq[..., o]`` over ``V**length`` outcomes."""
    lead = logq.shape[:-1]
    prefix = logq  # log q(first j + 1 tokens), j = length - 1
    out: list[FloatArray] = [np.empty(0)] * length
    for j in range(length - 1, -1, -1):
        joint = prefix.reshape(*lead, vocab**j, vocab)
        prefix = logsumexp(joint, axis=-1)
        with np.errstate(invalid="ignore"):
            cond = joint - prefix[..., None]
        # an impossible prefix has no conditional: use the uniform law there
        out[j] = np.where(np.isfinite(prefix)[..., None], cond, -math.log(vocab))
    return out


@dataclass(frozen=True)
class ChunkTables:
    """Chunk laws ``logq (C, T, V**memory, V**K)`` of full chunks and ``last (C, V**memory,
    V**L)`` of a shorter last chunk (``None`` when ``K`` divides ``H``); see module doc."""

    logq: FloatArray
    last: FloatArray | None
    chunk_size: int
    memory: int
    horizon: int
    vocab_size: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocab, k, h = self.vocab_size, self.chunk_size, self.horizon
        if vocab < 2 or h < 1:
            raise ValueError(f"vocab_size must be >= 2 and horizon >= 1, got {vocab}, {h}")
        check_chunk_size(k, vocab, h)
        if self.memory < 0:
            raise ValueError(f"memory must be >= 0, got {self.memory}")
        logq = np.asarray(self.logq, dtype=np.float64)
        n_states, n_full, rest = vocab**self.memory, h // k, h % k
        if logq.ndim != 4 or logq.shape[2:] != (n_states, vocab**k):
            raise ValueError(f"logq must have shape (C, T, {n_states}, {vocab**k}), "
                             f"got {logq.shape}")
        if not 1 <= logq.shape[1] <= n_full:
            raise ValueError(f"logq has {logq.shape[1]} table positions; need 1..{n_full}")
        _check_normalised("logq", logq)
        last = None
        if rest:
            if self.last is None:
                raise ValueError(f"H = {h} is not a multiple of K = {k}: last (the law of the "
                                 f"last {rest} tokens) is required")
            last = np.asarray(self.last, dtype=np.float64)
            if last.shape != (logq.shape[0], n_states, vocab**rest):
                raise ValueError(f"last must have shape ({logq.shape[0]}, {n_states}, "
                                 f"{vocab**rest}), got {last.shape}")
            _check_normalised("last", last)
        elif self.last is not None:
            raise ValueError(f"K = {k} divides H = {h}: last must be None")
        object.__setattr__(self, "logq", logq)
        object.__setattr__(self, "last", last)

    # ------------------------------------------------------------------ structure

    @property
    def num_contexts(self) -> int:
        return int(self.logq.shape[0])

    @property
    def num_positions(self) -> int:
        """Distinct tables ``T`` of the full chunks."""
        return int(self.logq.shape[1])

    @property
    def num_states(self) -> int:
        return int(self.logq.shape[2])

    @property
    def num_full_chunks(self) -> int:
        return self.horizon // self.chunk_size

    @property
    def num_chunks(self) -> int:
        return -(-self.horizon // self.chunk_size)

    def chunk_start(self, i: int) -> int:
        """First position of chunk ``i``."""
        return i * self.chunk_size

    def chunk_length(self, i: int) -> int:
        """Tokens in chunk ``i``."""
        return min(self.chunk_size, self.horizon - i * self.chunk_size)

    def table_key(self, i: int) -> int:
        """Identifies chunk ``i``'s table: ``t`` for a full chunk, ``-1`` for the last short one."""
        return min(i, self.num_positions - 1) if i < self.num_full_chunks else -1

    def chunk_law(self, i: int) -> FloatArray:
        """``log q_i(o | c, s)``: shape ``(C, V**memory, V**L_i)``."""
        key = self.table_key(i)
        return self.logq[:, key] if key >= 0 else self.last  # type: ignore[return-value]

    def select_contexts(self, index: IntArray) -> ChunkTables:
        """The same model with contexts reordered/selected by ``index``."""
        index = np.asarray(index, dtype=np.int64)
        return ChunkTables(self.logq[index], None if self.last is None else self.last[index],
                           self.chunk_size, self.memory, self.horizon, self.vocab_size)

    def _conditionals(self, key: int) -> list[FloatArray]:
        """Cached token conditionals of table ``key`` (see :func:`_prefix_tables`)."""
        name = ("cond", key)
        if name not in self._cache:
            length = self.chunk_size if key >= 0 else self.horizon % self.chunk_size
            law = self.logq[:, key] if key >= 0 else self.last
            self._cache[name] = _prefix_tables(law, self.vocab_size, length)
        return self._cache[name]

    def token_conditionals(self, i: int) -> list[FloatArray]:
        """For chunk ``i``: ``cond[j][c, s, p, a] = log pi(b_j = a | c, s, prefix code p)``,
        ``j = 0..L_i - 1`` (each row sums to one)."""
        return self._conditionals(self.table_key(i))

    # ---------------------------------------------------------------- likelihoods

    def chunk_states(self, tokens: IntArray) -> IntArray:
        """Window state before each chunk start, ``(B, num chunks covered by tokens)``."""
        tokens = np.asarray(tokens, dtype=np.int64)
        starts = np.arange(0, tokens.shape[1], self.chunk_size)
        return window_states(tokens, self.memory, self.vocab_size)[:, starts]

    def sequence_logprob(self, context_index: IntArray, tokens: IntArray) -> FloatArray:
        """Exact ``log q(a_{1:H} | c) = sum_i log q_i(o_i | c, s_i)`` for ``(B, H)`` tokens."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.shape[1] != self.horizon:
            raise ValueError(f"tokens must have shape (B, {self.horizon}), got {tokens.shape}")
        ctx = np.asarray(context_index, dtype=np.int64)
        states = self.chunk_states(tokens)
        k, n_full, vocab = self.chunk_size, self.num_full_chunks, self.vocab_size
        codes = chunk_codes(tokens[:, : n_full * k].reshape(len(ctx), n_full, k), vocab)
        t = np.minimum(np.arange(n_full), self.num_positions - 1)[None, :]
        total = self.logq[ctx[:, None], t, states[:, :n_full], codes].sum(axis=1)
        if self.last is not None:
            last_code = chunk_codes(tokens[:, n_full * k :], vocab)
            total = total + self.last[ctx, states[:, n_full], last_code]
        return total

    def token_logprobs(self, context_index: IntArray, tokens: IntArray) -> FloatArray:
        """``(B, L)`` token log-probabilities (the chunk law marginalised within chunks)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        ctx = np.asarray(context_index, dtype=np.int64)
        length, k, vocab = tokens.shape[1], self.chunk_size, self.vocab_size
        # later tokens never change earlier conditionals: pad to H and cut
        padded = np.zeros((len(ctx), self.horizon), dtype=np.int64)
        padded[:, :length] = tokens
        states = self.chunk_states(padded)
        out = np.empty((len(ctx), self.horizon), dtype=np.float64)
        groups: dict[int, list[int]] = {}
        for i in range(self.num_chunks):
            if self.chunk_start(i) < length:
                groups.setdefault(self.table_key(i), []).append(i)
        for key, chunks in groups.items():
            idx = np.array(chunks)
            cond = self._conditionals(key)
            prefix = np.zeros((len(ctx), len(idx)), dtype=np.int64)
            for j, table in enumerate(cond):
                pos = idx * k + j
                a = padded[:, pos]
                out[:, pos] = table[ctx[:, None], states[:, idx], prefix, a]
                prefix = prefix * vocab + a
        return out[:, :length]

    def next_token_logprobs(self, context_index: IntArray, prefixes: IntArray) -> FloatArray:
        """``(B, V)`` log-probabilities of the next token after ``(B, h)`` prefixes, ``h < H``."""
        prefixes = np.asarray(prefixes, dtype=np.int64)
        ctx = np.asarray(context_index, dtype=np.int64)
        h = prefixes.shape[1]
        i, j = divmod(h, self.chunk_size)
        start = i * self.chunk_size
        state = np.zeros(len(ctx), dtype=np.int64)
        for lag in range(1, min(self.memory, start) + 1):
            state += prefixes[:, start - lag] * self.vocab_size ** (lag - 1)
        code = chunk_codes(prefixes[:, start:h], self.vocab_size)
        return self.token_conditionals(i)[j][ctx, state, code]

    def sample(self, context_index: IntArray, rng: np.random.Generator) -> IntArray:
        """``(B, H)`` sequences drawn chunk by chunk (inverse CDF per chunk law row)."""
        ctx = np.asarray(context_index, dtype=np.int64)
        tokens = np.empty((len(ctx), self.horizon), dtype=np.int64)
        state = np.zeros(len(ctx), dtype=np.int64)
        for i in range(self.num_chunks):
            key, length = self.table_key(i), self.chunk_length(i)
            cdf = self._cdf(key)
            rows = ctx * self.num_states + state
            codes = np.empty(len(ctx), dtype=np.int64)
            u = rng.random(len(ctx))
            for row in np.unique(rows):
                hit = rows == row
                line = cdf[row]
                codes[hit] = np.searchsorted(line, u[hit] * line[-1], side="right")
            codes = np.minimum(codes, self.vocab_size**length - 1)
            start = self.chunk_start(i)
            tokens[:, start : start + length] = chunk_tokens(codes, self.vocab_size, length)
            state = _shift_states(state, codes, self.vocab_size, length, self.num_states)
        return tokens

    def _cdf(self, key: int) -> FloatArray:
        name = ("cdf", key)
        if name not in self._cache:
            law = self.logq[:, key] if key >= 0 else self.last
            assert law is not None
            self._cache[name] = np.cumsum(np.exp(law), axis=-1).reshape(-1, law.shape[-1])
        return self._cache[name]

    # ----------------------------------------------------------- finite-state form

    def finite_state_elements(self) -> int:
        """Entries of the token-level finite-state form (see :meth:`finite_state`)."""
        memory = self.memory + self.chunk_size - 1
        positions = self.horizon if self.chunk_size > 1 else self.num_positions
        return self.num_contexts * positions * self.vocab_size ** (memory + 1)

    def finite_state(self) -> FiniteStateTables | None:
        """Token-level tables: memory ``memory + K - 1``, ``T = H`` positions (``T`` as the
        chunk tables when ``K = 1``); ``None`` above :data:`MAX_FINITE_STATE_ELEMENTS`."""
        if self.finite_state_elements() > MAX_FINITE_STATE_ELEMENTS:
            return None
        if "finite_state" not in self._cache:
            self._cache["finite_state"] = self._build_finite_state()
        return self._cache["finite_state"]

    def _build_finite_state(self) -> FiniteStateTables:
        k, vocab, n_ctx = self.chunk_size, self.vocab_size, self.num_contexts
        if k == 1:
            return FiniteStateTables(self.logq, self.memory, self.horizon)
        memory = self.memory + k - 1
        wide = np.arange(vocab**memory)
        logp = np.empty((n_ctx, self.horizon, vocab**memory, vocab))
        for i in range(self.num_chunks):
            cond = self.token_conditionals(i)
            for j in range(self.chunk_length(i)):
                prefix = wide % vocab**j
                state = (wide // vocab**j) % self.num_states
                logp[:, self.chunk_start(i) + j] = cond[j][:, state, prefix]
        return FiniteStateTables(logp, memory, self.horizon)


def _check_normalised(name: str, logq: FloatArray) -> None:
    if np.isnan(logq).any() or np.abs(logsumexp(logq, axis=-1)).max() > 1e-8:
        raise ValueError(f"{name} rows must be normalised log-probabilities")


class ChunkModel(TabulatedModel):
    """A sequence model given by chunk tables over a finite prompt law."""

    tables: ChunkTables

    def chunk_tables(self) -> ChunkTables:
        return self.tables

    def finite_state(self) -> FiniteStateTables | None:
        return self.tables.finite_state()

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        if prefixes.shape[1] >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, "
                             f"got {prefixes.shape[1]}")
        return self.tables.next_token_logprobs(self.prompts.index_of(prompts), prefixes)

    def sequence_logprob(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        tokens = self._check_tokens(tokens)
        if tokens.shape[1] < self.horizon:
            return self.token_logprobs(prompts, tokens).sum(axis=1)
        return self.tables.sequence_logprob(self.prompts.index_of(prompts), tokens)


# ------------------------------------------------------- chunk laws of other models


def finite_state_chunk_logprobs(tables: FiniteStateTables, start: int, length: int
                                ) -> FloatArray:
    """``log P(o | c, s)`` of the ``length`` tokens from position ``start`` given the window
    state ``s`` before them: shape ``(C, V**memory, V**length)`` (vectorised over outcomes)."""
    if start < 0 or length < 1 or start + length > tables.horizon:
        raise ValueError(f"chunk [{start}, {start + length}) must lie in [0, {tables.horizon})")
    vocab, n_states = tables.vocab_size, tables.num_states
    init = np.arange(n_states)
    logp = np.zeros((tables.num_contexts, n_states, 1))
    state = init[:, None]  # window state after each (initial state, prefix)
    for j in range(length):
        table = tables.at_position(start + j)  # (C, S, V)
        logp = (logp[:, :, :, None] + table[:, state]).reshape(tables.num_contexts, n_states, -1)
        codes = np.arange(vocab)[None, None, :]
        state = _shift_states(state[:, :, None], codes, vocab, 1, n_states).reshape(n_states, -1)
    return logp


def count_law_chunk_logprobs(law: CountLaw, length: int) -> FloatArray:
    """``log P(chunk = one given pattern with j ones)``, ``j = 0..length``, of an exchangeable
    binary law (the same for every chunk position): shape ``(C, length + 1)``."""
    horizon = law.horizon
    if not 1 <= length <= horizon:
        raise ValueError(f"length must lie in [1, {horizon}], got {length}")
    rest = log_binomial(horizon - length)  # ways to place the other ones
    n = np.arange(horizon + 1)
    out = np.full((law.log_seq.shape[0], length + 1), -np.inf)
    for j in range(length + 1):
        r = n - j
        ok = (r >= 0) & (r <= horizon - length)
        out[:, j] = logsumexp(law.log_seq[:, ok] + rest[r[ok]][None, :], axis=1)
    return out
