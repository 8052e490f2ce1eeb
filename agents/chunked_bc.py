"""ChunkedBC (``chunk:K``): behavior cloning with the chunk-level log loss.

Not the paper's "ChunkKR" and not a bounded chunk objective: the log loss per chunk is
unbounded, so nothing caps what one chunk decision costs and chunking carries no
``C_apx ~ H / K`` guarantee: where ``C_apx`` falls with ``K`` (FiniteClassBarrier) it is
because independent chunks lose the event once per chunk boundary, and on MixtureProduct it
rises with ``K`` (see "What chunking buys" below and docs/chunking.md). Our reading of
ChunkKR is ``chunk-kr:K`` (:mod:`agents.chunk_kr`); the bounded chunk learner the chunking
claim is about is ``chunk-rho:K``.

Construction. Cut each sequence into chunks of ``K`` tokens (the last one holds
``L = H mod K`` tokens when ``K`` does not divide ``H``). A chunk is one super-token with
``V^K`` outcomes ``o``; its law given the context ``x`` and the window of the ``m`` tokens
before the chunk is log-linear with the token class's window features *lifted* to chunk
outcomes:

``q_W(o | x, a_{<start}) ∝ exp(z(x, a_{start-1..start-m}) . W[:, o])``,

where ``z = [onehot_C(x), onehot_V(a_{start-1}), ..., onehot_V(a_{start-m})]`` is the
multi-hot input of :class:`~ntp_envs.linear_softmax.LinearSoftmaxClass` (a lag block is zero
before the sequence start) and ``W`` has one column per chunk outcome (a separate ``W_last``
for the short last chunk). ``W`` is fitted by the chunk-level log loss,
``min_W -sum_{sequences, chunks} log q_W(o_i | x, s_i) + (l2 / 2) |W|^2``, which is the
suite's convex multinomial logistic regression (:func:`agents.logistic.fit_logistic`) with
the ``V^K`` chunk outcomes as its vocabulary. The fitted policy generates chunk by chunk;
its token conditionals are the chunk law marginalised within the chunk, so it exposes exact
next-token and sequence log-probabilities (:class:`~ntp_envs.chunk_tables.ChunkModel`) and
is scored exactly by the chunk recursion of :mod:`evaluation.methods.chunk_dp`.

* ``m`` (``memory``) defaults to the memory of the task's linear-softmax class, so at
  ``K = 1`` the chunk class *is* the token class (projection included) and ChunkedBC is
  LogLossBC. For ``K >= 2`` the features are unprojected and each outcome has its own
  weights: the class holds every chunk law of the token class when ``m <= 1`` (a token
  model's log chunk probability is a sum of terms in ``(x, o)`` and ``(a_{start-1}, o)``
  plus a per-row constant) and strictly more (any law of the ``K`` chunk tokens jointly): it
  is *improper*. For ``m >= 2`` it is a different, not nested class. A task whose class is
  finite (FiniteClassBarrier) has no feature map to lift: ``m`` defaults to 0 there, i.e.
  one free chunk law per context, chunk phase and (short last) chunk.
* Cost: ``(C + m V) V^K`` parameters (plus ``(C + m V) V^L``); counting the targets is
  ``O(n H)`` for ``n`` demonstrations (population fits: ``O((H / K) C V^M V^K)`` with
  ``M`` the larger of the expert's and the learner's memory); each Newton iteration costs
  ``O(R (1 + m) V^K)`` for ``R <= C T V^m`` distinct rows ``(x, chunk phase, window)``, so
  time and memory grow like ``V^K``. ``V^K`` is capped at
  :data:`~ntp_envs.chunk_tables.MAX_CHUNK_OUTCOMES` and a chunk table at
  :data:`~ntp_envs.chunk_tables.MAX_CHUNK_TABLE_ELEMENTS` (ValueError before allocating).
* Solver: the same Newton method as LogLossBC; at ``K = 1`` the very same call. For
  ``K >= 2`` it starts from the per-context chunk frequencies (the exact solution when
  ``m = 0``) and, above :data:`CHUNK_DENSE_MAX_DIM` parameters, takes CG steps
  preconditioned by the Hessian's per-outcome blocks (at most ``R + 1`` CG iterations).
* Evaluation (``eval_method = chunk``, exact): against a finite-state expert a recursion over
  chunk boundaries with the ``V^max(k, m)`` window states (ARLinear, FiniteClassBarrier);
  against a count-law expert (MixtureProduct, ``m = 0``) a convolution over chunks of the
  counts of ones. The policy's token-level finite-state form (memory ``m + K - 1``,
  ``T = H``) is also exposed while it has at most
  :data:`~ntp_envs.chunk_tables.MAX_FINITE_STATE_ELEMENTS` entries; beyond both, Monte
  Carlo (with a standard error).
* What chunking buys depends on where the expert's dependence lives. Within a chunk the
  class is unrestricted; across chunks only the ``m``-token window carries information.
  On FiniteClassBarrier (``m = 0``) independent chunks lose one event chance per chunk:
  population ``C_apx ~ (H / K + 1) / 2`` at the default instance, halving with every
  doubling of ``K`` (over the ``event_prob = 1e-3`` bias family at ``H = 64`` the worst case
  is 1017 / 520 / 269 / 143 at ``K`` = 1 / 2 / 4 / 8). On
  ARLinear the expert's extra lags fall inside chunks and ``D_H^2`` falls with ``K``. On
  MixtureProduct (``m = 0``) the hidden component persists over the whole sequence, so
  independent chunks lose ``~ w (H / K + 1)`` of overlap: at ``H = 256`` population
  ``C_apx`` *rises* from NTP's 7.0 (``K = 1``) to about 17 (``K = 8``) before falling,
  and reaches 0 only at ``K = H``; the chunk-level KL falls monotonically (the classes
  nest). See ``tests/test_chunked_bc.py`` and ``ntp-bench sweep --preset chunking``.
* Relation to ChunkKR (Rohatgi et al. 2025): there, for binary autoregressive linear
  models, chunking into ``K``-token super-tokens trades ``exp(K)`` compute for
  ``C_apx ~ H / K``. Our reading (docs/theory.md, The learners) is that this needs a
  *bounded* loss per chunk decision, which the chunk-level log loss is not: ``chunk:K`` is
  the KL projection onto the chunk class, with no H / K guarantee, and on MixtureProduct
  its ``C_apx`` rises with ``K`` (above). The bounded chunk learners are ``chunk-kr:K``
  (:mod:`agents.chunk_kr`, ridge regression of the chunk outcome, our ChunkKR reading) and
  ``chunk-rho:K`` (the chunk-level rho tournament).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import log_softmax

from agents.base import Agent, FittedPolicy, demonstration_arrays, register_policy_kind
from agents.logistic import DENSE_HESSIAN_MAX_DIM, fit_logistic
from ntp_envs.chunk_tables import (
    MAX_CHUNK_TABLE_ELEMENTS,
    ChunkModel,
    ChunkTables,
    advance_window,
    check_chunk_size,
    chunk_codes,
    count_law_chunk_logprobs,
    finite_state_chunk_logprobs,
    ones_per_outcome,
)
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import FinitePrompts, window_states
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray
from ntp_envs.validation import check_int

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

MAX_MEMORY = 16
"""Largest window ``m`` (as for the token classes)."""

CHUNK_DENSE_MAX_DIM = 256
"""For ``K >= 2`` Newton steps solve the explicit Hessian only up to this many parameters;
above, Jacobi-preconditioned CG, whose cost grows like ``V^K`` instead of ``(V^K)^3``."""


@dataclass(frozen=True)
class ChunkClass:
    """Log-linear chunk laws over the lifted window features of ``window`` (module doc)."""

    window: LinearSoftmaxClass
    chunk_size: int

    @property
    def vocab_size(self) -> int:
        return self.window.vocab_size

    @property
    def memory(self) -> int:
        return self.window.memory

    @property
    def horizon(self) -> int:
        return self.window.horizon

    @property
    def num_contexts(self) -> int:
        return self.window.num_contexts

    @property
    def num_inputs(self) -> int:
        return self.window.num_inputs

    @property
    def num_outcomes(self) -> int:
        return self.vocab_size**self.chunk_size

    @property
    def num_full_chunks(self) -> int:
        return self.horizon // self.chunk_size

    @property
    def last_length(self) -> int:
        return self.horizon % self.chunk_size

    @property
    def num_positions(self) -> int:
        """Distinct chunk phases ``T``: chunks before all ``m`` lags exist, then one more."""
        return min(-(-self.memory // self.chunk_size) + 1, self.num_full_chunks)

    @property
    def num_states(self) -> int:
        return self.vocab_size**self.memory

    @property
    def projection(self) -> FloatArray | None:
        """The token class's projection, kept at ``K = 1`` only."""
        return self.window.projection if self.chunk_size == 1 else None

    @property
    def dim(self) -> int:
        """Parameters of the full-chunk law."""
        if self.projection is not None:
            return int(self.projection.shape[0])
        return self.num_inputs * self.num_outcomes

    @property
    def last_dim(self) -> int:
        """Parameters of the short last chunk's law (0 when ``K`` divides ``H``)."""
        return self.num_inputs * self.vocab_size**self.last_length if self.last_length else 0

    def full_rows(self) -> tuple[IntArray, IntArray, IntArray]:
        """Every full-chunk table row ``(c, t, s)``, flattened in ``(C, T, S)`` order."""
        c, t, s = np.meshgrid(np.arange(self.num_contexts), np.arange(self.num_positions),
                              np.arange(self.num_states), indexing="ij")
        return c.ravel(), t.ravel(), s.ravel()

    def full_inputs(self) -> IntArray:
        """Active inputs of every full-chunk row (chunk phase ``t`` starts at ``t K``)."""
        c, t, s = self.full_rows()
        return self.window.active_inputs(c, t * self.chunk_size, s)

    def last_inputs(self) -> IntArray:
        """Active inputs of every short-last-chunk row ``(c, s)``."""
        c, s = (a.ravel() for a in np.meshgrid(np.arange(self.num_contexts),
                                               np.arange(self.num_states), indexing="ij"))
        return self.window.active_inputs(c, np.full(c.shape, self.num_full_chunks
                                                    * self.chunk_size), s)

    def _log_laws(self, theta: FloatArray, active: IntArray, outcomes: int,
                  projection: FloatArray | None) -> FloatArray:
        full = theta if projection is None else projection.T @ theta
        weights = np.vstack([full.reshape(self.num_inputs, outcomes), np.zeros((1, outcomes))])
        return log_softmax(weights[active].sum(axis=1), axis=-1)  # index -1 -> zeros

    def tables(self, theta: FloatArray, theta_last: FloatArray | None) -> ChunkTables:
        """Chunk tables of the parameters ``(W, W_last)``."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.dim,):
            raise ValueError(f"theta must have shape ({self.dim},), got {theta.shape}")
        logq = self._log_laws(theta, self.full_inputs(), self.num_outcomes, self.projection)
        logq = logq.reshape(self.num_contexts, self.num_positions, self.num_states, -1)
        last = None
        if self.last_length:
            theta_last = np.asarray(theta_last, dtype=np.float64)
            if theta_last.shape != (self.last_dim,):
                raise ValueError(f"theta_last must have shape ({self.last_dim},), "
                                 f"got {theta_last.shape}")
            last = self._log_laws(theta_last, self.last_inputs(),
                                  self.vocab_size**self.last_length, None)
            last = last.reshape(self.num_contexts, self.num_states, -1)
        return ChunkTables(logq, last, self.chunk_size, self.memory, self.horizon,
                           self.vocab_size)

    def counts(self, context_index: IntArray, tokens: IntArray
               ) -> tuple[FloatArray, FloatArray | None]:
        """Chunk visit counts ``N[c, t, s, o]`` (and ``N_last[c, s, o]``) of ``(n, H)`` tokens."""
        tokens = np.asarray(tokens, dtype=np.int64)
        ctx = np.asarray(context_index, dtype=np.int64)
        k, vocab, n_full = self.chunk_size, self.vocab_size, self.num_full_chunks
        n_ctx, n_pos, n_states = self.num_contexts, self.num_positions, self.num_states
        starts = np.arange(0, self.horizon, k)
        states = window_states(tokens, self.memory, vocab)[:, starts]
        codes = chunk_codes(tokens[:, : n_full * k].reshape(len(ctx), n_full, k), vocab)
        t = np.minimum(np.arange(n_full), n_pos - 1)[None, :]
        flat = ((ctx[:, None] * n_pos + t) * n_states + states[:, :n_full]) * self.num_outcomes
        size = n_ctx * n_pos * n_states * self.num_outcomes
        full = np.bincount((flat + codes).ravel(), minlength=size).astype(np.float64)
        last = None
        if self.last_length:
            outcomes = vocab**self.last_length
            code = chunk_codes(tokens[:, n_full * k :], vocab)
            index = (ctx * n_states + states[:, n_full]) * outcomes + code
            last = np.bincount(index, minlength=n_ctx * n_states * outcomes).astype(np.float64)
            last = last.reshape(n_ctx, n_states, outcomes)
        return full.reshape(n_ctx, n_pos, n_states, self.num_outcomes), last

    def expected_counts(self, task: SequenceTask) -> tuple[FloatArray, FloatArray | None]:
        """``E_{P*}[N]`` per sequence (weights ``mu``), exactly, from the expert's finite-state
        form or (memory 0, binary) its count law."""
        prompts = self.window.prompts
        mu = np.exp(prompts.log_probs)
        n_ctx, n_pos, n_states = self.num_contexts, self.num_positions, self.num_states
        vocab, k = self.vocab_size, self.chunk_size
        full = np.zeros((n_ctx, n_pos, n_states, self.num_outcomes))
        last = (np.zeros((n_ctx, n_states, vocab**self.last_length))
                if self.last_length else None)
        expert = task.expert.finite_state()
        law = task.expert.count_law()
        if expert is not None:
            if expert.num_contexts != n_ctx:
                raise ValueError("expert tables must share the task's contexts")
            memory = max(expert.memory, self.memory)
            lifted = expert.lift(memory)
            big = vocab**memory
            mass = np.zeros((n_ctx, big))
            mass[:, 0] = 1.0
            laws: dict[tuple[int, int], FloatArray] = {}
            for i in range(-(-self.horizon // k)):
                start, length = i * k, min(k, self.horizon - i * k)
                phase = (min(start, lifted.num_positions - 1), length)
                if phase not in laws:
                    laws[phase] = np.exp(finite_state_chunk_logprobs(lifted, start, length))
                flow = mass[:, :, None] * laws[phase]  # (C, V^M, V^L)
                own = flow.reshape(n_ctx, big // n_states, n_states, -1).sum(axis=1)
                if i < self.num_full_chunks:
                    full[:, min(i, n_pos - 1)] += own
                else:
                    last += own  # type: ignore[operator]
                mass = advance_window(flow, vocab, length, big, log=False)
        elif law is not None and self.memory == 0 and vocab == 2:
            chunk = np.exp(count_law_chunk_logprobs(law, k))[:, ones_per_outcome(k)]
            full[:, 0, 0] = self.num_full_chunks * chunk
            if last is not None:
                length = self.last_length
                last[:, 0] = np.exp(count_law_chunk_logprobs(law, length))[
                    :, ones_per_outcome(length)]
        else:
            raise ValueError(f"{task.env_id}: a population fit needs an expert with a "
                             "finite-state form, or a count law and a memory-0 chunk class")
        full *= mu[:, None, None, None]
        if last is not None:
            last *= mu[:, None, None]
        return full, last


def chunk_class(task: SequenceTask, chunk_size: int, memory: int | None = None) -> ChunkClass:
    """The chunk class of ``task`` (module doc); ValueError before any allocation when
    ``chunk_size`` leaves ``[1, H]``, ``V**K`` exceeds the cap, or a table would."""
    k = check_chunk_size(chunk_size, task.vocab_size, task.horizon)
    if not isinstance(task.prompts, FinitePrompts):
        raise ValueError(f"{task.env_id}: ChunkedBC needs a finite prompt law")
    token_class = task.learner_class if isinstance(task.learner_class,
                                                   LinearSoftmaxClass) else None
    default = token_class.memory if token_class is not None else 0
    m = default if memory is None else check_int("memory", memory, 0, MAX_MEMORY)
    n_ctx, vocab, horizon = task.prompts.num_contexts, task.vocab_size, task.horizon
    positions = min(-(-m // k) + 1, horizon // k)
    elements = n_ctx * positions * vocab**m * vocab**k
    if elements > MAX_CHUNK_TABLE_ELEMENTS:
        raise ValueError(f"chunk_size/memory: a chunk table would hold C T V**m V**K = "
                         f"{elements} entries > {MAX_CHUNK_TABLE_ELEMENTS} (memory cap); "
                         f"lower chunk_size (K = {k}) or memory (m = {m})")
    projection = token_class.projection if token_class is not None and m == default else None
    window = LinearSoftmaxClass(task.prompts, vocab, m, horizon, projection)
    return ChunkClass(window, k)


def _warm_start(counts: FloatArray, chunks: ChunkClass, dim: int, outcomes: int,
                projected: bool, l2: float) -> FloatArray | None:
    """Per-context log chunk frequencies on the context inputs, zero elsewhere: the exact
    solution when the window carries no lags and every outcome is seen. An unseen outcome
    starts at its stationary point under the penalty, ``(N_c / N) p = l2 |log p|``
    (``l2 > 0``), or at ``e^-700`` of its context's mass (``l2 = 0``: its ML logit is
    ``-inf``)."""
    if projected or chunks.chunk_size == 1:  # K = 1: exactly LogLossBC's solve
        return None
    per_context = counts.reshape(chunks.num_contexts, -1, outcomes).sum(axis=1)
    total = per_context.sum(axis=1, keepdims=True)
    seen = total[:, 0] > 0
    per_context, total = per_context[seen], total[seen]
    if l2 > 0:
        ratio = l2 * total.sum() / total  # (N / N_c) l2
        floor = np.minimum(20.0 * ratio, 0.5)
        for _ in range(4):  # fixed point of p = ratio |log p|
            floor = np.minimum(ratio * np.abs(np.log(floor)), 0.5)
        log_floor = np.log(floor)
    else:
        log_floor = np.full(total.shape, -700.0)
    with np.errstate(divide="ignore"):
        logs = np.where(per_context > 0, np.log(per_context / total), log_floor)
    theta = np.zeros((chunks.num_inputs, outcomes))
    theta[: chunks.num_contexts][seen] = log_softmax(logs, axis=1)
    return theta.ravel() if theta.size == dim else None


def _fit(active: IntArray, counts: FloatArray, chunks: ChunkClass, dim: int,
         projection: FloatArray | None, l2: float) -> tuple[FloatArray, dict[str, Any]]:
    outcomes = counts.shape[-1]
    flat = counts.reshape(-1, outcomes)
    keep = flat.sum(axis=1) > 0
    theta0 = _warm_start(counts, chunks, dim, outcomes, projection is not None, l2)
    dense = DENSE_HESSIAN_MAX_DIM if chunks.chunk_size == 1 else CHUNK_DENSE_MAX_DIM
    fit = fit_logistic(active[keep], flat[keep], chunks.num_inputs, projection, l2=l2,
                       theta0=theta0, dense_max_dim=dense)
    info = {"log_loss_per_chunk": fit.log_loss, "grad_norm": fit.grad_norm,
            "iterations": fit.iterations, "converged": fit.converged}
    return fit.theta, info


def saved_integers(arrays: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, int]:
    """The one-integer entries ``names`` of a saved policy (ValueError naming a bad one)."""
    ints = {}
    for name in names:
        value = arrays.get(name)
        if value is None or value.shape != (1,) or value.dtype.kind not in "iu":
            raise ValueError(f"saved {name} must be one integer")
        ints[name] = int(value[0])
    return ints


@register_policy_kind
class ChunkPolicy(FittedPolicy):
    """A fitted chunk law ``(W, W_last)`` of a task's :class:`ChunkClass` (chunk by chunk)."""

    kind = "chunked"

    def __init__(self, task: SequenceTask, chunk_size: int, memory: int, theta: FloatArray,
                 theta_last: FloatArray | None, info: dict[str, Any] | None = None) -> None:
        self.chunks = chunk_class(task, chunk_size, memory)
        self.theta = np.asarray(theta, dtype=np.float64)
        self.theta_last = (np.zeros(0) if theta_last is None
                           else np.asarray(theta_last, dtype=np.float64))
        tables = self.chunks.tables(self.theta, self.theta_last)
        super().__init__(task, ChunkModel(tables, self.chunks.window.prompts), info)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta, "theta_last": self.theta_last,
                "chunk_size": np.array([self.chunks.chunk_size]),
                "memory": np.array([self.chunks.memory])}

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> ChunkPolicy:
        ints = saved_integers(arrays, ("chunk_size", "memory"))
        chunks = chunk_class(task, ints["chunk_size"], ints["memory"])
        theta, theta_last = arrays.get("theta"), arrays.get("theta_last")
        for name, value, dim in (("theta", theta, chunks.dim),
                                 ("theta_last", theta_last, chunks.last_dim)):
            if value is None or value.shape != (dim,) or not np.isfinite(value).all():
                raise ValueError(f"saved {name} must be {dim} finite numbers")
        return cls(task, ints["chunk_size"], ints["memory"], theta, theta_last, info)


@dataclass
class ChunkedBC(Agent):
    """Chunk-level log-loss BC with chunk size ``chunk_size`` (registry name ``chunk:K``).

    ``memory`` (window ``m``) defaults to the token class's memory (0 for a finite class);
    ``l2`` as LogLossBC: 0 for population fits, ``1e-8`` for sample fits.
    """

    chunk_size: int = 1
    memory: int | None = None
    l2: float | None = None
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int | np.integer):
            raise ValueError(f"chunk_size must be an integer >= 1, got {self.chunk_size!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {self.chunk_size}")
        if self.memory is not None:
            check_int("memory", self.memory, 0, MAX_MEMORY)
        if self.l2 is not None and not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2}")
        self.name = f"chunk:{int(self.chunk_size)}"

    def check_task(self, task: SequenceTask) -> None:
        chunk_class(task, self.chunk_size, self.memory)  # ValueError, before allocating

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        chunks = chunk_class(task, self.chunk_size, self.memory)  # validates before allocating
        if demonstrations is None:
            full, last = chunks.expected_counts(task)
        else:
            prompts, tokens = demonstration_arrays(task, demonstrations)
            full, last = chunks.counts(chunks.window.prompts.index_of(prompts), tokens)
        l2 = self.l2 if self.l2 is not None else (0.0 if demonstrations is None else 1e-8)
        theta, info = _fit(chunks.full_inputs(), full, chunks, chunks.dim, chunks.projection, l2)
        theta_last = None
        if last is not None:
            theta_last, last_info = _fit(chunks.last_inputs(), last, chunks, chunks.last_dim,
                                         None, l2)
            info["last_chunk"] = last_info
        info.update({"agent": self.name, "chunk_size": chunks.chunk_size,
                     "memory": chunks.memory, "chunk_outcomes": chunks.num_outcomes,
                     "parameters": chunks.dim + chunks.last_dim})
        return ChunkPolicy(task, chunks.chunk_size, chunks.memory, theta, theta_last, info)
