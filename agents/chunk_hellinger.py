"""ChunkHellinger (``chunk-hellinger:K``): the Hellinger projection of chunk laws onto the class.

Ours (the paper's ChunkKR construction was not at hand): a proper learner over the token
class that pays the barrier once per chunk. Cut each sequence into chunks of ``K`` tokens as
``chunk:K`` does (chunk 0 starts at 0, a short last chunk when ``K`` does not divide ``H``).

1. *Chunk laws* (improper, cost ``~V^K``): for every chunk row ``(x, chunk phase, window of
   the token class's memory before the chunk)``, the law ``qhat(o | row)`` of the ``V^K``
   chunk outcomes: the row's empirical chunk frequencies (with visits ``w_row`` per
   sequence), or for a population fit their exact expectations under the expert law
   (:meth:`agents.chunked_bc.ChunkClass.expected_counts`). With one-hot row features this
   is ``chunk-kr:K``'s ridge regression at ridge 0.
2. *Proper projection*: ``theta_hat = argmin_theta sum_rows w_row D_H^2(qhat(. | row),
   P_theta(. | row))`` with ``P_theta(o | row)`` the token class's law of the chunk's ``K``
   tokens (products of its next-token probabilities). Each chunk term is bounded by 2, so
   the objective is a bounded chunk-level regression of chunk laws; it is non-convex in
   ``theta``. A one-parameter class is searched on the rho-estimator's coarse-to-fine logit
   grid (201 points over [-12, 12] for the least sensitive feature, two windows of 201
   points, then a bounded scalar polish); a larger class by L-BFGS from several starts
   (NTP's fit, 0, Gaussian draws).

When the class is memory-0 binary and every target row's law depends only on the number of
ones of the chunk (an exchangeable expert in a population fit), the chunk terms are summed
over the ``K + 1`` counts instead of the ``2^K`` outcomes (the same objective, exactly;
``sufficient_statistics=False`` forces the outcome sums; ``info["statistics"]`` says which).

``K = 1`` is the token-level Hellinger projection (NTP-style, bounded: ``Omega(H)``);
``K = H`` is the sequence-level Hellinger projection (the best in class for a population
fit, ``C_apx = 1``). For a memory-0 class with ``K | H`` the population objective is
``(H / K) D_H^2`` at horizon ``K``, so the fit is the best in class at horizon ``K``, whose
``C_apx`` at horizon ``H`` is at most about ``H / K`` (measured on TiedLogitBarrier:
``benchmarks/bench_tied_logit_barrier.py``). Cost ``O(evaluations * rows * K V^K)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar

from agents.base import Agent, FittedPolicy, demonstration_arrays
from agents.chunked_bc import chunk_class
from agents.logloss_bc import LogLossBC
from agents.policies import LinearSoftmaxPolicy, linear_class
from agents.rho_estimator import LOGIT_RANGE, check_tournament_chunk_size
from ntp_envs.chunk_tables import ones_per_outcome
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import log_binomial
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray
from ntp_envs.validation import check_int

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

BLOCK_ELEMENTS = 2**22
"""Largest ``parameters x rows x outcomes`` block evaluated at once (32 MiB of float64)."""


@dataclass(frozen=True)
class _ChunkGroup:
    """Rows of one chunk phase: start position, length, visits ``(C, S)`` and ``sqrt(qhat)``
    ``(C, S, V^length)``, or with ``by_count`` (memory-0 binary class, exchangeable targets)
    ``binom(L, j) sqrt(qhat(one outcome with j ones))`` ``(C, 1, L + 1)``."""

    start: int
    length: int
    visits: torch.Tensor
    root_q: torch.Tensor
    by_count: bool = False


def _by_count(laws: FloatArray, length: int) -> FloatArray | None:
    """``binom(L, j) sqrt(q_j)`` ``(C, S, L + 1)`` when every row's law depends only on the
    number of ones of the outcome (to ``1e-12`` relative), else None."""
    ones = ones_per_outcome(length)
    first = np.array([int(np.argmax(ones == j)) for j in range(length + 1)])
    representative = laws[..., first]  # (C, S, L + 1)
    if not np.allclose(laws, representative[..., ones], rtol=1e-12, atol=0.0):
        return None
    return np.exp(log_binomial(length)) * np.sqrt(representative)


def _groups(task: SequenceTask, chunk_size: int, demonstrations: Demonstrations | None,
            sufficient_statistics: bool) -> list[_ChunkGroup]:
    """The chunk rows, their visits per sequence and target chunk laws (module doc, step 1)."""
    chunks = chunk_class(task, chunk_size)
    if demonstrations is None:
        full, last = chunks.expected_counts(task)
    else:
        prompts, tokens = demonstration_arrays(task, demonstrations)
        full, last = chunks.counts(chunks.window.prompts.index_of(prompts), tokens)
        full, last = full / len(tokens), None if last is None else last / len(tokens)
    tables = [(t * chunk_size, chunk_size, full[:, t]) for t in range(chunks.num_positions)]
    if last is not None:
        tables.append((chunks.num_full_chunks * chunk_size, chunks.last_length, last))
    groups = []
    for start, length, counts in tables:
        visits = counts.sum(axis=-1)
        laws = np.divide(counts, visits[..., None], out=np.zeros_like(counts),
                         where=visits[..., None] > 0)
        lc = chunks.window
        counted = _by_count(laws, length) if sufficient_statistics and lc.memory == 0 \
            and lc.vocab_size == 2 else None
        root = np.sqrt(laws) if counted is None else counted
        groups.append(_ChunkGroup(start, length, torch.from_numpy(visits),
                                  torch.from_numpy(root), counted is not None))
    return groups


class ChunkHellingerObjective:
    """``theta (B, d) -> sum_rows w_row D_H^2(qhat, P_theta)`` over the chunk rows, in torch."""

    def __init__(self, lc: LinearSoftmaxClass, groups: list[_ChunkGroup]) -> None:
        self.lc = lc
        self.groups = groups
        self.active = torch.from_numpy(lc.active_inputs(*lc.all_rows()))
        self.projection = None if lc.projection is None else torch.from_numpy(lc.projection)
        self.evaluations = 0

    def token_logp(self, theta: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities ``(B, C, T, S, V)`` of the class at ``theta``."""
        lc = self.lc
        full = theta if self.projection is None else theta @ self.projection
        weights = full.reshape(theta.shape[0], lc.num_inputs, lc.vocab_size)
        padded = torch.cat([weights, torch.zeros_like(weights[:, :1])], dim=1)  # -1 -> zeros
        logits = padded[:, self.active].sum(dim=2)
        return torch.log_softmax(logits, dim=-1).reshape(
            theta.shape[0], lc.num_contexts, lc.num_positions, lc.num_states, lc.vocab_size)

    def chunk_logp(self, token_logp: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """``log P_theta(o | c, s)`` of the ``length`` tokens from ``start``: ``(B, C, S, V^L)``
        (outcome codes with the first token most significant)."""
        lc = self.lc
        n_states, vocab = lc.num_states, lc.vocab_size
        batch, n_ctx = token_logp.shape[:2]
        logp = torch.zeros(batch, n_ctx, n_states, 1, dtype=token_logp.dtype)
        state = np.arange(n_states)[:, None]  # window state after each (start state, prefix)
        for j in range(length):
            table = token_logp[:, :, min(start + j, lc.num_positions - 1)]  # (B, C, S, V)
            step = table[:, :, torch.from_numpy(state)]  # (B, C, S, P, V)
            logp = (logp[..., None] + step).reshape(batch, n_ctx, n_states, -1)
            state = ((state[:, :, None] * vocab + np.arange(vocab)) % n_states).reshape(
                n_states, -1)
        return logp

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """Objective values ``(B,)``."""
        self.evaluations += theta.shape[0]
        token_logp = self.token_logp(theta)
        total = torch.zeros(theta.shape[0], dtype=torch.float64)
        for group in self.groups:
            if group.by_count:  # memory 0, V = 2: log P(one outcome with j ones)
                j = torch.arange(group.length + 1, dtype=torch.float64)
                table = token_logp[:, :, 0]  # (B, C, 1, 2)
                logp = j * table[..., 1:] + (group.length - j) * table[..., :1]
            else:
                logp = self.chunk_logp(token_logp, group.start, group.length)
            bc = (group.root_q * torch.exp(0.5 * logp)).sum(dim=-1)
            total = total + (group.visits * 2.0 * (1.0 - bc)).sum(dim=(1, 2))
        return total

    def values(self, thetas: FloatArray) -> FloatArray:
        """Objective at each row of ``thetas`` ``(B, d)``, in blocks that bound memory."""
        rows = self.lc.num_contexts * self.lc.num_states
        outcomes = max(group.root_q.shape[-1] for group in self.groups)
        block = max(1, BLOCK_ELEMENTS // (rows * outcomes))
        out = []
        with torch.no_grad():
            for i in range(0, len(thetas), block):
                out.append(self(torch.from_numpy(np.asarray(thetas[i:i + block]))).numpy())
        return np.concatenate(out)

    def value_grad(self, theta: FloatArray) -> tuple[float, FloatArray]:
        x = torch.tensor(theta[None, :], dtype=torch.float64, requires_grad=True)
        value = self(x)
        (grad,) = torch.autograd.grad(value.sum(), x)
        return float(value.detach()[0]), grad[0].numpy()


def _grid_scale(lc: LinearSoftmaxClass) -> float:
    """Smallest nonzero ``|P|`` entry of a one-parameter class (1 without a projection)."""
    if lc.projection is None:
        return 1.0
    weights = np.abs(lc.projection[np.abs(lc.projection) > 0])
    return float(weights.min()) if weights.size else 1.0


@dataclass
class ChunkHellinger(Agent):
    """The Hellinger projection of the chunk laws onto the token class (module doc);
    registry name ``chunk-hellinger:K``."""

    chunk_size: int = 1
    grid_size: int = 201
    num_random_starts: int = 8
    sufficient_statistics: bool = True
    name: str = field(default="", init=False)
    needs_learner_class = True

    def __post_init__(self) -> None:
        check_tournament_chunk_size(self.chunk_size)
        check_int("grid_size", self.grid_size, 3)
        check_int("num_random_starts", self.num_random_starts, 0)
        self.name = f"chunk-hellinger:{int(self.chunk_size)}"

    def _search_one(self, objective: ChunkHellingerObjective) -> FloatArray:
        """Coarse-to-fine grid on the logit of the least sensitive feature, then a polish."""
        scale = _grid_scale(objective.lc)
        logits = np.linspace(-LOGIT_RANGE, LOGIT_RANGE, self.grid_size)
        spacing = 2 * LOGIT_RANGE / (self.grid_size - 1)
        values = objective.values(logits[:, None] / scale)
        for _ in range(2):
            centre = float(logits[int(np.argmin(values))])
            window = np.linspace(centre - 2 * spacing, centre + 2 * spacing, self.grid_size)
            logits = np.concatenate([logits, window])
            values = np.concatenate([values, objective.values(window[:, None] / scale)])
            spacing = 4 * spacing / (self.grid_size - 1)
        best = float(logits[int(np.argmin(values))])
        polish = minimize_scalar(lambda x: float(objective.values(np.array([[x / scale]]))[0]),
                                 bounds=(best - spacing, best + spacing), method="bounded",
                                 options={"xatol": 1e-12 * max(1.0, abs(best))})
        winner = polish.x if polish.fun <= values.min() else best
        return np.array([winner / scale])

    def _search_many(self, objective: ChunkHellingerObjective, task: SequenceTask,
                     demonstrations: Demonstrations | None, rng: np.random.Generator
                     ) -> FloatArray:
        dim = objective.lc.dim
        starts = [LogLossBC().fit(task, demonstrations).theta, np.zeros(dim)]
        scales = (0.5, 1.0, 2.0, 4.0)
        starts += [rng.normal(0.0, scales[i % 4], dim) for i in range(self.num_random_starts)]
        ends = [minimize(objective.value_grad, s, jac=True, method="L-BFGS-B",
                         options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-12})
                for s in starts]
        return np.asarray(min(ends, key=lambda r: r.fun).x, dtype=np.float64)

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        rng = np.random.default_rng(0) if rng is None else rng
        lc = linear_class(task)
        start = time.perf_counter()
        groups = _groups(task, self.chunk_size, demonstrations, self.sufficient_statistics)
        objective = ChunkHellingerObjective(lc, groups)
        if lc.dim == 1:
            theta = self._search_one(objective)
        else:
            theta = self._search_many(objective, task, demonstrations, rng)
        value = float(objective.values(theta[None, :])[0])
        return LinearSoftmaxPolicy(task, theta, 0.0, {
            "agent": self.name, "chunk_size": int(self.chunk_size),
            "chunk_outcomes": task.vocab_size**int(self.chunk_size),
            "statistics": "counts of ones" if all(g.by_count for g in groups) else "outcomes",
            "objective": value, "evaluations": objective.evaluations,
            "seconds": time.perf_counter() - start})


__all__ = ["ChunkHellinger", "ChunkHellingerObjective"]
