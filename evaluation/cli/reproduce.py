"""``ntp-bench reproduce``: run every experiment of a profile, check every claim, write a report.

    ntp-bench reproduce [--profile cpu|full|gpu] [--out DIR] [--only NAME,...] [--workers N]
    ntp-bench reproduce --profile cpu --update-readme    # then publish to docs/results/cpu/
    ntp-bench reproduce --render-only                    # re-render README/docs blocks only

All experiments' jobs go through one store (``DIR/results.sqlite``, resumable: rerun the same
command after an interruption). Per experiment, ``DIR/<name>/`` receives its tables (CSV)
and figures; ``DIR/claims.json`` and ``DIR/report.md`` hold the verdicts. The exit status is
1 if a claim that ran fails (or a job failed), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from agents import make_agent
from evaluation.bench.backends import MAX_WORKERS, make_backend
from evaluation.bench.store import ResultStore
from evaluation.bench.sweep import SweepConfig, run_sweep, sweep_jobs
from evaluation.experiments import EXPERIMENTS, PROFILES, Experiment, experiment_names
from evaluation.experiments.claims import ClaimResult
from evaluation.experiments.report import (
    RunRecord,
    load_record,
    print_analysis,
    print_claims,
    render_report,
    save_record,
    update_blocks,
    write_atomic,
)

__all__ = ["DOCS_RESULTS", "add_parser", "available_configs", "exit_status", "publish",
           "render_docs", "reproduce", "run"]

DOCS_RESULTS = Path("docs/results")
DOC_FILES = ("README.md", "docs/*.md")


def add_parser(subparsers: Any) -> None:
    """Add the ``reproduce`` command to ``ntp-bench``'s subparsers."""
    parser = subparsers.add_parser("reproduce", help="run the experiments, check every claim")
    parser.add_argument("--profile", default="cpu",
                        help=f"one of {', '.join(PROFILES)} (default cpu)")
    parser.add_argument("--out", help="output folder (default runs/reproduce-<profile>)")
    parser.add_argument("--only", help=f"comma-separated experiments: "
                                       f"{', '.join(experiment_names())}")
    parser.add_argument("--workers", help="local worker processes (default min(cores, jobs))")
    parser.add_argument("--update-readme", action="store_true",
                        help="copy the report, tables and figures to docs/results/<profile>/ "
                             "and rewrite the generated blocks of README.md and docs/*.md")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: rewrite the generated blocks from docs/results/")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _usage(message: str) -> ValueError:
    from evaluation.cli.common import UsageError

    return UsageError(message)


def _selected(args: argparse.Namespace) -> list[Experiment]:
    if args.profile not in PROFILES:
        raise _usage(f"--profile must be one of {list(PROFILES)}, got {args.profile!r}")
    if args.only is None:
        return list(EXPERIMENTS.values())
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if not names:
        raise _usage("--only must name at least one experiment")
    for name in names:
        if name not in EXPERIMENTS:
            raise _usage(f"--only: unknown experiment {name!r}; accepted: {experiment_names()}")
    if args.update_readme:
        raise _usage("--update-readme publishes a whole profile: drop --only")
    return [e for e in EXPERIMENTS.values() if e.name in names]


def _agent_available(name: str, cache: dict[str, str | None]) -> str | None:
    """None when ``name`` builds an agent here, else why not."""
    if name not in cache:
        try:
            make_agent(name)
            cache[name] = None
        except (ValueError, ImportError) as err:
            cache[name] = str(err).splitlines()[0]
    return cache[name]


def available_configs(configs: list[SweepConfig], missing: dict[str, str]
                      ) -> list[SweepConfig]:
    """``configs`` without the agents that cannot be built here (recorded in ``missing``)."""
    cache: dict[str, str | None] = {}
    out = []
    for config in configs:
        agents = []
        for agent in config.agents:
            why = _agent_available(agent, cache)
            if why is None:
                agents.append(agent)
            else:
                missing[agent] = why
        if agents:
            out.append(replace(config, agents=tuple(agents)))
    return out


def _not_run_reason(experiment: Experiment, profile: str, selected: bool,
                    missing: dict[str, str]) -> str:
    if not selected:
        return "excluded by --only"
    if not experiment.configs(profile):
        return f"not in profile {profile}"
    if missing:
        return f"agents not available: {', '.join(sorted(missing))}"
    return ""


def reproduce(experiments: list[Experiment], profile: str, out: Path, *, workers: int | None,
              progress: bool, console: Console,
              registry: Mapping[str, Experiment] = EXPERIMENTS) -> RunRecord:
    """Run ``experiments`` (their ``profile`` configs) into ``out``, analyse them and evaluate
    every claim of every experiment of ``registry`` (``not run`` for those not selected);
    writes ``claims.json`` and ``report.md``."""
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    start = time.perf_counter()
    chosen = {e.name for e in experiments}
    plans: dict[str, tuple[list[SweepConfig], dict[str, str]]] = {}
    for experiment in registry.values():
        missing: dict[str, str] = {}
        configs = (available_configs(experiment.configs(profile), missing)
                   if experiment.name in chosen else [])
        plans[experiment.name] = (configs, missing)
    keys = {name: [job.key for job in sweep_jobs(configs)] for name, (configs, _) in
            plans.items()}
    order = sorted(experiments, key=lambda e: -e.rank)  # neural fits first: they take longest
    everything = [c for e in order for c in plans[e.name][0]]
    out.mkdir(parents=True, exist_ok=True)
    with ResultStore(out / "results.sqlite") as store:
        done = store.done_keys()
        fresh = len({k for ks in keys.values() for k in ks} - done)
        if everything:
            with make_backend("local", workers, None) as backend:
                run_sweep(everything, store, backend=backend, progress=progress)
        frames = {name: store.results(k) for name, k in keys.items() if k}
        store.export_csv(out / "results.csv", [k for ks in keys.values() for k in ks])
    record_experiments: dict[str, dict[str, Any]] = {}
    results: list[ClaimResult] = []
    for experiment in registry.values():
        frame = frames.get(experiment.name)
        configs, missing = plans[experiment.name]
        if frame is not None and not frame.empty:
            folder = out / experiment.name
            console.print(f"[bold]{experiment.title}[/bold] ({experiment.name})")
            tables, figures = _analyse(experiment, frame, folder, console)
            record_experiments[experiment.name] = {
                "title": experiment.title, "jobs": len(frame),
                "failed": int((frame["status"] != "ok").sum()),
                "skipped_agents": sorted(missing),
                "tables": [{"name": t.name, "caption": t.caption} for t in tables],
                "figures": [{"name": f.name, "caption": f.caption} for f in figures]}
        reason = _not_run_reason(experiment, profile, experiment.name in chosen, missing)
        for claim in experiment.claims:
            ran = frame is not None and not frame.empty
            result = claim.evaluate(frame if ran else None, experiment.name, reason)
            if result.verdict == "not run" and missing and reason not in result.note:
                result = ClaimResult(**{**result.__dict__, "note": f"{result.note}; {reason}"})
            results.append(result)
    union = (pd.concat(list(frames.values())).drop_duplicates("job_key") if frames
             else pd.DataFrame(columns=["status", "fit_seconds", "eval_seconds"]))
    jobs, failed = len(union), int((union["status"] != "ok").sum())  # a job shared by two
    busy = sum(float(pd.to_numeric(union[c], errors="coerce").fillna(0.0).sum())  # experiments
               for c in ("fit_seconds", "eval_seconds"))  # counts once
    results.sort(key=lambda c: (len(c.claim), c.claim))  # R1, R2, ..., R10
    record = RunRecord(profile, started, round(time.perf_counter() - start, 1), jobs, failed,
                       record_experiments, tuple(results), fresh, round(busy, 1))
    save_record(record, out)
    about = {e.name: (e.title, e.about) for e in registry.values()}
    write_atomic(out / "report.md", render_report(record, out, about))
    return record


def _analyse(experiment: Experiment, frame: pd.DataFrame, folder: Path, console: Console
             ) -> tuple[list[Any], list[Any]]:
    """Print the experiment's analysis and write its tables as CSV next to its figures."""
    tables, figures = print_analysis(console, experiment.analyse, frame, folder)
    for table in tables:
        path = folder / f"{table.name}.csv"
        tmp = path.with_name(f".{path.name}.tmp")
        table.frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    return tables, figures


def publish(out: Path, profile: str, docs_results: Path = DOCS_RESULTS) -> Path:
    """Copy ``claims.json``, ``report.md`` and the table CSVs and PNGs of the experiments that
    ran from ``out`` to ``docs_results/<profile>/`` (replacing what was there)."""
    target = docs_results / profile
    staging = docs_results / f".{profile}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in ("claims.json", "report.md"):
        shutil.copy2(out / name, staging / name)
    for name in load_record(out).experiments:  # the experiments that ran
        folder = out / name
        for path in sorted(folder.iterdir()):
            if path.suffix in (".csv", ".png") and not path.name.startswith("."):
                (staging / folder.name).mkdir(exist_ok=True)
                shutil.copy2(path, staging / folder.name / path.name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def doc_files(root: Path = Path(".")) -> list[Path]:
    """README.md and docs/*.md under ``root``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render_docs(root: Path = Path("."), docs_results: Path | None = None) -> list[Path]:
    """Rewrite the generated blocks of README.md and docs/*.md from ``docs/results``; the
    files that changed (every block is rendered before any file is written)."""
    results = docs_results or root / DOCS_RESULTS
    rendered = {}
    for path in doc_files(root):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            new = update_blocks(text, results, path.parent)
            if new != text:
                rendered[path] = new
    for path, text in rendered.items():
        write_atomic(path, text)
    return list(rendered)


def run(args: argparse.Namespace, console: Console) -> int:
    """Carry out ``ntp-bench reproduce``; the exit status (module doc)."""
    if args.render_only:
        if args.only or args.update_readme:
            raise _usage("--render-only runs nothing: drop --only / --update-readme")
        changed = render_docs()
        console.print(f"rewrote {', '.join(map(str, changed)) or 'nothing (up to date)'}")
        return 0
    experiments = _selected(args)
    workers = None
    if args.workers is not None:
        try:
            workers = int(args.workers)
        except ValueError:
            workers = 0
        if not 1 <= workers <= MAX_WORKERS:
            raise _usage(f"--workers must be an integer in [1, {MAX_WORKERS}], "
                         f"got {args.workers!r}")
    out = Path(args.out or f"runs/reproduce-{args.profile}")
    record = reproduce(experiments, args.profile, out, workers=workers,
                       progress=not args.quiet, console=console)
    print_claims(console, record.claims)
    console.print(f"wrote {out / 'report.md'}, {out / 'claims.json'} ({record.jobs} jobs, "
                  f"{record.seconds / 60:.1f} minutes)")
    if args.update_readme:
        target = publish(out, args.profile)
        changed = render_docs()
        console.print(f"published {target}; rewrote {', '.join(map(str, changed)) or 'nothing'}")
    fails = [c.claim for c in record.claims if c.verdict == "fails" and c.gated]
    if fails:
        console.print(f"[red]claims that fail: {', '.join(fails)}[/red]")
    return exit_status(record)


def exit_status(record: RunRecord) -> int:
    """1 when a gated claim that ran fails or a job failed, else 0."""
    return 1 if record.failed or any(c.verdict == "fails" and c.gated
                                     for c in record.claims) else 0
