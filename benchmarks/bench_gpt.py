"""Speed of the path-star GPT agents (``agents/gpt.py``) on this machine's CPU.

Times ``--steps`` training steps of the registered CPU configuration (``CPU_CONFIG``) on
``PathStar-v0`` defaults, single-threaded (what every sweep backend runs) and with all
cores, and the inference throughput of the measurements (sequences scored per second).
Extrapolates the full fit (``CPU_CONFIG.steps`` steps) and prints the load average, since
on a shared machine the time per step grows with the other processes' load.
Run: ``python benchmarks/bench_gpt.py [--steps N]``.
Target: a full fit in ~10 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np
import torch

from agents.gpt import CPU_CONFIG, GPTAgent
from evaluation.metrics.pathstar import pathstar_metrics
from experts import collect_demonstrations
from ntp_envs import make_task

TARGET_FIT_S = 600.0


def time_steps(steps: int, threads: int, demos, task) -> float:  # noqa: ANN001
    """Seconds per training step with ``threads`` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        config = replace(CPU_CONFIG, steps=steps)
        start = time.perf_counter()
        GPTAgent("tf", config).fit(task, demos, np.random.default_rng(0))
        return (time.perf_counter() - start) / steps
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps timed")
    args = parser.parse_args()
    task = make_task("ntp_envs/PathStar-v0")
    demos = collect_demonstrations(task, 20_000, 0)
    cores = os.cpu_count() or 1
    print(f"load average before: {os.getloadavg()}, cores: {cores}, config: {CPU_CONFIG}")
    for threads in sorted({1, cores}):
        per_step = time_steps(args.steps, threads, demos, task)
        full = per_step * CPU_CONFIG.steps
        print(f"{threads} thread(s): {per_step * 1e3:.1f} ms/step -> full fit "
              f"({CPU_CONFIG.steps} steps) {full / 60:.1f} min "
              f"({'within' if full <= TARGET_FIT_S else 'over'} the {TARGET_FIT_S / 60:.0f}-min "
              f"target); load average now {os.getloadavg()[0]:.1f}")
    policy = GPTAgent("tf", replace(CPU_CONFIG, steps=1)).fit(task, demos,
                                                             np.random.default_rng(0))
    torch.set_num_threads(1)
    start = time.perf_counter()
    pathstar_metrics(task, policy, n_prompts=5000, rng=0)
    seconds = time.perf_counter() - start
    print(f"measurements (1 thread): 5000 graphs in {seconds:.1f} s "
          f"({5000 * 2 * task.horizon / seconds:.0f} prefixes scored per second)")


if __name__ == "__main__":
    main()
