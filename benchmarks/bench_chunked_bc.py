"""ChunkedBC fit and evaluation time against the chunk size K (the compute side of the tradeoff).

For each env (H = 256) and K in 1, 2, 4, 8, 16 (as far as ``V**K <= 65536`` allows), times
the population fit (exact expert law) and a sample fit (``--n-train`` demonstrations), and
the exact chunk-recursion evaluation of the population fit; medians of ``--repeats`` runs.
Also printed: ``V**K``, the parameter count, Newton iterations, D_H^2 and the fit time per
(row x outcome) of the chunk table, which stays roughly flat as ``V**K`` grows 65536-fold
when the solver is vectorised over outcomes (no Python loop over the ``V**K`` outcomes).
Run: ``python benchmarks/bench_chunked_bc.py [--quick] [--repeats R] [--n-train N]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from agents import ChunkedBC
from agents.chunked_bc import chunk_class
from evaluation import divergence
from experts import collect_demonstrations
from ntp_envs import make_task

ENVS = (("ntp_envs/MixtureProduct-v0", {}), ("ntp_envs/ARLinear-v0", {"misspecification": 0.5}),
        ("ntp_envs/FiniteClassBarrier-v0", {}))


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--horizon", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--quick", action="store_true",
                        help="K <= 8 only (skips the slowest, K = 16, fits)")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}, H = {args.horizon}, n = {args.n_train}, "
          f"median of {args.repeats}")
    header = (f"{'env':<20} {'K':>3} {'V^K':>7} {'params':>8} {'pop fit s':>10} {'iters':>5} "
              f"{'ns/(row*out)':>12} {'n fit s':>9} {'eval s':>8} {'D_H^2 pop':>10} "
              f"{'D_H^2 n':>9}")
    print(header)
    for env_id, kwargs in ENVS:
        task = make_task(env_id, horizon=args.horizon, **kwargs)
        demos = collect_demonstrations(task, args.n_train, 0)
        largest = 8 if args.quick else 16
        for k in (1, 2, 4, 8, 16):
            if k > largest or task.vocab_size**k > 2**16:
                continue
            agent = ChunkedBC(k)
            chunks = chunk_class(task, k)
            pop_s, pop = median_seconds(lambda a=agent, t=task: a.fit(t, None), args.repeats)
            fit_s, fit = median_seconds(lambda a=agent, t=task, d=demos: a.fit(t, d),
                                        1 if k == 16 else args.repeats)
            eval_s, pop_d = median_seconds(
                lambda p=pop, t=task: divergence(t.expert, p, t.prompts), args.repeats)
            fit_d = divergence(task.expert, fit, task.prompts)
            cells = (chunks.num_contexts * chunks.num_positions * chunks.num_states
                     * chunks.num_outcomes)
            per_cell = 1e9 * pop_s / cells
            print(f"{env_id.removeprefix('ntp_envs/'):<20} {k:>3} {chunks.num_outcomes:>7} "
                  f"{pop.info['parameters']:>8} {pop_s:>10.4f} {pop.info['iterations']:>5} "
                  f"{per_cell:>12.0f} {fit_s:>9.3f} {eval_s:>8.4f} {pop_d.hellinger2:>10.4g} "
                  f"{fit_d.hellinger2:>9.4g}", flush=True)


if __name__ == "__main__":
    main()
