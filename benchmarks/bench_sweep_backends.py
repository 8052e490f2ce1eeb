"""Sweep backends: wall time of ``ntp-bench sweep --preset quick`` on 1 vs 2 local workers and
on a local Ray instance, with the speedup ratios.

Each run is the whole command (process start, imports, worker start, the jobs, the report)
into a fresh output folder, so nothing is resumed. The results CSVs of all runs are also
compared byte for byte (timing columns excepted); the run exits 1 if they differ. Run:
``python benchmarks/bench_sweep_backends.py [--preset quick] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evaluation.bench.backends import available_cores
from evaluation.bench.sweep import sweep_jobs
from evaluation.experiments.presets import PRESETS

TIMING_COLUMNS = ("fit_seconds", "eval_seconds")
RUNS = {
    "local, 1 worker": ["--backend", "local", "--workers", "1"],
    "local, 2 workers": ["--backend", "local", "--workers", "2"],
    "ray (local instance, 2 CPUs)": ["--backend", "ray", "--workers", "2"],
}


def without_timings(path: Path) -> str:
    """The CSV text with the wall-clock columns removed."""
    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING_COLUMNS]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[r[i] for i in keep] for r in rows])
    return out.getvalue()


def job_seconds(path: Path) -> float:
    """Sum of the jobs' own fit + evaluation seconds in a results CSV (the work done)."""
    with open(path, newline="") as handle:
        return sum(float(row[name]) for row in csv.DictReader(handle) for name in TIMING_COLUMNS
                   if row[name])


def timed_sweep(preset: str, flags: list[str], out: Path) -> float:
    """Wall seconds of one ``ntp-bench sweep`` command (raises if it fails)."""
    command = [sys.executable, "-m", "evaluation.cli", "sweep", "--preset", preset,
               "--out", str(out), "--quiet", *flags]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--repeats", type=int, default=1, help="runs per backend (median)")
    args = parser.parse_args(argv)

    jobs = len(sweep_jobs(PRESETS[args.preset]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"ntp-bench sweep --preset {args.preset}: {jobs} jobs | {available_cores()} cores | "
          f"load average {load:.1f} at start | python {platform.python_version()}")
    seconds: dict[str, list[float]] = {name: [] for name in RUNS}
    csvs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for repeat in range(args.repeats):
            for name, flags in RUNS.items():
                out = Path(tmp) / f"{repeat}-{len(csvs)}-{flags[1]}-{flags[-1]}"
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                seconds[name].append(timed_sweep(args.preset, flags, out))
                csvs[f"{name} #{repeat}"] = without_timings(out / "results.csv")
                work = job_seconds(out / "results.csv")
                print(f"  {name:30s} run {repeat + 1}: {seconds[name][-1]:7.1f} s wall, "
                      f"{work:6.1f} s inside jobs (fit + eval), load average {load:.1f} "
                      "before", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    base = median["local, 1 worker"]
    print(f"{'backend':30s} {'median wall s':>14s} {'speedup vs 1 worker':>20s}")
    for name, value in median.items():
        print(f"{name:30s} {value:14.1f} {base / value:19.2f}x")
    same = len(set(csvs.values())) == 1
    print(f"results CSVs identical across all runs (timing columns excepted): {same}")
    if not same:
        raise SystemExit("bench_sweep_backends: the backends gave different results")


if __name__ == "__main__":
    main()
