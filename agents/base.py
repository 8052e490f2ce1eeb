"""The agent interface: fit from demonstrations (or the exact expert law) -> a policy."""

from __future__ import annotations

import dataclasses
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ntp_envs import archive
from ntp_envs.archive import load_archive, save_archive
from ntp_envs.sequence_model import (
    CountLaw,
    FinitePrompts,
    FiniteStateTables,
    SequenceModel,
)
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

DEVICE_ENV = "NTP_GYM_DEVICE"
"""Environment variable naming the torch device of the neural agents (default ``cpu``)."""

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations
    from ntp_envs.chunk_tables import ChunkTables


class FittedPolicy(SequenceModel):
    """A fitted policy: a sequence model that knows its task and can be saved without pickle.

    It answers the sequence-model protocol through ``model`` (set by the subclass), so its
    structure (finite-state tables, count law) reaches the evaluator. Subclasses set
    ``kind`` and implement :meth:`arrays` and :meth:`from_arrays`.
    """

    kind: str = ""

    def __init__(
        self, task: SequenceTask, model: SequenceModel, info: dict[str, Any] | None = None
    ) -> None:
        if (model.vocab_size, model.horizon) != (task.vocab_size, task.horizon):
            raise ValueError("the fitted model must share the task's vocab_size and horizon")
        self.task = task
        self.model = model
        self.vocab_size = task.vocab_size
        self.horizon = task.horizon
        self.info: dict[str, Any] = dict(info or {})

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        return self.model.next_token_logprobs(prompts, prefixes)

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        return self.model.token_logprobs(prompts, tokens)

    def sequence_logprob(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        return self.model.sequence_logprob(prompts, tokens)

    def sample(self, prompts: IntArray, rng: np.random.Generator) -> IntArray:
        return self.model.sample(prompts, rng)

    def finite_state(self) -> FiniteStateTables | None:
        return self.model.finite_state()

    def count_law(self) -> CountLaw | None:
        return self.model.count_law()

    def chunk_tables(self) -> ChunkTables | None:
        return self.model.chunk_tables()

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The numeric state to save."""

    @classmethod
    @abstractmethod
    def from_arrays(
        cls, task: SequenceTask, arrays: dict[str, np.ndarray], info: dict[str, Any]
    ) -> FittedPolicy:
        """Rebuild from :meth:`arrays` (validate shapes; ValueError when they do not fit)."""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a ``.npz`` archive (arrays + JSON metadata; loads with ``allow_pickle=False``)."""
        meta = {
            "format": "ntp-gym-policy/1",
            "kind": self.kind,
            "env_id": self.task.env_id,
            "env_kwargs": self.task.params,
            "info": self.info,
        }
        return save_archive(path, self.arrays(), meta)


_POLICY_KINDS: dict[str, type[FittedPolicy]] = {}


def register_policy_kind(cls: type[FittedPolicy]) -> type[FittedPolicy]:
    """Class decorator: make ``cls`` loadable by :func:`load_policy`."""
    _POLICY_KINDS[cls.kind] = cls
    return cls


class _NextTokenModel(SequenceModel):
    """The sequence-model view of a :class:`NextTokenPolicy`: every score, sample and
    likelihood from the policy's ``next_token_logprobs``."""

    def __init__(self, policy: NextTokenPolicy) -> None:
        self.policy = policy
        self.vocab_size = policy.vocab_size
        self.horizon = policy.horizon

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        return self.policy.next_token_logprobs(prompts, prefixes)


class NextTokenPolicy(FittedPolicy):
    """A policy that needs only :meth:`next_token_logprobs` (the plug-in path, docs/plugins.md).

    Built as ``cls(task, info, **arrays)``: each numeric array becomes an attribute and is
    what :meth:`save` writes (with ``info`` as JSON); :func:`load_policy` rebuilds the policy
    the same way once its class is imported. Subclasses register themselves under ``kind``
    (default ``plugin:<class name>``); a kind of another sort of policy is refused.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            cls.kind = f"plugin:{cls.__name__}"
        taken = _POLICY_KINDS.get(cls.kind)
        if taken is not None and not issubclass(taken, NextTokenPolicy):
            raise TypeError(f"{cls.__qualname__}: policy kind {cls.kind!r} is taken by "
                            f"{taken.__module__}:{taken.__qualname__}; set another kind")
        register_policy_kind(cls)

    def __init__(
        self, task: SequenceTask, info: dict[str, Any] | None = None, **arrays: Any
    ) -> None:
        self.vocab_size, self.horizon = task.vocab_size, task.horizon
        super().__init__(task, _NextTokenModel(self), info)
        self._array_names: list[str] = []
        for name, value in arrays.items():
            if not name.isidentifier() or name.startswith("_") or hasattr(self, name):
                raise ValueError(f"{type(self).__name__}: array name {name!r} must be a public "
                                 "identifier that is not already an attribute of the policy")
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise ValueError(f"{type(self).__name__}: array {name!r} must be numeric "
                                 f"(bool, int or float), got dtype {array.dtype}")
            setattr(self, name, array)
            self._array_names.append(name)

    @abstractmethod
    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        """Log-probabilities ``(B, V)`` of the token at position ``prefixes.shape[1]`` given
        ``prompts (B, L)`` and ``prefixes (B, h)``; each row's exponentials sum to 1."""

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays given at construction (their current values)."""
        return {name: np.asarray(getattr(self, name)) for name in self._array_names}

    @classmethod
    def from_arrays(
        cls, task: SequenceTask, arrays: dict[str, np.ndarray], info: dict[str, Any]
    ) -> NextTokenPolicy:
        """``cls(task, info, **arrays)``."""
        return cls(task, info, **arrays)


def env_instance(env_id: str, env_kwargs: dict[str, Any]) -> str:
    """One text per env instance: the id and its canonical kwargs (defaults and rendering
    dropped, :func:`ntp_envs.canonical_env_kwargs`) as JSON."""
    from ntp_envs import canonical_env_kwargs

    kwargs = json.loads(json.dumps(env_kwargs, sort_keys=True, default=repr))  # tuples: lists
    return f"{env_id!r} {json.dumps(canonical_env_kwargs(env_id, kwargs), sort_keys=True)}"


def load_policy(path: str | os.PathLike[str], task: SequenceTask | None = None) -> FittedPolicy:
    """Load a policy saved by :meth:`FittedPolicy.save` (never unpickles, never imports).

    Without ``task`` the file's env id must be a suite env (its metadata never names code to
    import: a plug-in task's policy needs ``task``); with ``task`` the file's env id and
    canonical kwargs must be the task's. ValueError naming ``path`` otherwise.
    """
    from ntp_envs import make_task, registered_env_ids

    arrays, meta = load_archive(path, "ntp-gym policy", max_bytes=archive.MAX_POLICY_BYTES)
    if meta.get("format") != "ntp-gym-policy/1":
        raise ValueError(f"{path} is not an ntp-gym policy archive")
    kind = meta.get("kind")
    if not isinstance(kind, str) or kind not in _POLICY_KINDS:
        raise ValueError(f"{path}: unknown policy kind {kind!r}; known: {sorted(_POLICY_KINDS)}")
    env_id, env_kwargs, info = meta.get("env_id"), meta.get("env_kwargs"), meta.get("info")
    if not isinstance(env_kwargs, dict) or not isinstance(env_id, str) or not isinstance(
            info, dict | None):
        raise ValueError(f"{path}: corrupt metadata (env_id/env_kwargs/info)")
    if task is None:
        if env_id not in registered_env_ids():
            raise ValueError(f"{path}: its env_id {env_id!r} is not a suite env "
                             f"({', '.join(registered_env_ids())}); a policy file never names "
                             "code to import: give --env (or the task) to build its task")
        try:
            task = make_task(env_id, **env_kwargs)
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{path}: its env kwargs do not build {env_id}: {err}") from None
    elif (fitted := env_instance(env_id, env_kwargs)) != env_instance(task.env_id, task.params):
        raise ValueError(f"{path} was fitted on {fitted}, not on the task given: "
                         f"{env_instance(task.env_id, task.params)}")
    try:
        return _POLICY_KINDS[kind].from_arrays(task, arrays, dict(info or {}))
    except (TypeError, IndexError, KeyError, AttributeError, OverflowError) as err:
        raise ValueError(f"{path}: its arrays do not make a {kind} policy of {env_id} "
                         f"({type(err).__name__}: {err})") from None


class Agent(ABC):
    """A learner: ``fit(task, demonstrations)`` returns a :class:`FittedPolicy`.

    ``demonstrations=None`` asks for a population fit on the exact expert law (infinite
    data); agents raise ValueError where the task makes that impossible.
    """

    name: str = ""
    needs_learner_class = False
    """Whether :meth:`fit` works within the task's learner class (``task.learner_class``)."""

    def check_task(self, task: SequenceTask) -> None:
        """ValueError when this agent cannot fit ``task`` at all (a sweep checks every pair
        before it runs any job)."""
        if self.needs_learner_class and task.learner_class is None:
            raise ValueError(f"{self.name or type(self).__name__} fits within the task's learner "
                             f"class and {task.env_id} has none")

    @abstractmethod
    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> FittedPolicy:
        """Fit to ``demonstrations`` (or the expert law when None)."""


def _jsonable(value: Any) -> Any:
    """``value`` as JSON data: dataclasses as dicts, tuples as lists, numpy scalars as
    numbers, classes and functions as ``module:qualname``; TypeError for anything else."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_")}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}:{value.__qualname__}"
    raise TypeError(f"agent setting of type {type(value).__name__} is not JSON data: {value!r}")


def agent_config(agent: Agent) -> dict[str, Any]:
    """The agent's identity as JSON data: ``{"class": "module:qualname", **settings}`` with
    every public dataclass field (nested configs as dicts). Two agents with equal configs fit
    the same numbers; a sweep keys its rows by it."""
    cls = type(agent)
    config: dict[str, Any] = {"class": f"{cls.__module__}:{cls.__qualname__}"}
    if dataclasses.is_dataclass(agent):
        fields = [f.name for f in dataclasses.fields(agent)]
    else:
        fields = sorted(vars(agent))
    for name in fields:
        if not name.startswith("_"):
            config[name] = _jsonable(getattr(agent, name))
    return config


def demonstration_arrays(
    task: SequenceTask, demonstrations: Demonstrations
) -> tuple[IntArray, IntArray]:
    """``(prompts, tokens)`` of a demonstration set, checked against ``task``."""
    prompts = np.asarray(demonstrations.prompts)
    tokens = np.asarray(demonstrations.tokens)
    if tokens.ndim != 2 or tokens.shape[1] != task.horizon:
        raise ValueError(
            f"demonstrations.tokens must have shape (n, {task.horizon}), got {tokens.shape}"
        )
    if tokens.shape[0] < 1:
        raise ValueError("demonstrations must hold at least one sequence")
    if tokens.min() < 0 or tokens.max() >= task.vocab_size:
        raise ValueError(f"demonstrations.tokens must lie in [0, {task.vocab_size - 1}]")
    length = task.prompts.prompt_length
    if prompts.shape != (tokens.shape[0], length) or not np.issubdtype(prompts.dtype, np.integer):
        raise ValueError(f"demonstrations.prompts must be integers of shape "
                         f"({tokens.shape[0]}, {length}), got {prompts.dtype} {prompts.shape}")
    if prompts.size and (prompts.min() < 0 or prompts.max() >= task.prompt_vocab_size):
        raise ValueError(f"demonstrations.prompts must lie in [0, {task.prompt_vocab_size - 1}]")
    if isinstance(task.prompts, FinitePrompts):
        task.prompts.index_of(prompts)  # ValueError for a prompt outside the support
    check_same_env = getattr(demonstrations, "check_same_env", None)  # raw arrays: no env
    if check_same_env is not None:
        check_same_env(task)  # ValueError for another env's (or instance's) sequences
    return prompts, tokens
