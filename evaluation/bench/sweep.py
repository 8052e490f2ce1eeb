"""Horizon sweeps: fit every agent at every horizon and seed, score it against the expert.

A job is keyed by every setting that can change its numbers: ``(env_id, env_kwargs, horizon,
agent, seed, n_train, eval_samples, oracle_starts, agent_config)`` (``n_train = 0`` means a
population fit on the exact expert law; ``env_kwargs`` canonical: defaults and rendering-only
kwargs dropped, ``1.0`` written ``1``; ``agent_config`` the agent's identity,
:func:`agents.plugins.agent_identity`: its own settings, the code that fits it (the ntp-gym
version; a plug-in's source file by its hash) and, for agents that run on a torch device, the
``--device``). ``run_sweep(..., recompute=True)`` fits and scores stored jobs again.
Jobs are independent: each builds its task, draws its own demonstrations from ``seed``, fits,
and is scored exactly where the structure allows (Monte Carlo with a standard error
otherwise). The best-in-class value is computed once per ``(env_id, env_kwargs, horizon,
oracle_starts)`` and cached in the store.

A config sweeps one instance, or a *family*: ``env_grid`` maps kwargs to lists of values and
the sweep runs their cartesian product merged over ``env_kwargs``, each instance its own rows,
each row carrying the family (``family`` column) so the report can take the worst case over
it (:func:`evaluation.bench.analysis.worst_case`).

Before a fitted policy is scored, its output is checked on a probe batch
(:func:`check_policy_output`: shapes, no NaN, rows log-normalised, per-token and sequence scores
consistent); a policy that fails is stored ``failed`` with an error ``output: ...`` naming the
check, never with numbers.

A fit whose solver reports ``converged: false`` (anywhere in its ``agent_info``) is stored with
status ``unconverged``: its numbers are kept and shown apart, and it is not retried (the fit is
deterministic; change the agent's settings to get a new row).

The job functions :func:`compute_oracle` and :func:`run_job` are pure and picklable, so a
backend (:mod:`evaluation.bench.backends`: this process, a local process pool or Ray) can run
them anywhere; :func:`run_sweep` is the driver: it alone writes to the store, one row per
job as each finishes, so a sweep killed at any point resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from scipy.special import logsumexp

from agents import make_agent
from agents.base import DEVICE_ENV
from agents.plugins import agent_identity
from evaluation.bench.backends import Backend, SerialBackend
from evaluation.bench.progress import progress_bar
from evaluation.bench.store import ResultStore, canonical_json, job_key, oracle_key
from evaluation.divergences import divergence
from evaluation.metrics.accuracy import task_metrics
from evaluation.oracle import best_in_class
from experts.demonstrations import collect_demonstrations
from ntp_envs import canonical_env_kwargs, make_task
from ntp_envs.type_aliases import FloatArray, IntArray

MAX_GRID_INSTANCES = 4096
"""Most instances one ``env_grid`` may expand to."""
MIN_BEST_IN_CLASS = 1e-12  # below this the class is (numerically) well-specified: no C_apx
PROBE_PROMPTS = 8
"""Prompts of the probe batch on which :func:`check_policy_output` checks a policy."""
LOGPROB_TOLERANCE = 1e-5
"""Largest ``|logsumexp|`` of a next-token row accepted (float32 models: about 1e-7)."""
CONSISTENCY_TOLERANCE = 1e-4
"""Relative and absolute tolerance between a policy's per-token and next-token scores."""
ORACLE_FIELDS = ("best_in_class_hellinger2", "oracle_method", "oracle_agreement")


def check_env_grid(env_kwargs: dict[str, Any], env_grid: dict[str, Any]) -> None:
    """ValueError unless ``env_grid`` maps kwargs (not ``horizon``, none of ``env_kwargs``)
    to non-empty lists of values, at most :data:`MAX_GRID_INSTANCES` instances in all."""
    if not isinstance(env_grid, dict):
        raise ValueError(f"must be a JSON object of kwarg -> list of values, got "
                         f"{type(env_grid).__name__}")
    size = 1
    for name, values in env_grid.items():
        if name == "horizon":
            raise ValueError("must not hold horizon: use --horizons")
        if name in env_kwargs:
            raise ValueError(f"kwarg {name!r} is also in --env-kwargs: give it in one of them")
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"kwarg {name!r} must map to a non-empty list of values, got "
                             f"{values!r}")
        size *= len(values)
    if size > MAX_GRID_INSTANCES:
        raise ValueError(f"must expand to at most {MAX_GRID_INSTANCES} instances, got {size}")


def family_json(env_id: str, env_kwargs: dict[str, Any],
                env_grid: dict[str, Sequence[Any]] | None = None) -> str:
    """A family of instances as canonical JSON ``{"grid": {kwarg: [values]}, "kwargs": {...}}``
    (``kwargs`` canonical; an empty grid is the single instance ``kwargs``)."""
    grid = {k: list(v) for k, v in sorted((env_grid or {}).items())}
    return canonical_json({"grid": grid, "kwargs": canonical_env_kwargs(env_id, env_kwargs)})


@dataclass(frozen=True)
class SweepConfig:
    """A grid of jobs: instances x horizons x agents x seeds at one training-set size.

    The instances are ``env_kwargs`` alone, or, with ``env_grid`` (kwarg -> values), the
    cartesian product of the grid merged over ``env_kwargs``. An empty ``horizons`` runs each
    instance at its own horizon (envs whose horizon is set by other kwargs: ParityCoT,
    MultiplicationCoT, PathStar).
    """

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    agents: tuple[str, ...] = ("logloss",)
    horizons: tuple[int, ...] = (4, 8, 16, 32, 64)
    seeds: int = 3
    n_train: int = 2000
    population: bool = False
    eval_samples: int = 100_000
    oracle_starts: int = 16
    env_grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    device: str = ""
    """Torch device of the agents that use one (``""``: ``$NTP_GYM_DEVICE``, else cpu)."""

    def instances(self) -> list[dict[str, Any]]:
        """The env kwargs of every instance swept, in grid order (ValueError for a bad grid)."""
        check_env_grid(self.env_kwargs, self.env_grid)
        names = list(self.env_grid)
        return [{**self.env_kwargs, **dict(zip(names, values, strict=True))}
                for values in itertools.product(*(self.env_grid[n] for n in names))]

    @property
    def family(self) -> str:
        """The family swept: :func:`family_json` of ``env_kwargs`` and ``env_grid``."""
        return family_json(self.env_id, self.env_kwargs, self.env_grid)

    def instance_horizons(self, kwargs: dict[str, Any]) -> tuple[int, ...]:
        """``horizons``, or the instance's own horizon when ``horizons`` is empty."""
        return self.horizons or (make_task(self.env_id, **kwargs).horizon,)

    def jobs(self) -> list[Job]:
        n_train = 0 if self.population else self.n_train
        family = self.family
        device = job_device(self.device)
        configs = {agent: canonical_json(agent_identity(make_agent(agent), device))
                   for agent in self.agents}
        return [
            Job(self.env_id, kwargs, h, agent, seed, n_train, self.eval_samples,
                self.oracle_starts, configs[agent], family, device)
            for kwargs in self.instances() for h in self.instance_horizons(kwargs)
            for agent in self.agents for seed in range(self.seeds)
        ]


@dataclass(frozen=True)
class Job:
    """One fit-and-score: the unit a backend runs (picklable).

    ``env_kwargs`` is stored canonical (:func:`ntp_envs.canonical_env_kwargs`);
    ``agent_config`` (canonical JSON) defaults to the identity of ``make_agent(agent)`` on
    ``device`` (:func:`agents.plugins.agent_identity`; ``device`` defaults as in
    :class:`SweepConfig`);
    ``family`` defaults to the instance itself.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    horizon: int
    agent: str
    seed: int
    n_train: int
    eval_samples: int = 100_000
    oracle_starts: int = 16
    agent_config: str = ""
    family: str = ""
    device: str = ""

    def __post_init__(self) -> None:
        kwargs = canonical_env_kwargs(self.env_id, self.env_kwargs)
        object.__setattr__(self, "env_kwargs", kwargs)
        object.__setattr__(self, "device", job_device(self.device))
        if not self.agent_config:
            object.__setattr__(self, "agent_config", canonical_json(
                agent_identity(make_agent(self.agent), self.device)))
        if not self.family:
            object.__setattr__(self, "family", family_json(self.env_id, kwargs))

    @property
    def key(self) -> str:
        return job_key(self.env_id, self.env_kwargs, self.horizon, self.agent, self.seed,
                       self.n_train, self.eval_samples, self.oracle_starts,
                       json.loads(self.agent_config))

    @property
    def oracle_key(self) -> str:
        return oracle_key(self.env_id, self.env_kwargs, self.horizon, self.oracle_starts)

    def task(self):  # noqa: ANN201 - SequenceTask
        return make_task(self.env_id, **{**self.env_kwargs, "horizon": self.horizon})


def job_device(device: str = "") -> str:
    """``device``, or ``$NTP_GYM_DEVICE`` when it is empty, or ``cpu``."""
    return device.strip() or os.environ.get(DEVICE_ENV, "").strip() or "cpu"


@contextmanager
def on_device(device: str) -> Iterator[None]:
    """Run the body with ``$NTP_GYM_DEVICE`` set to ``device`` (the agents read it)."""
    before = os.environ.get(DEVICE_ENV)
    os.environ[DEVICE_ENV] = device
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DEVICE_ENV, None)
        else:
            os.environ[DEVICE_ENV] = before


def compute_oracle(job: Job) -> dict[str, Any]:
    """The best-in-class row for ``job``'s ``(env, kwargs, horizon)`` (NaN when undefined)."""
    task = job.task()
    row: dict[str, Any] = {
        "oracle_key": job.oracle_key, "env_id": job.env_id,
        "env_kwargs": canonical_json(job.env_kwargs), "horizon": job.horizon,
        "oracle_starts": job.oracle_starts,
    }
    if task.learner_class is None:
        return {**row, "best_in_class_hellinger2": math.nan, "oracle_method": "none",
                "oracle_agreement": math.nan, "oracle_seconds": 0.0, "local_optima": "[]"}
    result = best_in_class(task, num_random_starts=job.oracle_starts, seed=0)
    return {**row, "best_in_class_hellinger2": result.hellinger2,
            "oracle_method": result.method, "oracle_agreement": result.agreement,
            "oracle_seconds": result.seconds, "local_optima": canonical_json(result.local_optima)}


def approximation_ratio(hellinger2: float, best: float | None) -> float | None:
    """``C_apx = D_H^2 / best``; when the class is well-specified (best below 1e-12) it is 1
    if the fit attains the expert too, and undefined (None) otherwise."""
    if best is None or not np.isfinite(best):
        return None
    if best > MIN_BEST_IN_CLASS:
        return hellinger2 / best
    return 1.0 if hellinger2 <= MIN_BEST_IN_CLASS else None


def unconverged(info: Any) -> bool:
    """Whether ``info`` (an agent's ``info``, nested dicts and lists) says
    ``converged: false`` anywhere."""
    if isinstance(info, dict):
        return info.get("converged") is False or any(unconverged(v) for v in info.values())
    if isinstance(info, list | tuple):
        return any(unconverged(v) for v in info)
    return False


def _job_row(job: Job, oracle: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_key": job.key, "env_id": job.env_id, "env_kwargs": canonical_json(job.env_kwargs),
        "horizon": job.horizon, "agent": job.agent, "seed": job.seed, "n_train": job.n_train,
        "eval_samples": job.eval_samples, "oracle_starts": job.oracle_starts,
        "agent_config": job.agent_config, "family": job.family,
    }
    if oracle is not None:
        row.update({name: oracle[name] for name in ORACLE_FIELDS})
    return row


def failed_row(job: Job, error: BaseException, stage: str = "fit",
               oracle: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``failed`` row of ``job`` for an error raised in ``stage`` (fit or best-in-class)."""
    detail = "".join(traceback.format_exception(error, limit=-3)).rstrip()
    return {**_job_row(job, oracle), "status": "failed",
            "error": f"{stage}: {type(error).__name__}: {error}\n{detail}"}


def run_job(job: Job, oracle: dict[str, Any]) -> dict[str, Any]:
    """Fit ``job.agent`` and score it; never raises (a failure becomes a ``failed`` row)."""
    try:
        task = job.task()
        rng = np.random.default_rng([job.seed, job.horizon])
        demos = None if job.n_train == 0 else collect_demonstrations(task, job.n_train, rng)
        agent = make_agent(job.agent)
        identity = canonical_json(agent_identity(agent, job.device))
        if identity != job.agent_config:
            raise ValueError(f"agent {job.agent!r} here has settings {identity}, the job asks "
                             f"for {job.agent_config} (a worker runs other code than the "
                             "driver)")
        with on_device(job.device):
            start = time.perf_counter()
            policy = agent.fit(task, demos, rng)
            return score_row(job, oracle, task, policy, time.perf_counter() - start,
                             seen=None if demos is None else demos.prompts)
    except PolicyOutputError as err:
        return failed_row(job, err, "output", oracle)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - stored, the sweep goes on
        return failed_row(job, err, "fit", oracle)


class PolicyOutputError(ValueError):
    """A policy's output breaks the sequence-model protocol; the message names the check
    (:func:`check_policy_output`)."""


def _fail(check: str, text: str) -> NoReturn:
    raise PolicyOutputError(f"policy output check {check!r} failed: {text}")


def _call(what: str, method: Any, *args: Any) -> Any:
    """``method(*args)``; any error becomes the ``callable`` check's failure."""
    try:
        return method(*args)
    except Exception as err:  # noqa: BLE001 - any failure of plug-in code is one check
        _fail("callable", f"{what} raised {type(err).__name__}: {err}")


def _numeric(out: Any, shape: tuple[int, ...], what: str) -> FloatArray:
    """``out`` as a float array of ``shape`` without NaN or +inf (checks shape, finite)."""
    try:
        values = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as err:
        _fail("shape", f"{what} returned {type(out).__name__}, not a numeric array ({err})")
    if values.shape != shape:
        _fail("shape", f"{what} returned shape {values.shape}, the protocol asks for {shape}")
    if np.isnan(values).any() or (values == np.inf).any():
        bad = "NaN" if np.isnan(values).any() else "+inf"
        _fail("finite", f"{what} returned {bad} (log-probabilities lie in [-inf, 0])")
    return values


def _check_rows(logp: FloatArray, what: str) -> None:
    """Each row of ``logp`` must be log-probabilities (``exp`` summing to 1)."""
    total = logsumexp(logp, axis=1)
    worst = int(np.argmax(np.abs(total)))
    if abs(total[worst]) > LOGPROB_TOLERANCE:
        looks = ((logp >= 0) & (logp <= 1)).all() and np.allclose(logp.sum(axis=1), 1.0)
        hint = ": the rows look like probabilities, return their logarithms" if looks else ""
        _fail("normalised", f"{what}: a row sums to probability {np.exp(total[worst]):.6g} "
                            f"(logsumexp {total[worst]:.6g}); rows must be log-probabilities "
                            f"whose exponentials sum to 1 within {LOGPROB_TOLERANCE:g}{hint}")


def check_policy_output(task: Any, policy: Any, rng: np.random.Generator) -> None:
    """Check ``policy``'s output on a probe batch of ``task`` before it is scored.

    On :data:`PROBE_PROMPTS` prompts, each with an expert sequence and a sequence of uniformly
    random tokens, prefixes at positions ``0, 1, H // 2, H - 1``: ``vocab_size`` and
    ``horizon`` are the task's, ``next_token_logprobs`` returns a ``(B, V)`` numeric array
    (check ``shape``) without NaN or +inf (``finite``) whose rows are log-probabilities
    within :data:`LOGPROB_TOLERANCE` (``normalised``); ``token_logprobs`` and
    ``sequence_logprob`` (what the evaluators sum) agree with it (``consistent``). A method
    that raises fails ``callable``. :class:`PolicyOutputError` (a ValueError) naming the
    check otherwise."""
    vocab, horizon = task.vocab_size, task.horizon
    have = (getattr(policy, "vocab_size", None), getattr(policy, "horizon", None))
    if have != (vocab, horizon):
        _fail("shape", f"the policy has vocab_size {have[0]} and horizon {have[1]}, the task "
                       f"{task.env_id} has vocab_size {vocab} and horizon {horizon}")
    prompts = np.asarray(task.prompts.sample(PROBE_PROMPTS, rng), dtype=np.int64)
    expert = np.asarray(task.expert.sample(prompts, rng), dtype=np.int64)
    prompts = np.concatenate([prompts, prompts])  # rows: expert sequences, then random ones
    tokens = np.concatenate([expert, rng.integers(0, vocab, size=expert.shape, dtype=np.int64)])
    batch, rows = len(prompts), np.arange(len(prompts))
    picked = {}
    for h in sorted({0, min(1, horizon - 1), horizon // 2, horizon - 1}):
        what = f"next_token_logprobs at position {h} (expert and random prefixes)"
        logp = _numeric(_call(what, policy.next_token_logprobs, prompts, tokens[:, :h]),
                        (batch, vocab), what)
        _check_rows(logp, what)
        picked[h] = logp[rows, tokens[:, h]]
    per_token = _numeric(_call("token_logprobs", policy.token_logprobs, prompts, tokens),
                         (batch, horizon), "token_logprobs")
    for h, expected in picked.items():
        close = np.isclose(per_token[:, h], expected, rtol=CONSISTENCY_TOLERANCE,
                           atol=CONSISTENCY_TOLERANCE)
        if not close.all():
            i = int(np.argmin(close))
            _fail("consistent", f"token_logprobs at position {h} gives {per_token[i, h]:.6g} "
                                f"for probe sequence {i}, next_token_logprobs {expected[i]:.6g}")
    total = _numeric(_call("sequence_logprob", policy.sequence_logprob, prompts, tokens),
                     (batch,), "sequence_logprob")
    summed = per_token.sum(axis=1)
    close = np.isclose(total, summed, rtol=CONSISTENCY_TOLERANCE,
                       atol=CONSISTENCY_TOLERANCE * horizon)
    if not close.all():
        i = int(np.argmin(close))
        _fail("consistent", f"sequence_logprob gives {total[i]:.6g} for probe sequence {i}, "
                            f"the sum of its token_logprobs {summed[i]:.6g}")


def score_row(job: Job, oracle: dict[str, Any], task: Any, policy: Any,
              fit_seconds: float, seen: IntArray | None = None) -> dict[str, Any]:
    """The row of ``policy`` (fitted for ``job`` on ``task``, a SequenceTask) scored against
    the expert; also :func:`evaluation.score.score`'s row. Answer accuracy leaves out the
    training prompts ``seen`` (:func:`evaluation.metrics.accuracy.answer_accuracy`).
    Raises on an evaluation error, and
    :class:`PolicyOutputError` when the policy's output fails :func:`check_policy_output`."""
    start = time.perf_counter()
    check_policy_output(task, policy, np.random.default_rng([job.seed, job.horizon, 3]))
    result = divergence(task.expert, policy, task.prompts, n_samples=job.eval_samples,
                        rng=np.random.default_rng([job.seed, job.horizon, 1]))
    metrics = task_metrics(task, policy, job.eval_samples,  # answer accuracy, if any
                           np.random.default_rng([job.seed, job.horizon, 2]), seen)
    eval_seconds = time.perf_counter() - start
    c_apx = approximation_ratio(result.hellinger2, oracle["best_in_class_hellinger2"])
    info = getattr(policy, "info", {})
    status = "unconverged" if unconverged(info) else "ok"
    return {
        **_job_row(job, oracle), "status": status,
        "error": "fit: the solver reported converged: false (see agent_info)"
                 if status == "unconverged" else None,
        "hellinger2": result.hellinger2, "hellinger2_stderr": result.hellinger2_stderr,
        "kl": result.kl, "kl_stderr": result.kl_stderr, "tv": result.tv,
        "tv_stderr": result.tv_stderr, "c_apx": c_apx, "eval_method": result.method,
        "fit_seconds": fit_seconds, "eval_seconds": eval_seconds,
        "agent_info": canonical_json(info), **metrics,
    }


def sweep_jobs(configs: SweepConfig | Sequence[SweepConfig]) -> list[Job]:
    """The distinct jobs of one or more configs, in grid order (first occurrence wins)."""
    configs = [configs] if isinstance(configs, SweepConfig) else list(configs)
    unique: dict[str, Job] = {}
    for config in configs:
        for job in config.jobs():
            unique.setdefault(job.key, job)
    return list(unique.values())


def run_sweep(
    configs: SweepConfig | Sequence[SweepConfig],
    store: ResultStore,
    *,
    backend: Backend | None = None,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    recompute: bool = False,
) -> list[str]:
    """Run the jobs of ``configs`` not yet finished in ``store``; returns all their keys.

    Jobs already stored with status ``ok`` or ``unconverged`` are skipped (with
    ``recompute``, run again: their rows are replaced); failed ones are retried. Best-in-class
    values missing from the store are computed first (in parallel), and each job is
    submitted as soon as its value is known. ``backend`` defaults to this process
    (:class:`~evaluation.bench.backends.SerialBackend`); a given backend is left open.
    """
    jobs = sweep_jobs(configs)
    done = set() if recompute else store.done_keys()
    pending = [job for job in jobs if job.key not in done]
    groups: dict[str, list[Job]] = {}
    for job in pending:
        groups.setdefault(job.oracle_key, []).append(job)
    own = backend is None
    runner = SerialBackend() if backend is None else backend
    bar = progress_bar(len(jobs), len(jobs) - len(pending), "jobs", progress)

    def record(row: dict[str, Any]) -> None:
        store.put_result(row)
        if on_row is not None:
            on_row(row)
        bar.update(1)

    try:
        if pending:
            runner.start(len(pending))
        running: dict[Any, tuple[str, Any]] = {}
        cached = {key: store.get_oracle(key) for key in groups}
        for key, group in groups.items():  # best-in-class searches first: jobs wait on them
            if cached[key] is None:
                running[runner.submit(compute_oracle, group[0])] = ("oracle", key)
        for key, group in groups.items():
            if cached[key] is not None:
                for job in group:
                    running[runner.submit(run_job, job, cached[key])] = ("job", job)
        while running:
            for handle, value, error in runner.wait(list(running)):
                kind, item = running.pop(handle)
                if kind == "job":
                    record(value if error is None else failed_row(item, error, "fit"))
                elif error is not None:  # no best-in-class value: its jobs fail, retried later
                    for job in groups[item]:
                        record(failed_row(job, error, "best-in-class"))
                else:
                    store.put_oracle(value)
                    for job in groups[item]:
                        running[runner.submit(run_job, job, value)] = ("job", job)
    finally:
        bar.close()
        if own:
            runner.close()
    return [job.key for job in jobs]


def output_paths(out: str | Path) -> dict[str, Path]:
    """Where a sweep writes: store, CSV, plot, and the worst case over families (CSV, plots)."""
    out = Path(out)
    return {"store": out / "results.sqlite", "csv": out / "results.csv",
            "plot": out / "divergence_vs_horizon.png", "worst_case": out / "worst_case.csv",
            "worst_plot": out / "worst_case_vs_horizon.png",
            "chunk_plot": out / "worst_case_vs_chunk.png"}
