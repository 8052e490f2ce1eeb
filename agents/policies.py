"""Fitted members of a task's learner class, optionally smoothed: what agents return."""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import FittedPolicy, register_policy_kind
from agents.smoothing import smoothed
from ntp_envs.finite_class import FiniteClass
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import FiniteStateModel
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray


def linear_class(task: SequenceTask) -> LinearSoftmaxClass:
    """The task's learner class, which must be linear-softmax."""
    if not isinstance(task.learner_class, LinearSoftmaxClass):
        raise ValueError(
            f"{task.env_id} has no linear-softmax learner class "
            f"(it has {type(task.learner_class).__name__})"
        )
    return task.learner_class


def finite_class(task: SequenceTask) -> FiniteClass:
    """The task's learner class, which must be finite."""
    if not isinstance(task.learner_class, FiniteClass):
        raise ValueError(f"{task.env_id} has no finite learner class")
    return task.learner_class


def _gamma(arrays: dict[str, np.ndarray]) -> float:
    gamma = arrays.get("gamma", np.zeros(1))
    if gamma.shape != (1,) or not 0.0 <= float(gamma[0]) < 1.0:
        raise ValueError("saved gamma must be one number in [0, 1)")
    return float(gamma[0])


@register_policy_kind
class LinearSoftmaxPolicy(FittedPolicy):
    """``(1 - gamma) pi_theta + gamma Unif`` for the task's linear-softmax class (finite-state)."""

    kind = "linear_softmax"

    def __init__(self, task: SequenceTask, theta: FloatArray, gamma: float = 0.0,
                 info: dict[str, Any] | None = None) -> None:
        self.theta = np.asarray(theta, dtype=np.float64)
        self.gamma = float(gamma)
        base = FiniteStateModel(linear_class(task).tables(self.theta), linear_class(task).prompts)
        super().__init__(task, smoothed(base, self.gamma, task.prompts), info)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta, "gamma": np.array([self.gamma])}

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> LinearSoftmaxPolicy:
        theta = arrays.get("theta")
        dim = linear_class(task).dim
        if theta is None or theta.shape != (dim,) or not np.isfinite(theta).all():
            raise ValueError(f"saved theta must be {dim} finite numbers")
        return cls(task, theta, _gamma(arrays), info)


@register_policy_kind
class FiniteMemberPolicy(FittedPolicy):
    """``(1 - gamma) pi_i + gamma Unif`` for member ``i`` of the task's finite class."""

    kind = "finite_member"

    def __init__(self, task: SequenceTask, index: int, gamma: float = 0.0,
                 info: dict[str, Any] | None = None) -> None:
        members = finite_class(task)
        if not 0 <= index < len(members):
            raise ValueError(f"index must lie in [0, {len(members) - 1}], got {index}")
        self.index = int(index)
        self.gamma = float(gamma)
        model = smoothed(members.members[self.index], self.gamma, task.prompts)
        super().__init__(task, model, {"member": members.names[self.index], **(info or {})})

    def arrays(self) -> dict[str, np.ndarray]:
        return {"index": np.array([self.index]), "gamma": np.array([self.gamma])}

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> FiniteMemberPolicy:
        index = arrays.get("index")
        if index is None or index.shape != (1,) or index.dtype.kind not in "iu":
            raise ValueError("saved index must be one integer")
        return cls(task, int(index[0]), _gamma(arrays), info)
