"""ChunkKR (``chunk-kr:K``): chunk laws by ridge regression, a bounded (squared) chunk loss.

Our reading of the paper's "ChunkKR" as chunked kernel regression (the paper's construction
was not at hand; this is ours, see docs/theory.md, The learners). Cut each sequence into chunks of
``K`` tokens as ``chunk:K`` does (:mod:`agents.chunked_bc`; chunk 0 starts at 0, a short last
chunk when ``K`` does not divide ``H``). For every chunk, regress the one-hot chunk outcome
``e_o`` (``V^K`` outputs) on the token class's window features lifted to chunks, the
multi-hot ``z(x, a_{start-1..start-m})`` of :class:`agents.chunked_bc.ChunkClass`:

``W = argmin_W sum_{sequences, chunks} |e_o - W^T z|^2 + ridge |W|^2
    = (Z^T D Z + ridge I)^{-1} Z^T N``

(closed form; ``D`` the visits of each distinct row ``(x, chunk phase, window)``, ``N`` their
outcome counts, both per sequence; a population fit uses their exact expectations under the
expert law). The predicted law ``z^T W`` of each row is projected (Euclidean) onto the
simplex with a floor, ``{q : q_o >= floor, sum_o q_o = 1}``; the short last chunk has its
own regression. The squared loss is bounded per chunk (at most 2), unlike the chunk-level
log loss of ``chunk:K``; the fit is convex and costs ``O(R D^2 + D^3 + R D V^K)`` for ``R``
rows and ``D = C + m V`` features, i.e. ``~V^K``. The class is improper (any law of the
``K`` chunk tokens jointly), so ``C_apx`` against the token class can go below 1.

* ``memory`` (``m``) defaults as for ``chunk:K``: the token class's memory, 0 for a finite
  class (then the features are the context one-hot and the fit is the per-context chunk
  frequency, shrunk by the ridge, i.e. ``chunk:K``'s law up to ridge and floor).
* ``ridge`` defaults to ``1e-9`` for population fits and ``1 / n`` for ``n`` demonstrations
  (one pseudo-observation); ``floor`` to ``1e-12`` (``floor V^K < 1`` is required).
* Exact evaluation as for ``chunk:K`` (the chunk recursion of :mod:`evaluation.methods.chunk_dp`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.base import Agent, FittedPolicy, demonstration_arrays, register_policy_kind
from agents.chunked_bc import (
    MAX_MEMORY,
    chunk_class,
    saved_integers,
)
from agents.rho_estimator import check_tournament_chunk_size
from ntp_envs.chunk_tables import ChunkModel, ChunkTables
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray
from ntp_envs.validation import check_int

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

POPULATION_RIDGE = 1e-9
DEFAULT_FLOOR = 1e-12


def design_matrix(active: IntArray, num_inputs: int) -> FloatArray:
    """Dense multi-hot rows ``(R, num_inputs)`` from active-input indices (``-1`` pads)."""
    active = np.asarray(active, dtype=np.int64)
    z = np.zeros((active.shape[0], num_inputs + 1))
    np.put_along_axis(z, np.where(active < 0, num_inputs, active), 1.0, axis=1)
    return z[:, :num_inputs]


def ridge_chunk_laws(z: FloatArray, counts: FloatArray, ridge: float) -> FloatArray:
    """Predicted (unprojected) chunk laws ``Z W`` of rows ``z`` with outcome counts ``(R, O)``:
    ``W = (Z^T diag(visits) Z + ridge I)^{-1} Z^T counts``."""
    visits = counts.sum(axis=1)
    gram = z.T @ (visits[:, None] * z) + ridge * np.eye(z.shape[1])
    weights = np.linalg.solve(gram, z.T @ counts)
    return z @ weights


def project_simplex_floor(q: FloatArray, floor: float) -> FloatArray:
    """Row-wise Euclidean projection onto ``{p : p >= floor, sum p = 1}``."""
    q = np.asarray(q, dtype=np.float64)
    outcomes = q.shape[-1]
    total = 1.0 - outcomes * floor
    if total <= 0:
        raise ValueError(f"floor must be < 1 / {outcomes} (the number of outcomes), got {floor}")
    y = q - floor
    ordered = -np.sort(-y, axis=-1)
    cumulative = np.cumsum(ordered, axis=-1) - total
    ranks = np.arange(1, outcomes + 1)
    active = ordered - cumulative / ranks > 0
    count = active.sum(axis=-1, keepdims=True)  # >= 1: the largest entry always stays
    tau = np.take_along_axis(cumulative, count - 1, axis=-1) / count
    return np.maximum(y - tau, 0.0) + floor


def _log_laws(z: FloatArray, counts: FloatArray, ridge: float, floor: float) -> FloatArray:
    laws = project_simplex_floor(ridge_chunk_laws(z, counts, ridge), floor)
    return np.log(laws / laws.sum(axis=-1, keepdims=True))


@register_policy_kind
class ChunkTablePolicy(FittedPolicy):
    """A chunk model given by its tables (an improper chunk law, e.g. ``chunk-kr:K``)."""

    kind = "chunk_tables"

    def __init__(self, task: SequenceTask, tables: ChunkTables,
                 info: dict[str, Any] | None = None) -> None:
        super().__init__(task, ChunkModel(tables, task.prompts), info)

    def arrays(self) -> dict[str, np.ndarray]:
        tables = self.chunk_tables()
        assert tables is not None
        return {"logq": tables.logq,
                "last": np.zeros(0) if tables.last is None else tables.last,
                "chunk_size": np.array([tables.chunk_size]), "memory": np.array([tables.memory])}

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> ChunkTablePolicy:
        ints = saved_integers(arrays, ("chunk_size", "memory"))
        logq, last = arrays.get("logq"), arrays.get("last")
        if logq is None or last is None:
            raise ValueError("saved chunk tables need logq and last")
        tables = ChunkTables(logq, last if last.size else None, ints["chunk_size"],
                             ints["memory"], task.horizon, task.vocab_size)
        return cls(task, tables, info)


@dataclass
class ChunkKR(Agent):
    """Ridge regression of one-hot chunk outcomes on lifted window features (module doc);
    registry name ``chunk-kr:K``."""

    chunk_size: int = 1
    memory: int | None = None
    ridge: float | None = None
    floor: float = DEFAULT_FLOOR
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        check_tournament_chunk_size(self.chunk_size)
        if self.memory is not None:
            check_int("memory", self.memory, 0, MAX_MEMORY)
        if self.ridge is not None and not (math.isfinite(self.ridge) and self.ridge > 0):
            raise ValueError(f"ridge must be a finite number > 0, got {self.ridge}")
        if not (math.isfinite(self.floor) and 0 < self.floor < 1):
            raise ValueError(f"floor must lie in (0, 1), got {self.floor}")
        self.name = f"chunk-kr:{int(self.chunk_size)}"

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        chunks = chunk_class(task, self.chunk_size, self.memory)  # validates before allocating
        for outcomes in (chunks.num_outcomes, task.vocab_size**chunks.last_length):
            if outcomes * self.floor >= 1:
                raise ValueError(f"floor must be < 1 / V**K = 1 / {outcomes}, got {self.floor}")
        if demonstrations is None:
            full, last = chunks.expected_counts(task)
            ridge = POPULATION_RIDGE if self.ridge is None else self.ridge
        else:
            prompts, tokens = demonstration_arrays(task, demonstrations)
            full, last = chunks.counts(chunks.window.prompts.index_of(prompts), tokens)
            full, last = full / len(tokens), None if last is None else last / len(tokens)
            ridge = 1.0 / len(tokens) if self.ridge is None else self.ridge
        n_ctx, n_pos, n_states = chunks.num_contexts, chunks.num_positions, chunks.num_states
        z = design_matrix(chunks.full_inputs(), chunks.num_inputs)
        logq = _log_laws(z, full.reshape(len(z), -1), ridge, self.floor)
        logq = logq.reshape(n_ctx, n_pos, n_states, -1)
        log_last = None
        if last is not None:
            z_last = design_matrix(chunks.last_inputs(), chunks.num_inputs)
            log_last = _log_laws(z_last, last.reshape(len(z_last), -1), ridge, self.floor)
            log_last = log_last.reshape(n_ctx, n_states, -1)
        tables = ChunkTables(logq, log_last, chunks.chunk_size, chunks.memory, task.horizon,
                             task.vocab_size)
        return ChunkTablePolicy(task, tables, {
            "agent": self.name, "chunk_size": chunks.chunk_size, "memory": chunks.memory,
            "chunk_outcomes": chunks.num_outcomes, "ridge": ridge, "floor": self.floor,
            "features": chunks.num_inputs})


__all__ = ["ChunkKR", "ChunkTablePolicy", "design_matrix",
           "project_simplex_floor", "ridge_chunk_laws"]
