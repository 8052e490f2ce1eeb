"""``ntp-bench``: run sweeps, export and plot results.

    ntp-bench sweep --env ntp_envs/ARLinear-v0 --env-kwargs '{"misspecification": 0.5}' \\
        --agents logloss --horizons 4,8,16,32,64,128,256 --seeds 3 --n-train 2000 --out runs/demo
    ntp-bench sweep --preset quick --backend local --workers 2
    ntp-bench sweep --preset quick --backend ray --address auto
    ntp-bench sweep --env ntp_envs/FiniteClassBarrier-v0 --env-kwargs '{"event_prob": 1e-3}' \
        --env-grid '{"bias": [0.002, 0.01, 0.05]}' --agents logloss,rho --population
    ntp-bench report --out runs/demo

With --preset, --seeds, --n-train, --population, --eval-samples and --oracle-starts override
that setting in every config of the preset (--n-train: its finite-sample configs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pandas as pd
from rich.console import Console
from rich.table import Table

from agents import CHUNK_FAMILIES, agent_names, make_agent
from agents.base import DEVICE_ENV
from agents.plugins import check_agent
from agents.threads import available_cores
from evaluation import evaluate_cli, reproduce_cli
from evaluation.analysis import growth_exponent, summarise, worst_case
from evaluation.backends import BACKENDS, MAX_WORKERS, Backend, make_backend
from evaluation.experiments.cot import report_answers
from evaluation.experiments.pathstar import report_pathstar
from evaluation.plots import family_title, plot_divergence_vs_horizon, plot_worst_case
from evaluation.presets import PRESETS, preset_names
from evaluation.store import KEY_COLUMNS, SETTING_COLUMNS, ResultStore, write_atomically
from evaluation.sweep import SweepConfig, check_env_grid, output_paths, run_sweep, sweep_jobs
from ntp_envs import SequenceTask, env_defaults, make_task, registered_env_ids
from ntp_envs.plugins import check_task, split_specs

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


class UsageError(ValueError):
    """A bad command line: reported in one line, exit status 2, nothing written."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (``main`` reports them)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(message)


def _positive_int(name: str, text: str, high: int | None = None) -> int:
    span = "a positive integer" if high is None else f"an integer in [1, {high}]"
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be {span}, got {text!r}") from None
    if value < 1 or (high is not None and value > high):
        raise UsageError(f"{name} must be {span}, got {text!r}")
    return value


def _count(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"{name} must be an integer >= 0, got {text!r}")
    return value


def _default(name: str) -> object:
    """``SweepConfig``'s default of setting ``name`` (the value when its flag is not given)."""
    return SweepConfig.__dataclass_fields__[name].default


def _settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line (flags left out are not in it)."""
    given: dict[str, object] = {}
    if args.seeds is not None:
        given["seeds"] = _positive_int("--seeds", args.seeds, MAX_SEEDS)
    if args.n_train is not None:
        n_train = _count("--n-train", args.n_train)
        given["n_train" if n_train else "population"] = n_train or True  # 0: population
    if args.population:
        given["population"] = True
    if args.eval_samples is not None:
        given["eval_samples"] = _positive_int("--eval-samples", args.eval_samples,
                                              MAX_EVAL_SAMPLES)
    if args.oracle_starts is not None:
        given["oracle_starts"] = _positive_int("--oracle-starts", args.oracle_starts,
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
    horizons = tuple(_positive_int("--horizons (each H >= 1)", p) for p in parts)
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
    if "horizon" in value:
        raise UsageError("--env-kwargs must not set horizon: use --horizons")
    return value


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
    if args.horizons is not None:
        horizons = _parse_horizons(args.horizons)
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
    workers = None if args.workers is None else _positive_int("--workers", args.workers,
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
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
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


def _env_name(row: pd.Series) -> str:
    kwargs = "" if row["env_kwargs"] in ("{}", "") else f" {row['env_kwargs']}"
    return f"{row['env_id'].removeprefix('ntp_envs/')}{kwargs}"


def _data(row: pd.Series) -> str:
    return "population" if row["n_train"] == 0 else f"n={row['n_train']}"


def _settings_key(frame: pd.DataFrame) -> pd.Series:
    return frame[SETTING_COLUMNS].apply(lambda row: " ".join(map(str, row)), axis=1)


def _settings_labels(summary: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """A short label per set of settings (``eval_samples``, ``oracle_starts``,
    ``agent_config``; keyed by :func:`_settings_key`) and a legend, both empty when every
    row has the same settings."""
    keys = _settings_key(summary)
    distinct = list(dict.fromkeys(keys))
    if not summary.duplicated(["env_id", "env_kwargs", "agent", "n_train", "horizon"]).any():
        return {}, []  # one set of settings per agent and horizon: nothing to tell apart
    number = {key: f"#{i + 1}" for i, key in enumerate(distinct)}
    legend = []
    for key in distinct:
        row = summary.loc[keys[keys == key].index[0]]
        legend.append(f"settings {number[key]}: " + ", ".join(
            f"{name}={'NULL (older store)' if pd.isna(row[name]) else row[name]}"
            for name in SETTING_COLUMNS))
    return number, legend


def _print_summary(console: Console, frame: pd.DataFrame) -> None:
    summary = summarise(frame)
    if summary.empty:
        console.print("no successful jobs to summarise")
        return
    order = ["env_id", "env_kwargs", "agent", "n_train", *SETTING_COLUMNS, "horizon"]
    summary = summary.sort_values(order, kind="stable").reset_index(drop=True)
    number, legend = _settings_labels(summary)
    labels = _settings_key(summary).map(number)
    table = Table(title="D_H^2 and C_apx vs horizon (mean ± s.e. over seeds)")
    columns = ["env", "agent", "data", *(["settings"] if legend else []), "H", "seeds", "D_H^2",
               "best in class", "C_apx"]
    for column in columns:
        table.add_column(column, justify="right")
    for index, row in summary.iterrows():
        def cell(name: str, digits: int, row: pd.Series = row, se: bool = True) -> str:
            mean = row[f"{name}_mean"]
            if pd.isna(mean):
                return "-"
            spread = f" ± {row[f'{name}_se']:.2g}" if se and row["seeds"] > 1 else ""
            return f"{mean:.{digits}g}{spread}"

        settings = [labels[index]] if legend else []
        table.add_row(_env_name(row), row["agent"], _data(row), *settings, str(row["horizon"]),
                      str(row["seeds"]), cell("hellinger2", 4),
                      cell("best_in_class_hellinger2", 4, se=False), cell("c_apx", 3))
    console.print(table)
    for line in legend:
        console.print(line, highlight=False, markup=False)
    growth = growth_exponent(summary)
    growth_labels = _settings_key(growth).map(number) if legend else None
    for index, row in growth.iterrows():
        if pd.isna(row["slope"]):  # fewer than two horizons with a finite C_apx: no slope
            continue
        se = "" if pd.isna(row["slope_se"]) else f" ± {row['slope_se']:.2g}"
        label = f", settings {growth_labels[index]}" if legend else ""
        console.print(f"growth exponent of C_apx in H, {_env_name(row)}, {row['agent']} "
                      f"({_data(row)}{label}): {row['slope']:.3f}{se} over {row['horizons']} "
                      "horizons", highlight=False)


def _attained(row: pd.Series) -> str:
    """The grid kwargs of the instance attaining the worst case, e.g. ``bias=0.05``."""
    grid = json.loads(row["family"])["grid"]
    kwargs = {**env_defaults(row["env_id"]), **json.loads(row["worst_kwargs"])}
    return ", ".join(f"{name}={kwargs.get(name)}" for name in grid)


def _print_worst_case(console: Console, worst: pd.DataFrame) -> None:
    for (env_id, family), frame in worst.groupby(["env_id", "family"], sort=False):
        table = Table(title=f"worst case of C_apx over the family {family_title(env_id, family)}"
                            " (seed mean per instance)")
        for column in ("agent", "data", "H", "instances", "worst C_apx", "attained at",
                       "mean C_apx"):
            table.add_column(column, justify="right")
        for _, row in frame.iterrows():
            table.add_row(row["agent"], _data(row), str(row["horizon"]), str(row["instances"]),
                          f"{row['worst_c_apx']:.4g}", _attained(row),
                          f"{row['mean_c_apx']:.4g}")
        console.print(table)


def _writable(out: Path) -> bool:
    """Whether this process may write in ``out`` (and to its store, if there is one)."""
    store = output_paths(out)["store"]
    return os.access(out, os.W_OK | os.X_OK) and (not store.exists()
                                                 or os.access(store, os.W_OK))


def _write_outputs(out: Path, frame: pd.DataFrame, console: Console) -> list[Path]:
    """Write the CSV (every stored row), the plots and the worst-case table, each with the
    store's permission bits; return them."""
    paths = output_paths(out)
    with ResultStore(paths["store"], create=False) as store:
        mode = store.file_mode()
        written = [store.export_csv(paths["csv"])]
    ok = frame[frame["status"] == "ok"]
    if not ok.empty:
        written.append(plot_divergence_vs_horizon(summarise(ok), paths["plot"], mode))
    worst = worst_case(frame)
    worst = worst[worst["family"].map(lambda f: bool(json.loads(f)["grid"]))]
    if not worst.empty:
        written.append(write_atomically(paths["worst_case"], lambda tmp: worst.to_csv(
            tmp, index=False, float_format="%.17g"), mode=mode))
        written += plot_worst_case(worst, paths["worst_plot"], paths["chunk_plot"], mode)
        _print_worst_case(console, worst)
    return written


def _report(out: Path, keys: list[str] | None, console: Console) -> int:
    """Export and summarise every row of the store in ``out``; the exit status counts the
    failed and unconverged rows among ``keys`` (this sweep's jobs; all rows when None)."""
    paths = output_paths(out)
    readonly = not _writable(out)
    with ResultStore(paths["store"], readonly=readonly, create=False) as store:
        frame = store.results()
    if frame.empty:
        console.print(f"no results in {paths['store']}")
        return 1
    _print_summary(console, frame)
    if readonly:
        console.print(f"{out} is read-only: summary read from {paths['store']}; no CSV, "
                      "table or plot written (copy the folder to write them)", highlight=False)
    else:
        written = _write_outputs(out, frame, console)
        ok = frame[frame["status"] == "ok"]
        report_answers(ok, out, console)  # tasks with a right answer (CoT): accuracy, plot
        report_pathstar(ok, out, console)  # PathStar: Clever-Hans table, OUT/pathstar.png
        mine = "" if keys is None else f", {frame['job_key'].isin(set(keys)).sum()} from " \
                                       "this sweep"
        console.print(f"wrote {paths['store']} ({len(frame)} row(s){mine}), "
                      f"{', '.join(str(p) for p in written)}", highlight=False)
    ours = frame if keys is None else frame[frame["job_key"].isin(set(keys))]
    bad = ours[ours["status"] != "ok"].sort_values(KEY_COLUMNS, kind="stable")
    failed, unconverged = bad[bad["status"] == "failed"], bad[bad["status"] == "unconverged"]
    if not failed.empty:
        console.print(f"[red]{len(failed)} job(s) failed[/red] (rerun the same command to retry "
                      "them; finished jobs are kept):", highlight=False)
    if not unconverged.empty:
        console.print(f"[red]{len(unconverged)} job(s) unconverged[/red]: the solver reported "
                      "converged: false; their numbers are stored with status unconverged, left "
                      "out of the summary and not retried (the fit is deterministic: change the "
                      "agent's settings):", highlight=False)
    for _, row in bad.iterrows():
        first = str(row["error"]).splitlines()[0] if row["error"] else ""
        console.print(f"  {row['status']}: {_env_name(row)} {row['agent']} H={row['horizon']} "
                      f"seed={row['seed']} {_data(row)}: {first}", highlight=False, markup=False,
                      soft_wrap=True)
    return 1 if not bad.empty else 0


@dataclass(frozen=True)
class SweepPlan:
    """A checked ``ntp-bench sweep`` command: what runs, where, and the output folder."""

    configs: list[SweepConfig]
    backend: Backend
    out: Path
    progress: bool
    device: str | None = None
    recompute: bool = False


def _check_out(text: str | None, preset: str | None) -> Path:
    """The output folder of a sweep, checked before anything is written: UsageError when it
    is empty, a file, or not writable."""
    if text is not None and not text.strip():
        raise UsageError(f"--out must name a folder, got {text!r}")
    out = Path(text if text is not None else f"runs/{preset}" if preset else "runs/sweep")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable ({existing} is read-only or not a "
                         "folder)")
    store = output_paths(out)["store"]
    if store.exists() and not os.access(store, os.W_OK):
        raise UsageError(f"--out {out}: its store {store} is read-only")
    return out


def _plan(args: argparse.Namespace) -> SweepPlan:
    configs = _configs_from_args(args)
    tokens = _validate(configs)
    device = None
    if args.device is not None:
        from agents.gpt import parse_device

        try:
            device = str(parse_device(args.device.strip(), "--device"))
        except ValueError as err:
            raise UsageError(str(err)) from None
        configs = [dataclasses.replace(config, device=device) for config in configs]
    out = _check_out(args.out, args.preset)
    backend = _backend_from_args(args)
    _check_memory(tokens, _parallel_jobs(args, len(sweep_jobs(configs))))
    return SweepPlan(configs, backend, out, not args.quiet, device, args.recompute)


def plan_sweep(argv: Sequence[str]) -> SweepPlan:
    """Check the arguments of ``ntp-bench sweep`` (``argv`` without ``sweep``): UsageError
    (a ValueError) naming the flag for any bad one. Starts no worker and writes nothing."""
    return _plan(build_parser().parse_args(["sweep", *argv]))


def build_parser() -> argparse.ArgumentParser:
    """The ``ntp-bench`` argument parser."""
    parser = _Parser(prog="ntp-bench", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="fit agents across horizons and score them")
    sweep.add_argument("--preset", help=f"a named sweep: {', '.join(preset_names())}")
    sweep.add_argument("--env", help="env id, e.g. ntp_envs/ARLinear-v0, or a plug-in task "
                                     "(entry point, module:name, Gymnasium id)")
    sweep.add_argument("--env-kwargs", help="JSON object of env kwargs (not horizon)")
    sweep.add_argument("--env-grid", help="JSON object kwarg -> list of values: sweep the family "
                       "of their cartesian product (merged over --env-kwargs); the report adds "
                       "the worst case over it (OUT/worst_case.csv)")
    named = [n for n in agent_names() if n.split(":")[0] not in CHUNK_FAMILIES]
    chunked = ", ".join(f"{family}:K" for family in CHUNK_FAMILIES)
    sweep.add_argument("--agents", help=f"comma-separated: {', '.join(named)}; {chunked} "
                       "(chunk size K >= 1, at most H); rho-select:a+b+...; plug-ins "
                       "module:name[?key=value&...]")
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
    report = sub.add_parser("report", help="re-export CSV, plot and summary from a store")
    report.add_argument("--out", required=True, help="folder holding results.sqlite")
    evaluate_cli.add_parser(sub)
    reproduce_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ntp-bench``; returns the exit status."""
    console = Console(width=max(110, Console().width))
    try:
        args = build_parser().parse_args(argv)
        if args.command == "evaluate":
            return evaluate_cli.run(args, console)
        if args.command == "reproduce":
            return reproduce_cli.run(args, console)
        if args.command == "report":
            out = Path(args.out)
            if not args.out.strip() or not output_paths(out)["store"].is_file():
                raise UsageError(f"--out: no results.sqlite in {args.out!r}")
            return _report(out, None, console)
        plan = _plan(args)
        if plan.device is not None:  # inherited by the worker processes
            os.environ[DEVICE_ENV] = plan.device
        try:
            with ResultStore(output_paths(plan.out)["store"]) as store, plan.backend:
                keys = run_sweep(plan.configs, store, backend=plan.backend,
                                 progress=plan.progress, recompute=plan.recompute)
            return _report(plan.out, keys, console)
        except (OSError, sqlite3.OperationalError) as err:  # e.g. the disk is full
            raise ValueError(f"--out {plan.out}: {getattr(err, 'strerror', None) or err}") \
                from None
    except KeyboardInterrupt:
        print("ntp-bench: interrupted; finished jobs are stored, rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    except UsageError as err:
        print(f"ntp-bench: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"ntp-bench: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
