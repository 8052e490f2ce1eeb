"""``linear-ar``: a linear next-token predictor on the one-hot encoding of the full context.

``pi_h(a | x, a_{<h}) ∝ exp(z_h(x, a_{<h}) . W_h[:, a])`` with ``z_h`` the one-hot context
(:mod:`agents.context_models`: every previous token at every position) and one matrix
``W_h`` per position ``h`` (Malach 2023's linear auto-regressive class). Next-token
prediction over this class is LogLossBC: the summed log loss splits over positions into
independent multinomial logistic regressions, each solved exactly by the suite's solver
(:func:`agents.logistic.fit_logistic`: L-BFGS on exact gradients for these wide one-hot
rows, to the same gradient tolerance as its Newton path). Inputs
never observed at a position get weight exactly 0 at the optimum (their gradient is
``l2 W``), so each regression runs on the observed inputs only: the same solution, cheaper.

``l2`` (default ``1e-4``, on the per-token mean log loss) keeps ``W`` finite: the CoT tasks'
experts are deterministic, so without it the log loss has no minimiser (the data are
separable and the weights would grow without bound). The per-position problems are
independent: they run on ``num_threads`` threads (default ``None``: the available cores,
but never more than the BLAS thread limit in force, so a sweep worker, which
:mod:`agents.threads` pins to one thread, stays on one core), each with one BLAS
thread (the problems are small: oversubscribed BLAS threads made the fit ~10 times slower).
Every position's fit is the same computation whatever the thread count. ``solver`` is passed
to :func:`agents.logistic.fit_logistic` (``newton`` keeps the explicit-Hessian path).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from agents.base import Agent, FittedPolicy, register_policy_kind
from agents.context_models import (
    ContextModel,
    ContextOneHot,
    ObservedInputs,
    position_rows,
    training_sequences,
)
from agents.logistic import SOLVERS, LogisticFit, fit_logistic
from agents.threads import available_cores
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations


@register_policy_kind
class LinearARPolicy(FittedPolicy):
    """The fitted linear-AR model: observed inputs and weights ``(n_h, V)`` per position."""

    kind = "linear_ar"

    def __init__(
        self,
        task: SequenceTask,
        inputs: list[ObservedInputs],
        weights: list[FloatArray],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.encoding = ContextOneHot.of(task)
        if len(inputs) != task.horizon or len(weights) != task.horizon:
            raise ValueError(f"inputs and weights must hold one entry per position "
                             f"({task.horizon}), got {len(inputs)} and {len(weights)}")
        for h, (index, w) in enumerate(zip(inputs, weights, strict=True)):
            index.check(self.encoding.num_inputs(h), f"inputs[{h}]")
            if w.shape != (len(index), task.vocab_size) or not np.isfinite(w).all():
                raise ValueError(f"weights[{h}] must be finite with shape "
                                 f"({len(index)}, {task.vocab_size}), got {w.shape}")
        self.inputs = inputs
        self.weights = [np.asarray(w, dtype=np.float64) for w in weights]
        super().__init__(task, ContextModel(self.encoding, task.vocab_size, self._logits), info)

    def _logits(self, h: int, active: IntArray) -> FloatArray:
        index = self.inputs[h].lookup(active)
        padded = np.vstack([self.weights[h], np.zeros((1, self.vocab_size))])  # -1 -> zeros
        return padded[index].sum(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for h in range(self.horizon):
            out[f"inputs_{h}"] = self.inputs[h].observed
            out[f"weights_{h}"] = self.weights[h]
        return out

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> LinearARPolicy:
        missing = [f"{kind}_{h}" for h in range(task.horizon) for kind in ("inputs", "weights")
                   if f"{kind}_{h}" not in arrays]
        if missing:
            raise ValueError(f"saved linear-ar policy lacks {missing[:3]}")
        return cls(task, [ObservedInputs(arrays[f"inputs_{h}"]) for h in range(task.horizon)],
                   [arrays[f"weights_{h}"] for h in range(task.horizon)], info)


@dataclass
class LinearAR(Agent):
    """Exact next-token prediction (LogLossBC) over the linear full-context class (module doc)."""

    l2: float = 1e-4
    num_threads: int | None = None
    solver: str = "auto"
    name: str = "linear-ar"

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> LinearARPolicy:
        if not self.l2 > 0:
            raise ValueError(f"l2 must be > 0 (deterministic data are separable), got {self.l2}")
        if self.num_threads is not None and int(self.num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        workers = position_threads(self.num_threads, task.horizon)
        with threadpool_limits(limits=1):
            return self._fit(task, demonstrations, workers)

    def _fit(self, task: SequenceTask, demonstrations: Demonstrations | None,
             workers: int) -> LinearARPolicy:
        problems = PositionProblems(task, demonstrations)

        def position(h: int) -> tuple[ObservedInputs, LogisticFit]:
            index, rows, counts = problems(h)
            return index, fit_logistic(rows, counts, len(index), l2=self.l2, solver=self.solver)

        last_first = range(task.horizon - 1, -1, -1)  # the widest contexts start first
        if workers == 1:
            results = [position(h) for h in last_first][::-1]
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(position, last_first))[::-1]
        inputs = [index for index, _ in results]
        fits = [fit for _, fit in results]
        fitted = [fit.theta.reshape(len(index), task.vocab_size) for index, fit in results]
        info = {"agent": self.name, "l2": self.l2,
                "log_loss_per_token": float(np.mean([fit.log_loss for fit in fits])),
                "grad_norm": max(fit.grad_norm for fit in fits),
                "iterations": sum(fit.iterations for fit in fits),
                "converged": all(fit.converged for fit in fits),
                "solver": ",".join(sorted({fit.solver for fit in fits})),
                "parameters": int(sum(w.size for w in fitted))}
        return LinearARPolicy(task, inputs, fitted, info)


class PositionProblems:
    """The regression of position ``h`` on the training data: ``problems(h)`` gives the
    observed inputs, the distinct rows (compact indices) and their target counts."""

    def __init__(self, task: SequenceTask, demonstrations: Demonstrations | None) -> None:
        self.encoding = ContextOneHot.of(task)
        self.vocab_size = task.vocab_size
        self.prompts, self.tokens, self.weights = training_sequences(task, demonstrations)

    def __call__(self, h: int) -> tuple[ObservedInputs, IntArray, FloatArray]:
        active = self.encoding.active(self.prompts, self.tokens[:, :h])
        index = ObservedInputs.of(active)
        rows, counts = position_rows(index.lookup(active), self.tokens[:, h], self.weights,
                                     self.vocab_size)
        return index, rows, counts


def position_threads(requested: int | None, positions: int) -> int:
    """Threads for ``positions`` independent fits: ``requested``, or the available cores;
    never more than the BLAS thread limit in force (1 in a sweep worker) nor ``positions``."""
    limits = [pool["num_threads"] for pool in threadpool_info()]
    wanted = available_cores() if requested is None else int(requested)
    return max(1, min(wanted, positions, *limits))
