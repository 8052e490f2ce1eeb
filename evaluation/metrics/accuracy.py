"""Answer accuracy of a policy on tasks with a right answer (``task.answer_length``).

The policy decodes greedily (argmax token at every position, its own previous tokens in the
context: no teacher forcing); it is right on a prompt when its last ``answer_length`` tokens
equal the expert's. The prompts (``split``):

* ``"test"``: ``task.test_prompts`` when the task has one (held out from training by
  construction);
* ``"held-out"``: else, when the prompts the model was trained on are given (``seen``, e.g.
  the demonstrations' prompts), the prompt law restricted to the prompts not in ``seen``;
* ``"all"``: else ``task.prompts``, training prompts included (no ``seen``, as for a
  population fit, which sees every prompt, or every prompt of the support is in ``seen``).

Exactly over a listed support of at most
:data:`evaluation.methods.deterministic.MAX_EXACT_TOKENS` tokens, otherwise on ``n_samples``
sampled prompts (those in ``seen`` dropped) with its standard error.
"""

from __future__ import annotations

import importlib
import json
import math
from typing import NamedTuple

import numpy as np

from evaluation.methods.deterministic import exact_over_support
from ntp_envs.decoding import greedy_decode
from ntp_envs.sequence_model import FinitePrompts, SequenceModel
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

__all__ = ["TASK_METRICS", "AccuracyEstimate", "answer_accuracy", "greedy_decode",
           "task_metrics"]

class AccuracyEstimate(NamedTuple):
    """Fraction of prompts answered right; ``stderr`` 0 when exact."""

    accuracy: float
    stderr: float
    num_prompts: int
    split: str


def _correct(task: SequenceTask, model: SequenceModel, prompts: IntArray) -> FloatArray:
    length = int(task.answer_length or 0)
    expert = task.expert.deterministic_sequences(prompts)
    if expert is None:
        raise ValueError(f"{task.env_id}: answer accuracy needs a deterministic expert")
    decoded = greedy_decode(model, prompts)
    return (decoded[:, -length:] == expert[:, -length:]).all(axis=1).astype(np.float64)


def _unseen(prompts: IntArray, seen: set[bytes]) -> np.ndarray:
    """Boolean mask of the rows of ``prompts`` not in ``seen`` (rows as int64 bytes)."""
    rows = np.ascontiguousarray(prompts, dtype=np.int64)
    return np.fromiter((row.tobytes() not in seen for row in rows), dtype=bool,
                       count=len(rows))


def _seen_rows(task: SequenceTask, seen: IntArray) -> set[bytes]:
    length = task.prompts.prompt_length
    rows = np.asarray(seen)
    if rows.ndim != 2 or rows.shape[1] != length or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"seen must be an integer array of shape (n, {length}), got shape "
                         f"{rows.shape} and dtype {rows.dtype}")
    return {row.tobytes() for row in np.ascontiguousarray(rows, dtype=np.int64)}


def answer_accuracy(
    task: SequenceTask,
    model: SequenceModel,
    *,
    n_samples: int = 10_000,
    rng: np.random.Generator | int | None = None,
    seen: IntArray | None = None,
) -> AccuracyEstimate:
    """Greedy answer accuracy of ``model`` on the task's test prompts, else on the prompts
    not in ``seen`` (those it was trained on), else on all prompts (module doc)."""
    if not task.answer_length:
        raise ValueError(f"{task.env_id} has no answer (task.answer_length is not set)")
    if int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples}")
    excluded = set() if seen is None else _seen_rows(task, seen)
    if task.test_prompts is not None:
        split, law, excluded = "test", task.test_prompts, set()
    else:
        split, law = ("held-out" if excluded else "all"), task.prompts
    if exact_over_support(law, task.horizon):
        assert isinstance(law, FinitePrompts)
        keep = _unseen(law.contexts, excluded)
        if not keep.any():  # every prompt was seen: nothing is held out
            split, keep = "all", np.ones_like(keep)
        correct = _correct(task, model, law.contexts[keep])
        accuracy = float(np.average(correct, weights=np.exp(law.log_probs[keep])))
        return AccuracyEstimate(accuracy, 0.0, int(keep.sum()), split)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    prompts = law.sample(int(n_samples), generator)
    keep = _unseen(prompts, excluded)
    if keep.sum() < 2:  # (almost) every sampled prompt was seen: score them all
        split, keep = "all", np.ones_like(keep)
    correct = _correct(task, model, prompts[keep])
    stderr = float(correct.std(ddof=1) / math.sqrt(len(correct)))
    return AccuracyEstimate(float(correct.mean()), stderr, len(correct), split)


TASK_METRICS: dict[str, str] = {
    "ntp_envs/PathStar-v0": "evaluation.metrics.pathstar:sweep_metrics",
}
"""Task-specific measurements: env id -> ``"module:function"`` (imported on first use), the
function mapping ``(task, model, n_samples, rng)`` to a JSON-able dict that a sweep row
stores in its ``task_metrics`` column."""


def task_metrics(
    task: SequenceTask, model: SequenceModel, n_samples: int, rng: np.random.Generator,
    seen: IntArray | None = None,
) -> dict[str, float | str]:
    """Result-store columns for ``task``: answer accuracy where the task has an answer (off
    the training prompts ``seen`` where it has no test split), and its :data:`TASK_METRICS`
    (as JSON) where it has some."""
    out: dict[str, float | str] = {}
    if task.answer_length:
        est = answer_accuracy(task, model, n_samples=n_samples, rng=rng, seen=seen)
        out.update({"answer_accuracy": est.accuracy, "answer_accuracy_stderr": est.stderr,
                    "answer_split": est.split})
    if task.env_id in TASK_METRICS:
        module, name = TASK_METRICS[task.env_id].split(":")
        measure = getattr(importlib.import_module(module), name)
        out["task_metrics"] = json.dumps(measure(task, model, n_samples, rng), sort_keys=True)
    return out
