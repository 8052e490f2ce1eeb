"""The sequence-model protocol shared by experts, agents and the evaluator.

A *sequence law* is ``P^pi(x, a_{1:H}) = mu(x) prod_h pi_h(a_h | x, a_{<h})``.
Here ``mu`` is a :class:`PromptDistribution` (prompts are int token arrays of shape
``(B, prompt_length)``) and ``pi`` is a :class:`SequenceModel`, which answers batched
next-token log-probabilities, exact sequence log-likelihoods (in log space; ``mu`` is not
included) and batched sampling with a numpy ``Generator``.

Models that depend only on ``(x, h, last k tokens)`` also expose their finite-state form,
:class:`FiniteStateTables`, which the evaluator uses for exact divergences at any horizon.
Binary models whose sequence probability depends only on the number of ones (products and
mixtures of products) expose a :class:`CountLaw` (sufficient statistics).

Conventions (used everywhere in the suite):

* positions are 0-indexed: at position ``h`` the prefix holds ``h`` tokens;
* the window state of memory ``k`` at position ``h`` is
  ``s = sum_{j=1..k} a_{h-j} V^{j-1}`` (most recent token = least significant digit),
  with tokens before the start of the sequence read as ``0``; after emitting ``a`` the
  state becomes ``(s * V) mod V^k + a``;
* tables are stored for ``T <= H`` distinct positions: position ``h`` uses table index
  ``min(h, T - 1)`` (time-homogeneous after ``T - 1``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import gammaln, logsumexp

from ntp_envs.type_aliases import FloatArray, IntArray

if TYPE_CHECKING:
    from ntp_envs.chunk_tables import ChunkTables

__all__ = [
    "CountLaw",
    "DeterministicModel",
    "FinitePrompts",
    "FiniteStateModel",
    "FiniteStateTables",
    "PromptDistribution",
    "SequenceModel",
    "TabulatedModel",
    "TeacherForcedModel",
    "UniformPrompts",
    "sample_categorical",
    "window_states",
]


def sample_categorical(logp: FloatArray, rng: np.random.Generator) -> IntArray:
    """Draw one index per row of ``logp`` (shape ``(B, V)``, rows are log-probabilities)."""
    cdf = np.cumsum(np.exp(logp - logp.max(axis=1, keepdims=True)), axis=1)
    u = rng.random(logp.shape[0]) * cdf[:, -1]
    return np.minimum((u[:, None] >= cdf).sum(axis=1), logp.shape[1] - 1).astype(np.int64)


def window_states(tokens: IntArray, memory: int, vocab_size: int) -> IntArray:
    """Window state before each position: ``(B, L)`` tokens -> ``(B, L)`` states."""
    tokens = np.asarray(tokens, dtype=np.int64)
    states = np.zeros(tokens.shape, dtype=np.int64)
    for j in range(1, min(memory, tokens.shape[1]) + 1):
        states[:, j:] += tokens[:, :-j] * vocab_size ** (j - 1)
    return states


class PromptDistribution(ABC):
    """The prompt law ``mu``: prompts are int arrays of shape ``(B, prompt_length)``."""

    prompt_length: int

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        """Draw ``n`` prompts, shape ``(n, prompt_length)``."""


@dataclass(frozen=True)
class FinitePrompts(PromptDistribution):
    """A prompt law with finite support ``contexts`` (shape ``(C, L)``) and ``log_probs``."""

    contexts: IntArray
    log_probs: FloatArray

    def __post_init__(self) -> None:
        contexts = np.asarray(self.contexts, dtype=np.int64)
        log_probs = np.asarray(self.log_probs, dtype=np.float64)
        if contexts.ndim != 2 or contexts.shape[0] < 1:
            raise ValueError(f"contexts must have shape (C >= 1, L), got {contexts.shape}")
        if log_probs.shape != (contexts.shape[0],):
            raise ValueError(
                f"log_probs must have shape ({contexts.shape[0]},), got {log_probs.shape}"
            )
        if abs(logsumexp(log_probs)) > 1e-9:
            raise ValueError("log_probs must be normalised (logsumexp == 0)")
        object.__setattr__(self, "contexts", contexts)
        object.__setattr__(self, "log_probs", log_probs)
        identity = contexts.shape[1] == 1 and np.array_equal(
            contexts[:, 0], np.arange(contexts.shape[0])
        )
        object.__setattr__(self, "_is_identity", bool(identity))

    @property
    def prompt_length(self) -> int:  # type: ignore[override]
        return int(self.contexts.shape[1])

    @property
    def num_contexts(self) -> int:
        return int(self.contexts.shape[0])

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        return self.contexts[self.sample_index(n, rng)]

    def sample_index(self, n: int, rng: np.random.Generator) -> IntArray:
        """Draw ``n`` support indices."""
        return sample_categorical(np.broadcast_to(self.log_probs, (n, self.num_contexts)), rng)

    def index_of(self, prompts: IntArray) -> IntArray:
        """Support index of each prompt; ValueError for a prompt outside the support."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.ndim != 2 or prompts.shape[1] != self.prompt_length:
            raise ValueError(
                f"prompts must have shape (B, {self.prompt_length}), got {prompts.shape}"
            )
        if self._is_identity:
            idx = prompts[:, 0]
            if idx.size and (idx.min() < 0 or idx.max() >= self.num_contexts):
                raise ValueError(f"prompt must lie in [0, {self.num_contexts - 1}]")
            return idx
        match = (prompts[:, None, :] == self.contexts[None, :, :]).all(axis=2)
        found = match.any(axis=1)
        if not found.all():
            bad = prompts[~found][0].tolist()
            raise ValueError(f"prompt {bad} is not in the support of this prompt law")
        return match.argmax(axis=1).astype(np.int64)


class SequenceModel(ABC):
    """Policy ``pi_h(a | x, a_{<h})`` over tokens ``{0..V-1}`` for ``H`` positions."""

    vocab_size: int
    horizon: int

    @abstractmethod
    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        """Log-probabilities ``(B, V)`` of the next token at position ``prefixes.shape[1]``."""

    def finite_state(self) -> FiniteStateTables | None:
        """Finite-state form, where the model has one (``None`` otherwise)."""
        return None

    def count_law(self) -> CountLaw | None:
        """Sufficient-statistic form for binary exchangeable models (``None`` otherwise)."""
        return None

    def chunk_tables(self) -> ChunkTables | None:
        """Chunk-by-chunk form (:mod:`ntp_envs.chunk_tables`), where the model has one."""
        return None

    def deterministic_sequences(self, prompts: IntArray) -> IntArray | None:
        """The one sequence ``(B, H)`` a deterministic model emits per prompt (``None`` when
        the model is not deterministic)."""
        return None

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        """``log pi_h(a_h | x, a_{<h})`` for each position: shape ``(B, L)``."""
        tokens = self._check_tokens(tokens)
        out = np.empty(tokens.shape, dtype=np.float64)
        rows = np.arange(tokens.shape[0])
        for h in range(tokens.shape[1]):
            out[:, h] = self.next_token_logprobs(prompts, tokens[:, :h])[rows, tokens[:, h]]
        return out

    def sequence_logprob(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        """Exact ``log prod_h pi_h(a_h | x, a_{<h})`` (``mu`` excluded), shape ``(B,)``."""
        return self.token_logprobs(prompts, tokens).sum(axis=1)

    def extension_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        """``(B, V)``: the log-likelihood of each one-token extension ``prefixes + [a]``
        (``mu`` excluded): with prefixes of length ``H - 1``, of every sequence below them."""
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        return (self.sequence_logprob(prompts, prefixes)[:, None]
                + self.next_token_logprobs(prompts, prefixes))

    def sample(self, prompts: IntArray, rng: np.random.Generator) -> IntArray:
        """One sequence ``(B, H)`` per prompt."""
        prompts = np.asarray(prompts, dtype=np.int64)
        tokens = np.zeros((prompts.shape[0], self.horizon), dtype=np.int64)
        for h in range(self.horizon):
            tokens[:, h] = sample_categorical(self.next_token_logprobs(prompts, tokens[:, :h]), rng)
        return tokens

    def _check_tokens(self, tokens: IntArray) -> IntArray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] > self.horizon:
            raise ValueError(f"tokens must have shape (B, L <= {self.horizon}), got {tokens.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens must lie in [0, {self.vocab_size - 1}]")
        return tokens.astype(np.int64, copy=False)


class TeacherForcedModel(SequenceModel):
    """A sequence model that scores every target position of a prefix in one pass (a
    causal network): :meth:`target_logprobs` gives the rest of the protocol."""

    @abstractmethod
    def target_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        """``(B, h + 1, V)``: log-probabilities of target tokens ``0..h`` given prefixes of
        length ``h`` (teacher-forced)."""

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        return self.target_logprobs(prompts, prefixes)[:, -1]

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        tokens = self._check_tokens(tokens)
        if tokens.shape[1] == 0:
            return np.zeros((len(tokens), 0))
        logp = self.target_logprobs(prompts, tokens[:, :-1])
        return np.take_along_axis(logp, tokens[:, :, None], axis=2)[:, :, 0]

    def extension_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        logp = self.target_logprobs(prompts, prefixes)  # one pass: the path, then the last row
        path = np.take_along_axis(logp[:, :-1], prefixes[:, :, None], axis=2)[:, :, 0]
        return path.sum(axis=1)[:, None] + logp[:, -1]


@dataclass(frozen=True)
class FiniteStateTables:
    """``logp[c, t, s, a] = log pi(a | context c, table position t, window state s)``.

    Shape ``(C, T, V**memory, V)``; position ``h`` uses ``t = min(h, T - 1)``.
    """

    logp: FloatArray
    memory: int
    horizon: int
    vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        logp = np.asarray(self.logp, dtype=np.float64)
        if logp.ndim != 4:
            raise ValueError(f"logp must have shape (C, T, S, V), got {logp.shape}")
        vocab = logp.shape[3]
        if self.memory < 0 or logp.shape[2] != vocab**self.memory:
            raise ValueError(f"logp has {logp.shape[2]} states; memory {self.memory} needs "
                             f"{vocab}**{self.memory}")
        if not 1 <= logp.shape[1] <= self.horizon:
            raise ValueError(f"logp has {logp.shape[1]} table positions; need 1..{self.horizon}")
        if np.isnan(logp).any() or np.abs(logsumexp(logp, axis=3)).max() > 1e-8:
            raise ValueError("logp rows must be normalised log-probabilities")
        object.__setattr__(self, "logp", logp)
        object.__setattr__(self, "vocab_size", int(vocab))

    @property
    def num_contexts(self) -> int:
        return int(self.logp.shape[0])

    @property
    def num_positions(self) -> int:
        return int(self.logp.shape[1])

    @property
    def num_states(self) -> int:
        return int(self.logp.shape[2])

    def table_index(self, positions: IntArray | int) -> IntArray:
        """Table position used at sequence position(s) ``h``."""
        return np.minimum(positions, self.num_positions - 1)

    def at_position(self, h: int) -> FloatArray:
        """``(C, S, V)`` log-probabilities at sequence position ``h``."""
        return self.logp[:, min(h, self.num_positions - 1)]

    def lift(self, memory: int, num_positions: int | None = None) -> FiniteStateTables:
        """The same model written with a longer window and/or more table positions."""
        if memory < self.memory:
            raise ValueError(f"memory must be >= {self.memory}, got {memory}")
        positions = self.num_positions if num_positions is None else num_positions
        if not self.num_positions <= positions <= self.horizon:
            raise ValueError(f"num_positions must lie in [{self.num_positions}, {self.horizon}]")
        states = np.arange(self.vocab_size**memory) % self.num_states
        t = self.table_index(np.arange(positions))
        return FiniteStateTables(self.logp[:, t][:, :, states], memory, self.horizon)

    def states(self, tokens: IntArray) -> IntArray:
        """Window state before each position, ``(B, L)``."""
        return window_states(tokens, self.memory, self.vocab_size)

    def token_logprobs(self, context_index: IntArray, tokens: IntArray) -> FloatArray:
        """``(B, L)`` token log-probabilities of ``tokens`` under context indices."""
        tokens = np.asarray(tokens, dtype=np.int64)
        t = self.table_index(np.arange(tokens.shape[1]))[None, :]
        return self.logp[np.asarray(context_index)[:, None], t, self.states(tokens), tokens]

    def sample(self, context_index: IntArray, rng: np.random.Generator) -> IntArray:
        """``(B, H)`` sequences drawn position by position, vectorised over the batch."""
        context_index = np.asarray(context_index, dtype=np.int64)
        batch = context_index.shape[0]
        vocab, n_states = self.vocab_size, self.num_states
        cdf = np.cumsum(np.exp(self.logp), axis=3)
        tokens = np.empty((batch, self.horizon), dtype=np.int64)
        state = np.zeros(batch, dtype=np.int64)
        for h in range(self.horizon):
            rows = cdf[context_index, min(h, self.num_positions - 1), state]
            u = rng.random(batch) * rows[:, -1]
            if vocab == 2:
                a = (u >= rows[:, 0]).astype(np.int64)
            else:
                a = np.minimum((u[:, None] >= rows).sum(axis=1), vocab - 1)
            tokens[:, h] = a
            state = (state * vocab) % n_states + a if n_states > 1 else state
        return tokens

    def forward_marginals(self) -> FloatArray:
        """``m[c, h, s]``: probability of window state ``s`` at position ``h`` given ``c``."""
        n_ctx, vocab, n_states = self.num_contexts, self.vocab_size, self.num_states
        marg = np.zeros((n_ctx, self.horizon, n_states))
        cur = np.zeros((n_ctx, n_states))
        cur[:, 0] = 1.0
        probs = np.exp(self.logp)
        low = max(n_states // vocab, 1)
        for h in range(self.horizon):
            marg[:, h] = cur
            if h + 1 == self.horizon:
                break
            flow = cur[:, :, None] * probs[:, min(h, self.num_positions - 1)]  # (C, S, V)
            if n_states == 1:
                cur = flow.sum(axis=2)
            else:  # s = hi * low + lo  ->  s' = lo * V + a
                cur = flow.reshape(n_ctx, vocab, low, vocab).sum(axis=1).reshape(n_ctx, n_states)
        return marg


@dataclass(frozen=True)
class CountLaw:
    """A binary sequence law per context that depends only on the number of ones.

    ``log_seq[c, k]`` is ``log P(a_{1:H} | c)`` for any single sequence with ``k`` ones;
    shape ``(C, H + 1)``. Sums over the ``2^H`` sequences become sums over ``k`` with
    weights ``binom(H, k)``.
    """

    log_seq: FloatArray

    def __post_init__(self) -> None:
        log_seq = np.asarray(self.log_seq, dtype=np.float64)
        if log_seq.ndim != 2 or log_seq.shape[1] < 2:
            raise ValueError(f"log_seq must have shape (C, H + 1), got {log_seq.shape}")
        total = logsumexp(log_seq + log_binomial(log_seq.shape[1] - 1)[None, :], axis=1)
        if np.isnan(log_seq).any() or np.abs(total).max() > 1e-8:
            raise ValueError("log_seq must describe normalised laws (sum_k binom(H,k) P_k = 1)")
        object.__setattr__(self, "log_seq", log_seq)

    @property
    def horizon(self) -> int:
        return int(self.log_seq.shape[1] - 1)

    def log_count_probs(self) -> FloatArray:
        """``log P(#ones = k | c)``, shape ``(C, H + 1)``."""
        return self.log_seq + log_binomial(self.horizon)[None, :]

    @classmethod
    def product(cls, log_p1: FloatArray, horizon: int) -> CountLaw:
        """i.i.d. Bernoulli per context: ``P(a = 1 | c) = exp(log_p1[c])``."""
        log_p1 = np.asarray(log_p1, dtype=np.float64)[:, None]
        k = np.arange(horizon + 1)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_p0 = np.log1p(-np.exp(log_p1))
            ones = np.where(k > 0, k * log_p1, 0.0)
            zeros = np.where(k < horizon, (horizon - k) * log_p0, 0.0)
        log_seq = ones + zeros
        return cls(log_seq)


def log_binomial(n: int) -> FloatArray:
    """``log binom(n, k)`` for ``k = 0..n``."""
    k = np.arange(n + 1)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


class TabulatedModel(SequenceModel):
    """A sequence model given by per-context tables over a finite prompt law: ``tables``
    (finite-state or chunk tables) answer ``token_logprobs`` and ``sample`` by context index."""

    def __init__(self, tables: Any, prompts: FinitePrompts) -> None:
        if tables.num_contexts != prompts.num_contexts:
            raise ValueError(
                f"tables have {tables.num_contexts} contexts, prompts {prompts.num_contexts}"
            )
        self.tables = tables
        self.prompts = prompts
        self.vocab_size = tables.vocab_size
        self.horizon = tables.horizon

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        tokens = self._check_tokens(tokens)
        return self.tables.token_logprobs(self.prompts.index_of(prompts), tokens)

    def sample(self, prompts: IntArray, rng: np.random.Generator) -> IntArray:
        return self.tables.sample(self.prompts.index_of(prompts), rng)


class FiniteStateModel(TabulatedModel):
    """A sequence model given by finite-state tables over a finite prompt law."""

    tables: FiniteStateTables

    def finite_state(self) -> FiniteStateTables:
        return self.tables

    def count_law(self) -> CountLaw | None:
        """Memory-0, time-homogeneous binary models are i.i.d. products."""
        tables = self.tables
        if tables.memory != 0 or tables.num_positions != 1 or tables.vocab_size != 2:
            return None
        return CountLaw.product(tables.logp[:, 0, 0, 1], tables.horizon)

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        h = prefixes.shape[1]
        if h >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, got {h}")
        ctx = self.prompts.index_of(prompts)
        k = min(self.tables.memory, h)
        state = np.zeros(len(ctx), dtype=np.int64)
        for j in range(1, k + 1):
            state += prefixes[:, h - j] * self.vocab_size ** (j - 1)
        return self.tables.at_position(h)[ctx, state]


@dataclass(frozen=True)
class UniformPrompts(FinitePrompts):
    """The uniform law over the rows of ``contexts``, for large supports (``log_probs`` is
    derived): ``O(n)`` sampling and ``O(B log C)`` :meth:`index_of` (rows must be distinct)."""

    log_probs: FloatArray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        contexts = np.asarray(self.contexts, dtype=np.int64)
        if contexts.ndim != 2 or contexts.shape[0] < 1:
            raise ValueError(f"contexts must have shape (C >= 1, L), got {contexts.shape}")
        object.__setattr__(self, "log_probs", np.full(len(contexts), -np.log(len(contexts))))
        super().__post_init__()
        keys = self._keys(self.contexts)
        order = np.argsort(keys, kind="stable")
        if (keys[order][1:] == keys[order][:-1]).any():
            raise ValueError("contexts must be distinct rows")
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_sorted_keys", keys[order])

    def _keys(self, rows: IntArray) -> np.ndarray:
        """One sortable key per row: its bytes (exact, any token range)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        return rows.view(np.dtype((np.void, rows.shape[1] * 8))).ravel()

    def sample_index(self, n: int, rng: np.random.Generator) -> IntArray:
        return rng.integers(0, self.num_contexts, size=n, dtype=np.int64)

    def index_of(self, prompts: IntArray) -> IntArray:
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.ndim != 2 or prompts.shape[1] != self.prompt_length:
            raise ValueError(
                f"prompts must have shape (B, {self.prompt_length}), got {prompts.shape}"
            )
        keys = self._keys(prompts)
        pos = np.minimum(np.searchsorted(self._sorted_keys, keys), self.num_contexts - 1)
        found = self._sorted_keys[pos] == keys
        if not found.all():
            bad = prompts[~found][0].tolist()
            raise ValueError(f"prompt {bad} is not in the support of this prompt law")
        return self._order[pos].astype(np.int64)


class DeterministicModel(SequenceModel):
    """The expert that emits ``sequences(x)`` for prompt ``x``: ``pi_h(a | x, a_{<h}) = 1`` iff
    ``a`` is token ``h`` of ``sequences(x)`` (whatever the prefix, i.e. open loop).

    Its sequence law is a point mass per prompt, which the evaluator scores exactly
    (``method="deterministic"``) from ``log Q(sequences(x) | x)`` alone.
    """

    def __init__(
        self,
        sequences: Callable[[IntArray], IntArray],
        vocab_size: int,
        horizon: int,
        prompt_length: int,
    ) -> None:
        self._sequences = sequences
        self.vocab_size = int(vocab_size)
        self.horizon = int(horizon)
        self.prompt_length = int(prompt_length)

    def deterministic_sequences(self, prompts: IntArray) -> IntArray:
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.ndim != 2 or prompts.shape[1] != self.prompt_length:
            raise ValueError(
                f"prompts must have shape (B, {self.prompt_length}), got {prompts.shape}"
            )
        return np.asarray(self._sequences(prompts), dtype=np.int64)

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        h = prefixes.shape[1]
        if h >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, got {h}")
        target = self.deterministic_sequences(prompts)[:, h]
        out = np.full((len(target), self.vocab_size), -np.inf)
        out[np.arange(len(target)), target] = 0.0
        return out

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        tokens = self._check_tokens(tokens)
        target = self.deterministic_sequences(prompts)[:, : tokens.shape[1]]
        return np.where(tokens == target, 0.0, -np.inf)

    def sample(self, prompts: IntArray, rng: np.random.Generator) -> IntArray:
        return self.deterministic_sequences(prompts)
