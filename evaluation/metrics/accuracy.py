"""Answer accuracy of a policy on tasks with a right answer (``task.answer_length``).

The policy decodes greedily (argmax token at every position, its own previous tokens in the
context: no teacher forcing); it is right on a prompt when its last ``answer_length`` tokens
equal the expert's. Accuracy is measured on ``task.test_prompts`` (held out from training)
when the task has one, else on ``task.prompts``: exactly over a listed support of at most
:data:`evaluation.methods.deterministic.MAX_EXACT_TOKENS` tokens, otherwise on ``n_samples``
sampled prompts with its standard error.
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


def answer_accuracy(
    task: SequenceTask,
    model: SequenceModel,
    *,
    n_samples: int = 10_000,
    rng: np.random.Generator | int | None = None,
) -> AccuracyEstimate:
    """Greedy answer accuracy of ``model`` on the task's held-out prompts (module doc)."""
    if not task.answer_length:
        raise ValueError(f"{task.env_id} has no answer (task.answer_length is not set)")
    if int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples}")
    split = "test" if task.test_prompts is not None else "train"
    law = task.test_prompts if task.test_prompts is not None else task.prompts
    if exact_over_support(law, task.horizon):
        assert isinstance(law, FinitePrompts)
        correct = _correct(task, model, law.contexts)
        accuracy = float(np.average(correct, weights=np.exp(law.log_probs)))
        return AccuracyEstimate(accuracy, 0.0, law.num_contexts, split)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    correct = _correct(task, model, law.sample(int(n_samples), generator))
    stderr = float(correct.std(ddof=1) / math.sqrt(len(correct)))
    return AccuracyEstimate(float(correct.mean()), stderr, len(correct), split)


TASK_METRICS: dict[str, str] = {
    "ntp_envs/PathStar-v0": "evaluation.metrics.pathstar:sweep_metrics",
}
"""Task-specific measurements: env id -> ``"module:function"`` (imported on first use), the
function mapping ``(task, model, n_samples, rng)`` to a JSON-able dict that a sweep row
stores in its ``task_metrics`` column."""


def task_metrics(
    task: SequenceTask, model: SequenceModel, n_samples: int, rng: np.random.Generator
) -> dict[str, float | str]:
    """Result-store columns for ``task``: answer accuracy where the task has an answer, and
    its :data:`TASK_METRICS` (as JSON) where it has some."""
    out: dict[str, float | str] = {}
    if task.answer_length:
        est = answer_accuracy(task, model, n_samples=n_samples, rng=rng)
        out.update({"answer_accuracy": est.accuracy, "answer_accuracy_stderr": est.stderr,
                    "answer_split": est.split})
    if task.env_id in TASK_METRICS:
        module, name = TASK_METRICS[task.env_id].split(":")
        measure = getattr(importlib.import_module(module), name)
        out["task_metrics"] = json.dumps(measure(task, model, n_samples, rng), sort_keys=True)
    return out
