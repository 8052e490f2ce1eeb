"""``linear-ar``: a linear next-token predictor on the one-hot encoding of the full context.

``pi_h(a | x, a_{<h}) ∝ exp(z_h(x, a_{<h}) . W_h[:, a])`` with ``z_h`` the one-hot context
(:mod:`agents.context_models`: every previous token at every position) and one matrix
``W_h`` per position ``h`` (Malach 2023's linear auto-regressive class). Next-token
prediction over this class is LogLossBC: the summed log loss splits over positions into
independent multinomial logistic regressions, each solved exactly by the suite's solver
(:func:`agents.logistic.fit_logistic`, Newton on exact Hessian-vector products). Inputs
never observed at a position get weight exactly 0 at the optimum (their gradient is
``l2 W``), so each regression runs on the observed inputs only: the same solution, cheaper.

``l2`` (default ``1e-4``, on the per-token mean log loss) keeps ``W`` finite: the CoT tasks'
experts are deterministic, so without it the log loss has no minimiser (the data are
separable and the weights would grow without bound). ``num_threads`` (default 1) caps the
BLAS threads of the fit: the per-position problems are small, and on a shared machine
oversubscribed BLAS threads made the fit ~10 times slower than one thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from agents.base import Agent, FittedPolicy, register_policy_kind
from agents.context_models import (
    ContextModel,
    ContextOneHot,
    ObservedInputs,
    position_rows,
    training_sequences,
)
from agents.logistic import fit_logistic
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
    num_threads: int | None = 1
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
        with threadpool_limits(limits=self.num_threads):
            return self._fit(task, demonstrations)

    def _fit(self, task: SequenceTask, demonstrations: Demonstrations | None) -> LinearARPolicy:
        encoding = ContextOneHot.of(task)
        prompts, tokens, weights = training_sequences(task, demonstrations)
        inputs, fitted = [], []
        losses, grad_norms, iterations, converged = [], [], 0, True
        for h in range(task.horizon):
            active = encoding.active(prompts, tokens[:, :h])
            index = ObservedInputs.of(active)
            rows, counts = position_rows(index.lookup(active), tokens[:, h], weights,
                                         task.vocab_size)
            fit = fit_logistic(rows, counts, len(index), l2=self.l2)
            inputs.append(index)
            fitted.append(fit.theta.reshape(len(index), task.vocab_size))
            losses.append(fit.log_loss)
            grad_norms.append(fit.grad_norm)
            iterations += fit.iterations
            converged &= fit.converged
        info = {"agent": self.name, "l2": self.l2,
                "log_loss_per_token": float(np.mean(losses)), "grad_norm": max(grad_norms),
                "iterations": iterations, "converged": bool(converged),
                "parameters": int(sum(w.size for w in fitted))}
        return LinearARPolicy(task, inputs, fitted, info)
