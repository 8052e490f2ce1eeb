"""Expert demonstrations: batched collection, imitation conversion, and ``.npz`` storage."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from imitation.data import rollout as imitation_rollout
from imitation.data.types import TrajectoryWithRew, Transitions

from ntp_envs import make_task, registered_env_ids
from ntp_envs.archive import load_archive, save_archive
from ntp_envs.base import encode_observations
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray
from ntp_envs.validation import check_int

if TYPE_CHECKING:
    import datasets

FORMAT = "ntp-gym/demonstrations"
FORMAT_VERSION = 1
ARRAY_FIELDS = ("prompts", "tokens", "expert_logprobs")
HF_FORMAT = "ntp-gym/demonstrations-hf"
HF_COLUMNS = ("prompt", "completion", "prompt_ids", "completion_ids", "expert_logprobs")
CHUNK_ROWS = 16384
# what numpy/zipfile raise on damaged archives (ValueError covers pickle and header errors)
def _frozen(name: str, value: Any, kind: str) -> np.ndarray:
    """``value`` as a read-only 2-D int64/float64 array; ValueError naming ``name`` otherwise."""
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if kind == "int":
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
    else:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64, copy=False)
    view = arr.view()
    view.flags.writeable = False
    return view


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with numpy scalars/arrays turned into plain Python values."""
    try:
        return json.loads(json.dumps(params, default=_to_builtin, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"task params must be JSON-serialisable: {err}") from None


@dataclass(frozen=True, eq=False)  # arrays: compare fields explicitly
class Demonstrations:
    """``n`` expert sequences of one env: prompts ``(n, L)``, tokens and log-probs ``(n, H)``.

    ``expert_logprobs[i, h] = log pi*(tokens[i, h] | prompts[i], tokens[i, :h])``; the env is
    ``gymnasium.make(env_id, **env_kwargs)`` and tokens lie in ``[0, vocab_size)``.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    prompts: IntArray
    tokens: IntArray
    expert_logprobs: FloatArray
    vocab_size: int

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ValueError(f"env_id must be a non-empty string, got {self.env_id!r}")
        if not isinstance(self.env_kwargs, dict) or not all(
            isinstance(k, str) for k in self.env_kwargs
        ):
            raise ValueError(f"env_kwargs must be a dict with str keys, got {self.env_kwargs!r}")
        try:
            kwargs = json.loads(json.dumps(self.env_kwargs, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise ValueError(f"env_kwargs must be JSON-serialisable: {err}") from None
        vocab = check_int("vocab_size", self.vocab_size, 1)
        prompts = _frozen("prompts", self.prompts, "int")
        tokens = _frozen("tokens", self.tokens, "int")
        logp = _frozen("expert_logprobs", self.expert_logprobs, "float")
        n = prompts.shape[0]
        if n < 1:
            raise ValueError(f"prompts must hold n >= 1 rows, got shape {prompts.shape}")
        if tokens.shape[0] != n or tokens.shape[1] < 1:
            raise ValueError(f"tokens must have shape ({n}, H >= 1), got {tokens.shape}")
        if logp.shape != tokens.shape:
            raise ValueError(
                f"expert_logprobs must have the shape of tokens {tokens.shape}, got {logp.shape}"
            )
        if tokens.min() < 0 or tokens.max() >= vocab:
            raise ValueError(
                f"tokens must lie in [0, {vocab - 1}] (vocab_size {vocab}), "
                f"got values in [{tokens.min()}, {tokens.max()}]"
            )
        if np.isnan(logp).any() or logp.max() > 1e-9:
            raise ValueError("expert_logprobs must be log-probabilities (<= 0, no NaN)")
        if np.isneginf(logp).any():
            raise ValueError("expert_logprobs must be finite: every demonstrated token has "
                             "positive probability under the expert")
        for name, value in [("env_kwargs", kwargs), ("vocab_size", vocab), ("prompts", prompts),
                            ("tokens", tokens), ("expert_logprobs", logp)]:
            object.__setattr__(self, name, value)

    @property
    def num_sequences(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.tokens.shape[1])

    def __len__(self) -> int:
        return self.num_sequences

    def task(self) -> SequenceTask:
        """The task these demonstrations come from (rebuilt from ``env_id``/``env_kwargs``)."""
        task = getattr(self, "_task", None) or make_task(self.env_id, **self.env_kwargs)
        if (task.horizon, task.vocab_size, task.prompts.prompt_length) != (
            self.horizon, self.vocab_size, self.prompts.shape[1]
        ):
            raise ValueError(
                f"task {self.env_id} (H={task.horizon}, V={task.vocab_size}, "
                f"L={task.prompts.prompt_length}) does not match the demonstrations "
                f"(H={self.horizon}, V={self.vocab_size}, L={self.prompts.shape[1]})"
            )
        object.__setattr__(self, "_task", task)
        return task

    def check_same_env(self, task: SequenceTask) -> None:
        """ValueError unless these demonstrations come from ``task``'s env with its kwargs
        (compared as full parameter sets, so omitted defaults match)."""
        if getattr(self, "_task", None) is task:
            return
        if self.env_id != task.env_id:
            raise ValueError(f"demonstrations come from env {self.env_id}, not the task's "
                             f"{task.env_id}: fit on demonstrations of the task's own env")
        theirs = _jsonable(task.params)
        ours = self.env_kwargs
        if ours != theirs and self.env_id in registered_env_ids():
            ours = _jsonable(self.task().params)  # the full parameters the kwargs give
        differ = sorted(k for k in ours.keys() | theirs.keys()
                        if k not in ours or k not in theirs or ours[k] != theirs[k])
        if differ:
            raise ValueError(
                f"demonstrations of {self.env_id} come from another instance than the task: "
                f"{ {k: ours.get(k) for k in differ} } vs the task's "
                f"{ {k: theirs.get(k) for k in differ} }; fit on demonstrations of the same "
                "env kwargs")

    def subset(self, index: IntArray | slice) -> Demonstrations:
        """The sequences selected by ``index`` (same env and metadata)."""
        index = np.arange(self.num_sequences)[index]
        if index.size == 0:
            raise ValueError("a subset must keep at least one sequence")
        return Demonstrations(env_id=self.env_id, env_kwargs=self.env_kwargs,
                              prompts=self.prompts[index], tokens=self.tokens[index],
                              expert_logprobs=self.expert_logprobs[index],
                              vocab_size=self.vocab_size)

    def sequence_logprobs(self) -> FloatArray:
        """Expert sequence log-likelihoods ``(n,)`` (prompt law excluded)."""
        return self.expert_logprobs.sum(axis=1)

    def observations(self, task: SequenceTask | None = None) -> IntArray:
        """Env observations ``(n, H + 1, D)`` before each token and after the last one."""
        task = self.task() if task is None else task
        return np.stack(
            [encode_observations(task, self.prompts, self.tokens[:, :h])
             for h in range(self.horizon + 1)],
            axis=1,
        )

    def to_trajectories(self, task: SequenceTask | None = None) -> list[TrajectoryWithRew]:
        """One imitation trajectory per sequence: rewards are the expert token log-probs."""
        obs = self.observations(task)
        return [
            TrajectoryWithRew(obs=obs[i], acts=self.tokens[i].copy(), infos=None, terminal=True,
                              rews=self.expert_logprobs[i].copy())
            for i in range(self.num_sequences)
        ]

    def to_transitions(self, task: SequenceTask | None = None) -> Transitions:
        """All ``n * H`` (obs, act, next_obs, done) transitions, as imitation flattens them."""
        return imitation_rollout.flatten_trajectories(self.to_trajectories(task))

    def save(self, path: str | os.PathLike[str], *, compress: bool = False) -> None:
        """Write one ``.npz`` (arrays + JSON metadata) atomically to ``path`` (used as given)."""
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "vocab_size": self.vocab_size,
        }
        arrays = {name: getattr(self, name) for name in ARRAY_FIELDS}
        save_archive(path, arrays, meta, compress=compress)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Demonstrations:
        """Read a file written by :meth:`save`; ValueError if it is not a valid one: also when
        its env id is not registered, its env kwargs do not build the env, the env's horizon,
        vocabulary or prompt length differ from the arrays', or a log-probability is not
        finite."""
        what = "demonstrations file"
        arrays, meta = load_archive(path, what)
        problem = None
        if meta.get("format") != FORMAT:
            problem = f"metadata format must be {FORMAT!r}"
        elif meta.get("version") != FORMAT_VERSION:
            problem = f"metadata version must be {FORMAT_VERSION}, got {meta.get('version')!r}"
        elif {"env_id", "env_kwargs", "vocab_size"} - set(meta):
            problem = f"metadata lacks {sorted({'env_id', 'env_kwargs', 'vocab_size'} - set(meta))}"
        elif set(ARRAY_FIELDS) - set(arrays):
            problem = f"missing entries {sorted(set(ARRAY_FIELDS) - set(arrays))}"
        elif meta["env_id"] not in registered_env_ids():
            problem = f"env_id must be one of {registered_env_ids()}, got {meta['env_id']!r}"
        if problem:
            raise ValueError(f"{os.fspath(path)} is not a valid {what}: {problem}")
        try:
            demos = cls(env_id=meta["env_id"], env_kwargs=meta["env_kwargs"],
                        vocab_size=meta["vocab_size"], **{k: arrays[k] for k in ARRAY_FIELDS})
            demos.task()  # the env kwargs build the env, and its shapes are the arrays'
        except ValueError as err:
            raise ValueError(f"{os.fspath(path)} is not a valid {what}: {err}") from None
        return demos

    def to_hf_dataset(self, task: SequenceTask | None = None) -> datasets.Dataset:
        """A ``datasets.Dataset`` in TRL's prompt-completion format: text columns ``prompt``
        and ``completion`` (:mod:`ntp_envs.hf` words), their word ids ``prompt_ids`` and
        ``completion_ids`` (= ``tokens``) and ``expert_logprobs``; the env id, kwargs and
        vocabulary size are JSON in ``info.description``."""
        import datasets

        from ntp_envs.hf import text_view

        task = self.task() if task is None else task
        self.check_same_env(task)
        view = text_view(task)
        meta = {"format": HF_FORMAT, "version": FORMAT_VERSION, "env_id": self.env_id,
                "env_kwargs": self.env_kwargs, "vocab_size": self.vocab_size}
        features = datasets.Features({
            "prompt": datasets.Value("string"),
            "completion": datasets.Value("string"),
            "prompt_ids": datasets.List(datasets.Value("int64")),
            "completion_ids": datasets.List(datasets.Value("int64")),
            "expert_logprobs": datasets.List(datasets.Value("float64")),
        })
        columns = {
            "prompt": [view.prompt_text(p) for p in self.prompts],
            "completion": [view.completion_text(t) for t in self.tokens],
            "prompt_ids": view.prompt_ids(self.prompts).tolist(),
            "completion_ids": self.tokens.tolist(),
            "expert_logprobs": self.expert_logprobs.tolist(),
        }
        info = datasets.DatasetInfo(description=json.dumps(meta, sort_keys=True),
                                    features=features)
        return datasets.Dataset.from_dict(columns, info=info)

    @classmethod
    def from_hf_dataset(cls, ds: datasets.Dataset, task: SequenceTask) -> Demonstrations:
        """Inverse of :meth:`to_hf_dataset` for demonstrations of ``task``; ValueError if
        ``ds`` is not a valid one: a column is missing or ragged, a text is not its ids'
        text, or an array fails the checks :meth:`load` applies."""
        from ntp_envs.hf import text_view

        what = "demonstrations dataset"
        names = getattr(ds, "column_names", None)
        if not isinstance(names, list):
            raise ValueError(f"ds must be a datasets.Dataset, got {type(ds).__name__}")
        missing = sorted(set(HF_COLUMNS) - set(names))
        if missing:
            raise ValueError(f"ds is not a valid {what}: missing columns {missing}")
        try:
            meta = json.loads(ds.info.description or "{}")
        except (TypeError, ValueError):
            meta = {}
        kwargs = _jsonable(task.params)
        if isinstance(meta, dict) and meta.get("format") == HF_FORMAT:
            if meta.get("env_id") != task.env_id:
                raise ValueError(f"ds is not a valid {what} of {task.env_id}: it holds "
                                 f"demonstrations of {meta.get('env_id')!r}")
            kwargs = meta.get("env_kwargs", kwargs)
        view = text_view(task)
        try:
            prompt_ids = _hf_rows(ds, "prompt_ids", task.prompts.prompt_length)
            tokens = _hf_rows(ds, "completion_ids", task.horizon)
            logp = _hf_rows(ds, "expert_logprobs", task.horizon)
            demos = cls(env_id=task.env_id, env_kwargs=kwargs, prompts=view.prompts_of_ids(
                prompt_ids), tokens=tokens, expert_logprobs=logp, vocab_size=task.vocab_size)
            demos.check_same_env(task)
            for i, (prompt, completion) in enumerate(zip(list(ds["prompt"]),
                                                         list(ds["completion"]), strict=True)):
                if (prompt != view.prompt_text(demos.prompts[i])
                        or completion != view.completion_text(demos.tokens[i])):
                    raise ValueError(f"row {i}: prompt/completion text is not the text of "
                                     "its prompt_ids/completion_ids")
        except ValueError as err:
            raise ValueError(f"ds is not a valid {what}: {err}") from None
        object.__setattr__(demos, "_task", task)
        return demos


def _hf_rows(ds: datasets.Dataset, column: str, width: int) -> np.ndarray:
    """Column ``column`` of ``ds`` as an ``(n, width)`` array; ValueError if ragged."""
    rows = list(ds[column])
    if not rows or any(not isinstance(r, list) or len(r) != width for r in rows):
        raise ValueError(f"{column} must hold n >= 1 lists of {width} numbers each")
    return np.asarray(rows)


def collect_demonstrations(
    task: SequenceTask, n: int, seed: int | np.random.Generator
) -> Demonstrations:
    """``n`` expert sequences with their token log-probs, sampled in one batch (no env)."""
    n = check_int("n", n, 1)
    rng = np.random.default_rng(seed)
    prompts = np.empty((n, task.prompts.prompt_length), dtype=np.int64)
    tokens = np.empty((n, task.horizon), dtype=np.int64)
    logp = np.empty((n, task.horizon), dtype=np.float64)
    for start in range(0, n, CHUNK_ROWS):  # chunks keep the working set in cache
        rows = slice(start, min(start + CHUNK_ROWS, n))
        prompts[rows], tokens[rows] = task.sample_demonstrations(rows.stop - start, rng)
        logp[rows] = task.expert.token_logprobs(prompts[rows], tokens[rows])
    demos = Demonstrations(env_id=task.env_id, env_kwargs=_jsonable(task.params),
                           prompts=prompts, tokens=tokens, expert_logprobs=logp,
                           vocab_size=task.vocab_size)
    object.__setattr__(demos, "_task", task)  # cache: to_trajectories needs no rebuild
    return demos
