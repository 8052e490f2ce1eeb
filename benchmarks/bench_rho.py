"""RhoEstimator cost: 100 candidates, n = 5000 sequences, H = 256 (ARLinear, V = 2).

The tournament is O(K^2 n): one (K, n) matrix of exact sequence log-likelihoods, then the
K x K comparisons, vectorised in blocks. Prints the time of each part (median of repeats).

    python benchmarks/bench_rho.py [--candidates 100 --n 5000 --horizon 256 --repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from agents.policies import LinearSoftmaxPolicy
from agents.rho_estimator import rho_select, rho_tournament
from experts import collect_demonstrations
from ntp_envs import make_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--horizon", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    task = make_task("ntp_envs/ARLinear-v0", horizon=args.horizon, misspecification=0.5)
    demos = collect_demonstrations(task, args.n, 0)
    rng = np.random.default_rng(0)
    dim = task.learner_class.dim
    candidates = [LinearSoftmaxPolicy(task, rng.normal(size=dim))
                  for _ in range(args.candidates)]

    build, tourney, total = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        loglik = np.stack([c.sequence_logprob(demos.prompts, demos.tokens) for c in candidates])
        build.append(time.perf_counter() - start)
        start = time.perf_counter()
        rho_tournament(loglik)
        tourney.append(time.perf_counter() - start)
        start = time.perf_counter()
        rho_select(candidates, demos.prompts, demos.tokens)
        total.append(time.perf_counter() - start)
    k, n, h = args.candidates, args.n, args.horizon
    print(f"RhoEstimator, {k} candidates, n = {n}, H = {h} (median of {args.repeats})")
    print(f"  sequence log-likelihood matrix ({k} x {n}): {np.median(build):8.3f} s")
    print(f"  tournament ({k} x {k} x {n} comparisons):  {np.median(tourney):8.3f} s")
    print(f"  rho_select end to end (dedupes sequences): {np.median(total):8.3f} s")


if __name__ == "__main__":
    main()
