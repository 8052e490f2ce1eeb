"""``ntp-bench sweep``: check a sweep's flags, plan it (configs, backend, memory), run it.

    ntp-bench sweep --env ntp_envs/ARLinear-v0 --env-kwargs '{"misspecification": 0.5}' \\
        --agents logloss --horizons 4,8,16,32,64,128,256 --seeds 3 --n-train 2000 --out runs/demo
    ntp-bench sweep --preset quick --backend local --workers 2
    ntp-bench sweep --preset quick --backend ray --address auto
    ntp-bench sweep --env ntp_envs/FiniteClassBarrier-v0 --env-kwargs '{"event_prob": 1e-3}' \\
        --env-grid '{"bias": [0.002, 0.01, 0.05]}' --agents logloss,rho --population

With --preset, --seeds, --n-train, --population, --eval-samples and --oracle-starts override
that setting in every config of the preset (--n-train: its finite-sample configs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from agents import BUILT_IN, FAMILIES, agent_names, check_agent, make_agent
from agents.base import DEVICE_ENV
from agents.threads import available_cores
from evaluation.bench.backends import BACKENDS, MAX_WORKERS, Backend, make_backend
from evaluation.bench.store import ResultStore
from evaluation.bench.sweep import SweepConfig, check_env_grid, output_paths, run_sweep, sweep_jobs
from evaluation.cli.common import UsageError, check_out_folder, count, positive_int
from evaluation.cli.report import report
from evaluation.experiments.presets import PRESETS, preset_names
from ntp_envs import SequenceTask, env_defaults, make_task, registered_env_ids
from ntp_envs.plugins import check_task, split_specs

__all__ = ["SweepPlan", "add_parser", "available_memory", "job_memory", "plan", "run"]

MAX_HORIZONS = 64
MAX_SEEDS = 10_000
MAX_EVAL_SAMPLES = 10**8
MAX_ORACLE_STARTS = 10_000
MAX_DEMONSTRATION_TOKENS = 2**28
BYTES_PER_DEMONSTRATION_TOKEN = 80
"""Peak memory of a job per demonstration token (n_train x H), measured as peak RSS over a
job's baseline at 4M-16M tokens: 32-41 bytes (logloss, chunk agents), 41-46 (rho), 41-63
(robust; the most at H = 4); the neural agents need more (imitation-bc: about 800 at H = 32)."""
JOB_BASE_BYTES = 2**29
"""Memory of a job before its demonstrations (imports, task): 0.37-0.42 GB measured."""




def _default(name: str) -> object:
    """``SweepConfig``'s default of setting ``name`` (the value when its flag is not given)."""
    return SweepConfig.__dataclass_fields__[name].default


def _settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line (flags left out are not in it)."""
    given: dict[str, object] = {}
    if args.seeds is not None:
        given["seeds"] = positive_int("--seeds", args.seeds, MAX_SEEDS)
    if args.n_train is not None:
        n_train = count("--n-train", args.n_train)
        given["n_train" if n_train else "population"] = n_train or True  # 0: population
    if args.population:
        given["population"] = True
    if args.eval_samples is not None:
        given["eval_samples"] = positive_int("--eval-samples", args.eval_samples,
                                              MAX_EVAL_SAMPLES)
    if args.oracle_starts is not None:
        given["oracle_starts"] = positive_int("--oracle-starts", args.oracle_starts,
                                               MAX_ORACLE_STARTS)
    return given


def _parse_env_grid(text: str, env_kwargs: dict) -> dict[str, tuple]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--env-grid must be a JSON object of kwarg -> list of values: "
                         f"{err}") from None
    try:
        check_env_grid(env_kwargs, value)
    except ValueError as err:
        raise UsageError(f"--env-grid {err}") from None
    return {name: tuple(values) for name, values in value.items()}


def _own_horizon(env_id: str) -> bool:
    """Whether ``env_id`` sets its horizon from its other kwargs (default ``horizon=None``)."""
    defaults = env_defaults(env_id)
    return "horizon" in defaults and defaults["horizon"] is None


def _parse_horizons(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError("--horizons must list at least one horizon, e.g. 4,8,16")
    if len(parts) > MAX_HORIZONS:
        raise UsageError(f"--horizons must list at most {MAX_HORIZONS} values, got {len(parts)}")
    horizons = tuple(positive_int("--horizons (each H >= 1)", p) for p in parts)
    return tuple(sorted(set(horizons)))


def _parse_env_kwargs(text: str) -> dict:
    if not text.strip():
        raise UsageError(f"--env-kwargs must be a JSON object, e.g. '{{\"weight\": 0.1}}' "
                         f"(leave the flag out for the defaults), got {text!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--env-kwargs must be a JSON object: {err}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--env-kwargs must be a JSON object, got {type(value).__name__}")
    return value


def _env_horizons(env_kwargs: dict, horizons: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The sweep's horizons when ``--env-kwargs`` names one (it is removed from the kwargs):
    that horizon, which ``--horizons`` (when given) must equal; ``horizons`` otherwise."""
    if "horizon" not in env_kwargs:
        return horizons
    given = env_kwargs.pop("horizon")
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise UsageError(f"--env-kwargs horizon must be a positive integer, got {given!r}")
    if horizons is not None and horizons != (given,):
        raise UsageError(f"--env-kwargs sets horizon {given} but --horizons lists "
                         f"{','.join(map(str, horizons))}: give the horizons once (--horizons)")
    return (given,)


def _configs_from_args(args: argparse.Namespace) -> list[SweepConfig]:
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise UsageError(f"--preset must be one of {preset_names()}, got {args.preset!r}")
        explicit = [f for f in ("env", "agents", "horizons", "env_kwargs", "env_grid") if
                    getattr(args, f) is not None]
        if explicit:
            raise UsageError(f"--preset cannot be combined with --{explicit[0].replace('_', '-')}")
        return [dataclasses.replace(config, **_settings(args)) for config in PRESETS[args.preset]]
    if args.env is None:
        raise UsageError("give --env (or --preset)")
    try:  # a suite env id, or a plug-in task / agent (agents.plugins, ntp_envs.plugins)
        if args.env not in registered_env_ids():
            check_task(args.env, "--env")
        agents = tuple(split_specs("logloss" if args.agents is None else args.agents, ","))
        for agent in agents:
            check_agent(agent, "--agents")
    except ValueError as err:
        flag = "" if str(err).startswith("--") else "--agents: "  # e.g. chunk:0 from make_agent
        raise UsageError(f"{flag}{err}") from None
    if not agents:
        raise UsageError(f"--agents must name at least one agent (e.g. logloss,robust), got "
                         f"{args.agents!r}")
    env_kwargs = _parse_env_kwargs("{}" if args.env_kwargs is None else args.env_kwargs)
    given = _env_horizons(env_kwargs, None if args.horizons is None else
                          _parse_horizons(args.horizons))
    if given is not None:
        horizons = given
    else:  # ParityCoT, MultiplicationCoT, PathStar: each instance's own horizon
        horizons = () if _own_horizon(args.env) else _default("horizons")
    config = SweepConfig(
        env_id=args.env,
        env_kwargs=env_kwargs,
        agents=agents,
        horizons=horizons,
        env_grid={} if args.env_grid is None else _parse_env_grid(args.env_grid, env_kwargs),
        **_settings(args),
    )
    return [config]


def _backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend named on the command line (UsageError for bad flags)."""
    workers = None if args.workers is None else positive_int("--workers", args.workers,
                                                                MAX_WORKERS)
    if args.address is not None and args.backend != "ray":
        raise UsageError("--address applies to --backend ray only")
    if args.backend == "serial" and workers not in (None, 1):
        raise UsageError("--workers must be 1 with --backend serial")
    if args.backend == "ray" and args.address is not None and workers is not None:
        raise UsageError("--workers sizes a local Ray instance only: drop it with --address")
    try:
        return make_backend(args.backend, workers, args.address)
    except ValueError as err:
        raise UsageError(f"--backend {args.backend}: {err}") from None


def _build(env_id: str, kwargs: dict, horizon: int | None) -> SequenceTask | str:
    """``make_task(env_id, **kwargs, horizon=horizon)``, or why it fails."""
    try:
        return make_task(env_id, **kwargs, **({} if horizon is None else {"horizon": horizon}))
    except (ValueError, TypeError) as err:
        return str(err)


def _stat_field(path: str, name: str) -> int:
    """Field ``name`` of a cgroup ``memory.stat`` file (0 when absent)."""
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


def available_memory() -> int | None:
    """Bytes of memory new processes may still take on this machine: ``MemAvailable``,
    within the cgroup's limit where one is set (less its usage, reclaimable page cache
    excepted); ``None`` where unknown."""
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError):  # no /proc: the other sources
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    for root, limit, usage, cache in (
            ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
             "total_inactive_file")):
        try:
            found.append(int(Path(root, limit).read_text()) - int(Path(root, usage).read_text())
                         + _stat_field(f"{root}/memory.stat", cache))
        except (OSError, ValueError):  # no such cgroup, or no limit ("max")
            continue
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return max(0, min(found))


def job_memory(tokens: int) -> int:
    """Estimated peak bytes of a job fitting on ``tokens`` demonstration tokens."""
    return JOB_BASE_BYTES + BYTES_PER_DEMONSTRATION_TOKEN * tokens


def _parallel_jobs(args: argparse.Namespace, jobs: int) -> int | None:
    """How many jobs run at once on this machine (None: on a Ray cluster elsewhere)."""
    if args.backend == "serial":
        return 1
    if args.backend == "ray" and args.address is not None:
        return None
    workers = None if args.workers is None else int(args.workers)
    return max(1, min(workers or available_cores(), jobs))


def _check_memory(tokens: int, parallel: int | None) -> None:
    """UsageError when ``parallel`` jobs of ``tokens`` demonstration tokens each would not fit
    in this machine's available memory (:func:`job_memory`)."""
    free = available_memory()
    if not tokens or parallel is None or free is None:
        return
    need, share = job_memory(tokens), free // parallel
    if need > share:
        gb = 2**30
        raise UsageError(
            f"--n-train x the largest horizon: a job holds about {need / gb:.1f} GB ({tokens} "
            f"demonstration tokens at ~{BYTES_PER_DEMONSTRATION_TOKEN} bytes, plus "
            f"{JOB_BASE_BYTES / gb:.1f} GB), more than this machine's {free / gb:.1f} GB of "
            f"available memory over {parallel} parallel job(s) ({share / gb:.1f} GB each): "
            f"lower --n-train or --horizons, or run fewer --workers")


def _validate(configs: list[SweepConfig]) -> int:
    """Build every instance's task at every horizon once, so bad kwargs fail before any
    write; check the demonstration tokens and that every agent can fit every task. Returns
    the most demonstration tokens of one job (0 for population fits only)."""
    largest = 0
    for config in configs:
        first = config.horizons[0] if config.horizons else None
        base = _build(config.env_id, config.env_kwargs, first)
        if isinstance(base, str) and not config.env_grid:
            raise UsageError(f"--env-kwargs / --horizons: {base}")
        agents = {name: make_agent(name) for name in config.agents}
        for kwargs in config.instances():
            horizons = []
            for horizon in config.horizons or (None,):
                task = _build(config.env_id, kwargs, horizon)
                if isinstance(task, str):
                    flag = "--env-kwargs / --horizons" if isinstance(base, str) else "--env-grid"
                    instance = json.dumps({k: kwargs[k] for k in config.env_grid})
                    where = f" (instance {instance})" if config.env_grid else ""
                    raise UsageError(f"{flag}{where}: {task}")
                horizons.append(task.horizon)
                for name, agent in agents.items():
                    try:
                        getattr(agent, "check_task", lambda task: None)(task)
                    except ValueError as err:
                        raise UsageError(f"--agents: {name} cannot fit {config.env_id} at H = "
                                         f"{task.horizon}: {err}") from None
            tokens = 0 if config.population else config.n_train * max(horizons)
            largest = max(largest, tokens)
            if tokens > MAX_DEMONSTRATION_TOKENS:
                raise UsageError(f"--n-train x the largest horizon must be <= "
                                 f"{MAX_DEMONSTRATION_TOKENS} demonstration tokens (they are "
                                 f"held in memory), got {tokens}")
    return largest


@dataclass(frozen=True)
class SweepPlan:
    """A checked ``ntp-bench sweep`` command: what runs, where, and the output folder."""

    configs: list[SweepConfig]
    backend: Backend
    out: Path
    progress: bool
    device: str | None = None
    recompute: bool = False


def plan(args: argparse.Namespace) -> SweepPlan:
    """The checked plan of parsed ``sweep`` arguments (UsageError naming the flag)."""
    configs = _configs_from_args(args)
    tokens = _validate(configs)
    device = None
    if args.device is not None:
        from agents.lm_inputs import parse_device

        try:
            device = str(parse_device(args.device.strip(), "--device"))
        except ValueError as err:
            raise UsageError(str(err)) from None
        configs = [dataclasses.replace(config, device=device) for config in configs]
    out = check_out_folder(args.out if args.out is not None else
                           f"runs/{args.preset}" if args.preset else "runs/sweep")
    backend = _backend_from_args(args)
    _check_memory(tokens, _parallel_jobs(args, len(sweep_jobs(configs))))
    return SweepPlan(configs, backend, out, not args.quiet, device, args.recompute)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to ``ntp-bench``'s subparsers."""
    sweep = sub.add_parser("sweep", help="fit agents across horizons and score them",
                           description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("--preset", help=f"a named sweep: {', '.join(preset_names())}")
    sweep.add_argument("--env", help="env id, e.g. ntp_envs/ARLinear-v0, or a plug-in task "
                                     "(entry point, module:name, Gymnasium id)")
    sweep.add_argument("--env-kwargs", help="JSON object of env kwargs (not horizon)")
    sweep.add_argument("--env-grid", help="JSON object kwarg -> list of values: sweep the family "
                       "of their cartesian product (merged over --env-kwargs); the report adds "
                       "the worst case over it (OUT/worst_case.csv)")
    forms = "; ".join(family.form for family in FAMILIES.values())
    installed = [n for n in agent_names() if n not in BUILT_IN and ":" not in n]
    plugins = f"installed plug-ins: {', '.join(installed)}; " if installed else ""
    sweep.add_argument("--agents", help=f"comma-separated: {', '.join(BUILT_IN)}; {forms}; "
                       f"{plugins}plug-ins module:name[?key=value&...] (ntp-bench agents "
                       "lists them)")
    sweep.add_argument("--horizons", help="comma-separated H values, e.g. 4,8,16 (default "
                       "4,8,16,32,64; an env whose horizon is set by its kwargs: its own)")
    override = " (with --preset: overrides every config of the preset)"
    sweep.add_argument("--seeds", help=f"number of seeds (default {_default('seeds')})"
                       + override)
    sweep.add_argument("--n-train", help=f"demonstrations per fit (default "
                       f"{_default('n_train')}; 0: population fit)" + override.replace(
                           "every config", "every finite-sample config"))
    sweep.add_argument("--population", action="store_true",
                       help="fit on the exact expert law (infinite data)" + override)
    sweep.add_argument("--eval-samples", help="Monte Carlo samples where exact evaluation is "
                       f"impossible (default {_default('eval_samples')})" + override)
    sweep.add_argument("--oracle-starts", help="random starts of the best-in-class search "
                       f"(default {_default('oracle_starts')})" + override)
    sweep.add_argument("--out", help="output folder (default runs/<preset> or runs/sweep)")
    sweep.add_argument("--backend", default="local", choices=BACKENDS,
                       help="where jobs run: local (process pool, default), ray, serial "
                            "(this process)")
    sweep.add_argument("--workers", help="parallel workers (local: processes, default "
                                         "min(cores, jobs); ray: CPUs of a local instance)")
    sweep.add_argument("--address", help="Ray cluster address (host:port or auto); "
                                         "default: start a local Ray instance")
    sweep.add_argument("--device", help="torch device of the neural agents (cpu, cuda, cuda:1, "
                                        "mps); default: $NTP_GYM_DEVICE or cpu. Part of the "
                                        "rows' key of the agents that use it (GPT, plug-ins)")
    sweep.add_argument("--recompute", action="store_true",
                       help="fit and score again the jobs already stored under the same key "
                            "(replacing their rows), e.g. after editing a plug-in in place")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.add_argument("--no-report", action="store_true",
                       help="store the rows and print one line: no summary, CSV or plot "
                            "(ntp-bench report --out OUT writes them; e.g. after several sweeps "
                            "into one folder)")
    return sweep


def run(args: argparse.Namespace, console: Console) -> int:
    """Run ``ntp-bench sweep``: plan, run the jobs not yet stored, then report."""
    sweep_plan = plan(args)
    if sweep_plan.device is not None:  # inherited by the worker processes
        os.environ[DEVICE_ENV] = sweep_plan.device
    try:
        with ResultStore(output_paths(sweep_plan.out)["store"]) as store, sweep_plan.backend:
            keys = run_sweep(sweep_plan.configs, store, backend=sweep_plan.backend,
                             progress=sweep_plan.progress, recompute=sweep_plan.recompute)
        return report(sweep_plan.out, keys, console, summary=not args.no_report)
    except (OSError, sqlite3.OperationalError) as err:  # e.g. the disk is full
        raise ValueError(f"--out {sweep_plan.out}: {getattr(err, 'strerror', None) or err}") \
            from None
