"""Exact D_H^2 (finite-state DP) vs Monte Carlo at H = 4096 between two memory-4 experts.

Run: ``python benchmarks/bench_divergences.py [--threads N] [--repeats R] [--mc-repeats M]``.
Targets: the exact evaluation under 50 ms and at least 100x faster than a 100,000-sample
Monte Carlo estimate of the same pair, which must agree within 5 standard errors; exits 1
when a target or the agreement check fails.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from evaluation import divergence
from ntp_envs import make_task

ENV = "ntp_envs/ARLinear-v0"


def median_seconds(
    fn: Callable[[], object], repeats: int, warm_up: bool = True
) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (after an optional warm-up) and the last result."""
    result = fn() if warm_up else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--horizon", type=int, default=4096)
    parser.add_argument("--memory", type=int, default=4)
    parser.add_argument("--gap", type=float, default=0.02, help="misspecification gap")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--mc-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    # the same task at two nearby misspecification levels: D_H^2 is far from 0 and from 2
    common = dict(horizon=args.horizon, vocab_size=2, num_contexts=4, learner_memory=1,
                  expert_memory=args.memory, task_seed=0)
    first = make_task(ENV, misspecification=0.5, **common)
    second = make_task(ENV, misspecification=0.5 + args.gap, **common)
    expert, other, prompts = first.expert, second.expert, first.prompts

    exact_s, exact = median_seconds(
        lambda: divergence(expert, other, prompts, method="dp"), args.repeats
    )
    mc_s, mc = median_seconds(
        lambda: divergence(expert, other, prompts, method="monte_carlo",
                           n_samples=args.samples, rng=0),
        args.mc_repeats,
        warm_up=False,
    )
    print(f"pair: ARLinear-v0 experts at misspecification 0.5 and {0.5 + args.gap} "
          f"(task_seed 0), V=2, memory {args.memory}, H={args.horizon}, 4 contexts; "
          f"torch threads {torch.get_num_threads()}")
    print(f"exact (dp, D_H^2 + KL): {exact_s * 1e3:8.2f} ms (median of {args.repeats})  "
          f"D_H^2 = {exact.hellinger2:.10f}  KL = {exact.kl:.6f}")
    print(f"monte carlo (n={args.samples}): {mc_s * 1e3:8.1f} ms (median of {args.mc_repeats})"
          f"  D_H^2 = {mc.hellinger2:.6f} +- {mc.hellinger2_stderr:.6f}  "
          f"KL = {mc.kl:.4f} +- {mc.kl_stderr:.4f}")
    z = (mc.hellinger2 - exact.hellinger2) / max(mc.hellinger2_stderr, 1e-300)
    print(f"speed-up: {mc_s / exact_s:.0f}x   (MC - exact) / stderr = {z:+.2f}")
    print(f"targets: exact < 50 ms: {exact_s < 0.05}; >= 100x faster: {mc_s / exact_s >= 100}")
    failed = [name for name, ok in [("exact < 50 ms", exact_s < 0.05),
                                    (">= 100x faster", mc_s / exact_s >= 100),
                                    ("|MC - exact| <= 5 stderr", abs(z) <= 5)] if not ok]
    if failed:
        raise SystemExit(f"bench_divergences: failed {failed}")


if __name__ == "__main__":
    main()
