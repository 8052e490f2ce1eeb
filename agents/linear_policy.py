"""A fitted member ``pi_theta`` of a task's linear-softmax learner class."""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import FittedPolicy, register_policy_kind
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import FiniteStateModel, FiniteStateTables
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray


def linear_class(task: SequenceTask) -> LinearSoftmaxClass:
    """The task's learner class, which must be linear-softmax."""
    if not isinstance(task.learner_class, LinearSoftmaxClass):
        raise ValueError(
            f"{task.env_id} has no linear-softmax learner class "
            f"(it has {type(task.learner_class).__name__})"
        )
    return task.learner_class


@register_policy_kind
class LinearSoftmaxPolicy(FittedPolicy):
    """``pi_theta`` for the task's :class:`LinearSoftmaxClass`; finite-state, so exact to score."""

    kind = "linear_softmax"

    def __init__(
        self, task: SequenceTask, theta: FloatArray, info: dict[str, Any] | None = None
    ) -> None:
        super().__init__(task, info)
        self.theta = np.asarray(theta, dtype=np.float64)
        self._model = FiniteStateModel(linear_class(task).tables(self.theta), task.prompts)  # type: ignore[arg-type]

    def finite_state(self) -> FiniteStateTables:
        return self._model.tables

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        return self._model.next_token_logprobs(prompts, prefixes)

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        return self._model.token_logprobs(prompts, tokens)

    def sample(self, prompts: IntArray, rng: np.random.Generator) -> IntArray:
        return self._model.sample(prompts, rng)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta}

    @classmethod
    def from_arrays(
        cls, task: SequenceTask, arrays: dict[str, np.ndarray], info: dict[str, Any]
    ) -> LinearSoftmaxPolicy:
        theta = arrays.get("theta")
        dim = linear_class(task).dim
        if theta is None or theta.shape != (dim,) or not np.isfinite(theta).all():
            raise ValueError(f"saved theta must be {dim} finite numbers")
        return cls(task, theta, info)
