"""Horizon sweeps: fit every agent at every horizon and seed, score it against the expert.

A job is keyed by ``(env_id, env_kwargs, horizon, agent, seed, n_train)`` (``n_train = 0``
means a population fit on the exact expert law). Jobs are independent: each builds its
task, draws its own demonstrations from ``seed``, fits, and is scored exactly where the
structure allows (Monte Carlo with a standard error otherwise). The best-in-class value is
computed once per ``(env_id, env_kwargs, horizon)`` and cached in the store.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agents import make_agent
from evaluation.divergences import divergence
from evaluation.oracle import best_in_class
from evaluation.store import ResultStore, canonical_json, job_key, oracle_key
from experts.demonstrations import collect_demonstrations
from ntp_envs import make_task

MIN_BEST_IN_CLASS = 1e-12  # below this the class is (numerically) well-specified: no C_apx


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
            Job(self.env_id, self.env_kwargs, h, agent, seed, n_train, self.eval_samples)
            for h in self.horizons for agent in self.agents for seed in range(self.seeds)
        ]


@dataclass(frozen=True)
class Job:
    """One fit-and-score: the unit a backend runs."""

    env_id: str
    env_kwargs: dict[str, Any]
    horizon: int
    agent: str
    seed: int
    n_train: int
    eval_samples: int = 100_000

    @property
    def key(self) -> str:
        return job_key(self.env_id, self.env_kwargs, self.horizon, self.agent, self.seed,
                       self.n_train)

    @property
    def oracle_key(self) -> str:
        return oracle_key(self.env_id, self.env_kwargs, self.horizon)

    def task(self):  # noqa: ANN201 - SequenceTask
        return make_task(self.env_id, **{**self.env_kwargs, "horizon": self.horizon})


def compute_oracle(job: Job, num_random_starts: int = 16) -> dict[str, Any]:
    """The best-in-class row for ``job``'s ``(env, kwargs, horizon)`` (NaN when undefined)."""
    task = job.task()
    row: dict[str, Any] = {
        "oracle_key": job.oracle_key, "env_id": job.env_id,
        "env_kwargs": canonical_json(job.env_kwargs), "horizon": job.horizon,
    }
    if task.learner_class is None:
        return {**row, "best_in_class_hellinger2": math.nan, "oracle_method": "none",
                "oracle_agreement": math.nan, "oracle_seconds": 0.0, "local_optima": "[]"}
    result = best_in_class(task, num_random_starts=num_random_starts, seed=0)
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


def run_job(job: Job, oracle: dict[str, Any]) -> dict[str, Any]:
    """Fit ``job.agent`` and score it; never raises (a failure becomes a ``failed`` row)."""
    row: dict[str, Any] = {
        "job_key": job.key, "env_id": job.env_id, "env_kwargs": canonical_json(job.env_kwargs),
        "horizon": job.horizon, "agent": job.agent, "seed": job.seed, "n_train": job.n_train,
        "best_in_class_hellinger2": oracle["best_in_class_hellinger2"],
        "oracle_method": oracle["oracle_method"], "oracle_agreement": oracle["oracle_agreement"],
    }
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
        eval_seconds = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - recorded in the store, the sweep goes on
        return {**row, "status": "failed",
                "error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"}
    c_apx = approximation_ratio(result.hellinger2, oracle["best_in_class_hellinger2"])
    return {
        **row, "status": "ok", "error": None,
        "hellinger2": result.hellinger2, "hellinger2_stderr": result.hellinger2_stderr,
        "kl": result.kl, "kl_stderr": result.kl_stderr, "tv": result.tv,
        "tv_stderr": result.tv_stderr, "c_apx": c_apx, "eval_method": result.method,
        "fit_seconds": fit_seconds, "eval_seconds": eval_seconds,
        "agent_info": canonical_json(getattr(policy, "info", {})),
    }


def run_sweep(
    config: SweepConfig,
    store: ResultStore,
    *,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[str]:
    """Run the jobs of ``config`` not yet in ``store``; returns the keys of all its jobs."""
    jobs = config.jobs()
    done = store.done_keys()
    pending = [job for job in jobs if job.key not in done]
    oracles: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="jobs",
               disable=not progress, unit="job")
    for job in pending:
        if job.oracle_key not in oracles:
            cached = store.get_oracle(job.oracle_key)
            if cached is None:
                bar.set_postfix_str(f"best-in-class H={job.horizon}")
                cached = compute_oracle(job, config.oracle_starts)
                store.put_oracle(cached)
            oracles[job.oracle_key] = cached
        bar.set_postfix_str(f"{job.agent} H={job.horizon} seed={job.seed}")
        row = run_job(job, oracles[job.oracle_key])
        store.put_result(row)
        if on_row is not None:
            on_row(row)
        bar.update(1)
    bar.close()
    return [job.key for job in jobs]


def output_paths(out: str | Path) -> dict[str, Path]:
    """Where a sweep writes: store, CSV and plot."""
    out = Path(out)
    return {"store": out / "results.sqlite", "csv": out / "results.csv",
            "plot": out / "divergence_vs_horizon.png"}
