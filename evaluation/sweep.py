"""Horizon sweeps: fit every agent at every horizon and seed, score it against the expert.

A job is keyed by ``(env_id, env_kwargs, horizon, agent, seed, n_train)`` (``n_train = 0``
means a population fit on the exact expert law). Jobs are independent: each builds its
task, draws its own demonstrations from ``seed``, fits, and is scored exactly where the
structure allows (Monte Carlo with a standard error otherwise). The best-in-class value is
computed once per ``(env_id, env_kwargs, horizon)`` and cached in the store.

The job functions :func:`compute_oracle` and :func:`run_job` are pure and picklable, so a
backend (:mod:`evaluation.backends`: this process, a local process pool or Ray) can run
them anywhere; :func:`run_sweep` is the driver: it alone writes to the store, one row per
job as each finishes, so a sweep killed at any point resumes where it stopped.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agents import make_agent
from evaluation.accuracy import task_metrics
from evaluation.backends import Backend, SerialBackend
from evaluation.divergences import divergence
from evaluation.oracle import best_in_class
from evaluation.store import ResultStore, canonical_json, job_key, oracle_key
from experts.demonstrations import collect_demonstrations
from ntp_envs import make_task

MIN_BEST_IN_CLASS = 1e-12  # below this the class is (numerically) well-specified: no C_apx
ORACLE_FIELDS = ("best_in_class_hellinger2", "oracle_method", "oracle_agreement")


@dataclass(frozen=True)
class SweepConfig:
    """A grid of jobs: env x horizons x agents x seeds at one training-set size."""

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    agents: tuple[str, ...] = ("logloss",)
    horizons: tuple[int, ...] = (4, 8, 16, 32, 64)
    seeds: int = 3
    n_train: int = 2000
    population: bool = False
    eval_samples: int = 100_000
    oracle_starts: int = 16

    def jobs(self) -> list[Job]:
        n_train = 0 if self.population else self.n_train
        return [
            Job(self.env_id, self.env_kwargs, h, agent, seed, n_train, self.eval_samples,
                self.oracle_starts)
            for h in self.horizons for agent in self.agents for seed in range(self.seeds)
        ]


@dataclass(frozen=True)
class Job:
    """One fit-and-score: the unit a backend runs (picklable)."""

    env_id: str
    env_kwargs: dict[str, Any]
    horizon: int
    agent: str
    seed: int
    n_train: int
    eval_samples: int = 100_000
    oracle_starts: int = 16

    @property
    def key(self) -> str:
        return job_key(self.env_id, self.env_kwargs, self.horizon, self.agent, self.seed,
                       self.n_train)

    @property
    def oracle_key(self) -> str:
        return oracle_key(self.env_id, self.env_kwargs, self.horizon)

    def task(self):  # noqa: ANN201 - SequenceTask
        return make_task(self.env_id, **{**self.env_kwargs, "horizon": self.horizon})


def compute_oracle(job: Job) -> dict[str, Any]:
    """The best-in-class row for ``job``'s ``(env, kwargs, horizon)`` (NaN when undefined)."""
    task = job.task()
    row: dict[str, Any] = {
        "oracle_key": job.oracle_key, "env_id": job.env_id,
        "env_kwargs": canonical_json(job.env_kwargs), "horizon": job.horizon,
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


def _job_row(job: Job, oracle: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_key": job.key, "env_id": job.env_id, "env_kwargs": canonical_json(job.env_kwargs),
        "horizon": job.horizon, "agent": job.agent, "seed": job.seed, "n_train": job.n_train,
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
        start = time.perf_counter()
        policy = make_agent(job.agent).fit(task, demos, rng)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        result = divergence(task.expert, policy, task.prompts, n_samples=job.eval_samples,
                            rng=np.random.default_rng([job.seed, job.horizon, 1]))
        metrics = task_metrics(task, policy, job.eval_samples,  # answer accuracy, if any
                               np.random.default_rng([job.seed, job.horizon, 2]))
        eval_seconds = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - recorded in the store, the sweep goes on
        return failed_row(job, err, "fit", oracle)
    c_apx = approximation_ratio(result.hellinger2, oracle["best_in_class_hellinger2"])
    return {
        **_job_row(job, oracle), "status": "ok", "error": None,
        "hellinger2": result.hellinger2, "hellinger2_stderr": result.hellinger2_stderr,
        "kl": result.kl, "kl_stderr": result.kl_stderr, "tv": result.tv,
        "tv_stderr": result.tv_stderr, "c_apx": c_apx, "eval_method": result.method,
        "fit_seconds": fit_seconds, "eval_seconds": eval_seconds,
        "agent_info": canonical_json(getattr(policy, "info", {})), **metrics,
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
) -> list[str]:
    """Run the jobs of ``configs`` not yet finished in ``store``; returns all their keys.

    Jobs already stored with status ``ok`` are skipped; failed ones are retried. Best-in-class
    values missing from the store are computed first (in parallel), and each job is
    submitted as soon as its value is known. ``backend`` defaults to this process
    (:class:`~evaluation.backends.SerialBackend`); a given backend is left open.
    """
    jobs = sweep_jobs(configs)
    done = store.done_keys()
    pending = [job for job in jobs if job.key not in done]
    groups: dict[str, list[Job]] = {}
    for job in pending:
        groups.setdefault(job.oracle_key, []).append(job)
    own = backend is None
    runner = SerialBackend() if backend is None else backend
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="jobs",
               disable=not progress, unit="job")

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
    """Where a sweep writes: store, CSV and plot."""
    out = Path(out)
    return {"store": out / "results.sqlite", "csv": out / "results.csv",
            "plot": out / "divergence_vs_horizon.png"}
