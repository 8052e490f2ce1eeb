"""Path-star measurements (Bachmann & Nagarajan, ICML 2024): where teacher forcing fails.

For a policy fitted on ``PathStar-v0`` these are estimated on ``n_prompts`` fresh graphs
(every number is a sample mean; ``*_stderr`` its standard error):

* ``exact_path_accuracy``: free-running (greedy, own tokens in the context) decode equals
  the target; ``path_accuracy`` (list): per node of the source-to-goal path (index 0 = the
  source, whatever order the env emits it in);
* ``tf_path_accuracy`` (list): teacher-forced per-node accuracy (argmax given the true
  previous tokens);
* the Clever-Hans signature: ``decision_accuracy`` (teacher-forced accuracy of path node 1,
  the source's successor: the one choice that needs planning; chance is ``1 / degree``),
  ``later_tf_accuracy`` (teacher-forced accuracy of path nodes ``2..H-1``),
  ``later_given_correct_prev`` (free-running: a token after the decision is right given the
  token emitted before it is right) and ``edge_following`` (free-running: each token after
  the first is joined to the one emitted before it by an edge in the env's direction, right
  arm or not: a teacher-forced model that learned the Clever-Hans lookup follows the edges
  even after a wrong first choice).

The exact ``D_H^2 = 2 - 2 E_x sqrt(Q(path(x) | x))`` is the shared evaluator's
(:func:`evaluation.divergences.divergence`, method ``deterministic``).

In a sweep every ``PathStar-v0`` row stores these in its ``task_metrics`` column (JSON;
:data:`evaluation.metrics.accuracy.TASK_METRICS`), next to the generic ``answer_accuracy`` (also the
exact-path accuracy, on its own sample of graphs), ``hellinger2`` and ``fit_seconds``; the
path-star experiment (:mod:`evaluation.experiments.pathstar`) tabulates and plots them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evaluation.metrics.accuracy import greedy_decode
from ntp_envs.path_star import ENV_ID, StarLayout, decode_prompts
from ntp_envs.sequence_model import SequenceModel
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import BoolArray, IntArray
from ntp_envs.validation import check_int

__all__ = ["MAX_SWEEP_PROMPTS", "PathStarMetrics", "decode", "pathstar_metrics", "sweep_metrics",
           "teacher_forced_argmax"]


@dataclass(frozen=True)
class PathStarMetrics:
    """The measurements of the module doc for one policy."""

    num_prompts: int
    degree: int
    exact_path_accuracy: float
    exact_path_accuracy_stderr: float
    path_accuracy: list[float]
    tf_path_accuracy: list[float]
    decision_accuracy: float
    decision_accuracy_stderr: float
    later_tf_accuracy: float
    later_given_correct_prev: float
    edge_following: float

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return asdict(self)


def decode(model: SequenceModel, prompts: IntArray) -> IntArray:
    """Greedy free-running decode: the model's own one-pass ``greedy`` where it has one
    (the teacherless GPT), else :func:`evaluation.metrics.accuracy.greedy_decode`."""
    own = getattr(model, "greedy", None)
    return own(prompts) if callable(own) else greedy_decode(model, prompts)


def teacher_forced_argmax(model: SequenceModel, prompts: IntArray, target: IntArray) -> IntArray:
    """Argmax token ``(B, H)`` at each step given the true previous target tokens."""
    out = np.empty(target.shape, dtype=np.int64)
    for h in range(target.shape[1]):
        out[:, h] = model.next_token_logprobs(prompts, target[:, :h]).argmax(axis=1)
    return out


def _stderr(values: BoolArray) -> float:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0


def _is_edge(prompts: IntArray, layout: StarLayout, tail: IntArray, head: IntArray) -> BoolArray:
    """Whether ``tail -> head`` is an edge of each prompt's graph, per column."""
    edges, _, _ = decode_prompts(layout, prompts)
    match = (edges[:, None, :, 0] == tail[:, :, None]) & (edges[:, None, :, 1] == head[:, :, None])
    return match.any(axis=2)


def pathstar_metrics(
    task: SequenceTask,
    model: SequenceModel,
    *,
    n_prompts: int = 10_000,
    rng: np.random.Generator | int | None = None,
) -> PathStarMetrics:
    """The module doc's measurements of ``model`` on ``n_prompts`` fresh graphs of ``task``."""
    if task.env_id != ENV_ID:
        raise ValueError(f"task must be a {ENV_ID} task, got {task.env_id}")
    n_prompts = check_int("n_prompts", n_prompts, 2)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    layout: StarLayout = task.extras["layout"]
    steps_to_path = np.asarray(task.extras["path_positions"])  # path index of each step
    path_to_step = np.argsort(steps_to_path)
    prompts = task.prompts.sample(n_prompts, generator)
    target = task.expert.deterministic_sequences(prompts)
    free = decode(model, prompts)
    forced = teacher_forced_argmax(model, prompts, target)
    free_ok, forced_ok = free == target, forced == target
    exact = free_ok.all(axis=1)
    decision_step = int(path_to_step[1])
    later_steps = path_to_step[2:]
    after = np.arange(decision_step + 1, task.horizon)  # emitted after the decision
    prev_ok = free_ok[:, after - 1]
    given = free_ok[:, after][prev_ok]
    if task.extras["target_order"] == "reverse":
        follows = _is_edge(prompts, layout, free[:, 1:], free[:, :-1])
    else:
        follows = _is_edge(prompts, layout, free[:, :-1], free[:, 1:])
    mean_by_path = free_ok.mean(axis=0)[path_to_step]
    return PathStarMetrics(
        num_prompts=n_prompts,
        degree=layout.degree,
        exact_path_accuracy=float(exact.mean()),
        exact_path_accuracy_stderr=_stderr(exact),
        path_accuracy=[float(v) for v in mean_by_path],
        tf_path_accuracy=[float(v) for v in forced_ok.mean(axis=0)[path_to_step]],
        decision_accuracy=float(forced_ok[:, decision_step].mean()),
        decision_accuracy_stderr=_stderr(forced_ok[:, decision_step]),
        later_tf_accuracy=float(forced_ok[:, later_steps].mean()) if len(later_steps) else
        math.nan,
        later_given_correct_prev=float(given.mean()) if given.size else math.nan,
        edge_following=float(follows.mean()),
    )


MAX_SWEEP_PROMPTS = 20_000
"""Graphs a sweep row's measurements use at most (``min(eval_samples, this)``)."""


def sweep_metrics(task: SequenceTask, model: SequenceModel, n_samples: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    """The ``task_metrics`` of a sweep row (:data:`evaluation.metrics.accuracy.TASK_METRICS`)."""
    n = min(int(n_samples), MAX_SWEEP_PROMPTS)
    return pathstar_metrics(task, model, n_prompts=n, rng=rng).as_dict()
