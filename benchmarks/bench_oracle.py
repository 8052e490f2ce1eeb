"""The best-in-class oracle: the adjoint path next to today's autograd path, in one run.

Task: ARLinear with ``expert_memory 3, learner_memory 2, misspecification 0.5`` (issue 16's
table), at ``V`` and ``H`` from ``--cases``. Each search runs in a fresh subprocess, so its
peak RSS is its own. ``--old-cases`` picks the cases also searched by today's path
(``best_in_class(gradient="autograd")``; it takes minutes where the adjoint takes seconds).
Also reported: the cost per start of one value-and-gradient evaluation (18 starts batched)
for ``H = 64 .. 1024``, which should grow about linearly in ``H``.

Run: ``python benchmarks/bench_oracle.py [--quick] [--help]``.
Checks (exit 1 when one fails): both paths' best values agree to ``1e-9`` (relative);
``V = 4, H = 1024`` under 15 s; ``V = 16, H = 256`` under 120 s and 4 GB peak RSS.
Times are wall clock on ``--threads`` torch and BLAS threads (1 by default, as in sweep
workers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ENV_ID = "ntp_envs/ARLinear-v0"
TASK = {"expert_memory": 3, "learner_memory": 2, "misspecification": 0.5}
TARGETS = {(4, 1024): (15.0, None), (16, 256): (120.0, 4.0)}  # seconds, GB
AGREE_REL = 1e-9


def _case(text: str) -> tuple[int, int]:
    vocab, horizon = (int(x) for x in text.split(":"))
    return vocab, horizon


def _child(vocab: int, horizon: int, gradient: str, threads: int) -> dict:
    """One search in this process; returns its numbers (printed as JSON by ``--child``)."""
    import torch
    from threadpoolctl import threadpool_limits

    from evaluation.oracle import best_in_class
    from ntp_envs import make_task

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # numpy's BLAS too (the KL-projection start's solves)
    task = make_task(ENV_ID, horizon=horizon, vocab_size=vocab, **TASK)
    start = time.perf_counter()
    result = best_in_class(task, gradient=gradient)
    seconds = time.perf_counter() - start
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"vocab": vocab, "horizon": horizon, "gradient": gradient, "seconds": seconds,
            "rss_gb": rss_gb, "hellinger2": result.hellinger2, "agreement": result.agreement,
            "dim": task.learner_class.dim}


def _run_child(vocab: int, horizon: int, gradient: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{vocab}:{horizon}", "--gradient", gradient,
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"search V={vocab} H={horizon} ({gradient}) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cost_per_start(vocab: int, horizons: list[int], starts: int, threads: int) -> list[float]:
    """Seconds per start of one batched value-and-gradient evaluation, per horizon."""
    import torch

    from evaluation.oracle.search import _LinearClassObjective
    from ntp_envs import make_task

    torch.set_num_threads(threads)
    out = []
    for horizon in horizons:
        task = make_task(ENV_ID, horizon=horizon, vocab_size=vocab, **TASK)
        objective = _LinearClassObjective(task)
        theta = torch.randn(starts, task.learner_class.dim, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(0))
        objective.value_grad(theta)  # warm-up
        start = time.perf_counter()
        objective.value_grad(theta)
        out.append((time.perf_counter() - start) / starts)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", type=_case,
                        default=[(4, 64), (4, 256), (4, 1024), (8, 16), (8, 64), (16, 16),
                                 (16, 256)], help="V:H pairs searched by the adjoint path")
    parser.add_argument("--old-cases", nargs="*", type=_case, default=[(4, 64), (8, 16)],
                        help="V:H pairs also searched by today's autograd path")
    parser.add_argument("--cost-vocab", type=int, default=16)
    parser.add_argument("--cost-horizons", nargs="+", type=int, default=[64, 128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="small cases only (4:64 both paths, cost per start at V = 4)")
    parser.add_argument("--child", type=_case, help=argparse.SUPPRESS)
    parser.add_argument("--gradient", default="adjoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.child is not None:
        print(json.dumps(_child(*args.child, args.gradient, args.threads)))
        return 0
    if args.quick:
        args.cases, args.old_cases = [(4, 64)], [(4, 64)]
        args.cost_vocab, args.cost_horizons = 4, [64, 256]

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {args.threads}; ARLinear {TASK}")
    failures: list[str] = []
    print(f"{'V':>3} {'H':>5} {'dim':>5} {'path':>9} {'seconds':>9} {'peak GB':>8} "
          f"{'best D_H^2':>20} {'agree':>6}")
    for vocab, horizon in args.cases:
        rows = {"adjoint": _run_child(vocab, horizon, "adjoint", args.threads)}
        if (vocab, horizon) in args.old_cases:
            rows["autograd"] = _run_child(vocab, horizon, "autograd", args.threads)
        for row in rows.values():
            print(f"{vocab:>3} {horizon:>5} {row['dim']:>5} {row['gradient']:>9} "
                  f"{row['seconds']:>9.2f} {row['rss_gb']:>8.2f} {row['hellinger2']:>20.15f} "
                  f"{row['agreement']:>6.2f}")
        if "autograd" in rows:
            new, old = rows["adjoint"]["hellinger2"], rows["autograd"]["hellinger2"]
            if abs(new - old) > AGREE_REL * max(abs(old), 1e-12):
                failures.append(f"V={vocab} H={horizon}: best values differ ({new!r} vs {old!r})")
            speedup = rows["autograd"]["seconds"] / rows["adjoint"]["seconds"]
            print(f"{'':>9} speed-up {speedup:.1f}x, |difference| {abs(new - old):.2e}")
        limit_s, limit_gb = TARGETS.get((vocab, horizon), (None, None))
        if limit_s is not None and rows["adjoint"]["seconds"] > limit_s:
            failures.append(f"V={vocab} H={horizon}: {rows['adjoint']['seconds']:.1f} s "
                            f"> target {limit_s:.0f} s")
        if limit_gb is not None and rows["adjoint"]["rss_gb"] > limit_gb:
            failures.append(f"V={vocab} H={horizon}: peak {rows['adjoint']['rss_gb']:.2f} GB "
                            f"> target {limit_gb:.0f} GB")

    costs = _cost_per_start(args.cost_vocab, args.cost_horizons, 18, args.threads)
    print(f"\ncost per start of one value+gradient (V = {args.cost_vocab}, 18 starts batched)")
    for horizon, cost in zip(args.cost_horizons, costs, strict=True):
        print(f"  H = {horizon:>5}: {cost * 1e3:9.2f} ms  ({cost / horizon * 1e6:.2f} us per "
              "position)")
    for failure in failures:
        print(f"FAIL {failure}")
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
