"""Worst-case C_apx over TiedLogitBarrier families against H and the chunk size K (R4b).

Every instance is fitted on the exact expert law (``demonstrations=None``) and scored
exactly (``evaluation.divergence``, method ``dp``) against the best in class, found on the
closed form (``tied_closed_forms``: a geometric grid of ``theta`` over [-30, 30], then a
bounded polish around the best point; the class has one parameter) and cross-checked against
``evaluation.oracle.best_in_class`` on a few instances. Families:

* A (the issue's): ``event_prob`` in [1e-5, 0.1] (6 log-spaced) x ``beta`` in [1e-3, 1]
  (7 log-spaced), fair normal coins (``normal_logit = 0``), ``event_logit = 20``;
* B (harder): A x ``normal_logit`` in {0, 0.1, 0.3, 1}.

Tables: NTP (``logloss``) against H; ``rho`` and ``chunk-rho:K`` on A; ``chunk-hellinger:K``
(the Hellinger projection of chunk laws, :mod:`agents.chunk_hellinger`) and ``chunk-rho:K``
against K on A and B, with ``worst x K / H``; fit seconds of ``chunk-hellinger:K`` against K
with the ``2^K`` outcome sums and with the counts of ones.
Run: ``python benchmarks/bench_tied_logit_barrier.py [--horizons 64,256] [--ntp-horizons
64,256,1024]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.optimize import minimize_scalar

from agents import make_agent
from agents.chunk_hellinger import ChunkHellinger
from evaluation import divergence
from evaluation.oracle import best_in_class
from ntp_envs import make_task
from ntp_envs.tied_logit_barrier import tied_closed_forms

TIED = "ntp_envs/TiedLogitBarrier-v0"
RHOS = np.geomspace(1e-5, 0.1, 6)
BETAS = np.geomspace(1e-3, 1.0, 7)
NORMAL_LOGITS = (0.0, 0.1, 0.3, 1.0)
GRID = np.sort(np.concatenate([-np.geomspace(1e-12, 30.0, 20_000), [0.0],
                               np.geomspace(1e-12, 30.0, 20_000)]))


def family(horizon: int, normal_logits: tuple[float, ...]) -> list:
    return [make_task(TIED, horizon=horizon, event_prob=float(r), beta=float(b),
                      normal_logit=float(a))
            for a in normal_logits for r in RHOS for b in BETAS]


def closed_form_best(task, with_theta: bool = False) -> float | tuple[float, float]:
    """``min_theta D_H^2`` of the one-parameter class (grid, then a bounded polish), and its
    ``theta`` when ``with_theta``."""
    p = task.params

    def h2(theta):
        return tied_closed_forms(theta, p["horizon"], p["event_prob"], p["beta"],
                                 p["event_logit"], p["misspecification"], p["normal_logit"]
                                 )["hellinger2"]

    values = h2(GRID)
    i = int(np.argmin(values))
    lo, hi = GRID[max(i - 1, 0)], GRID[min(i + 1, len(GRID) - 1)]
    polish = minimize_scalar(lambda x: float(h2(x)), bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-15})
    if polish.fun <= values[i]:
        value, theta = float(polish.fun), float(polish.x)
    else:
        value, theta = float(values[i]), float(GRID[i])
    return (value, theta) if with_theta else value


def worst_case(tasks: list, best: list[float], agent: str) -> tuple[float, dict, float]:
    """Worst C_apx of ``agent`` over ``tasks``, the instance attaining it, mean fit seconds."""
    values, seconds = [], []
    for task, denominator in zip(tasks, best, strict=True):
        start = time.perf_counter()
        policy = make_agent(agent).fit(task, None, np.random.default_rng(0))
        seconds.append(time.perf_counter() - start)
        result = divergence(task.expert, policy, task.prompts, method="dp")
        values.append(result.hellinger2 / denominator)
    i = int(np.argmax(values))
    return values[i], tasks[i].params, float(np.mean(seconds))


def where(params: dict) -> str:
    return (f"rho {params['event_prob']:.3g}, beta {params['beta']:.3g}, "
            f"a_n {params['normal_logit']:g}")


def k_table(title: str, horizon: int, tasks: list, best: list[float], agents: list[str]) -> None:
    print(f"\n{title}")
    print(f"{'agent':>20} {'worst C_apx':>12} {'x K / H':>8} {'fit s':>8}  worst at")
    for agent in agents:
        worst, at, fit_s = worst_case(tasks, best, agent)
        k = int(agent.split(":")[1]) if ":" in agent else (1 if agent == "logloss" else horizon)
        print(f"{agent:>20} {worst:12.4g} {worst * k / horizon:8.3f} {fit_s:8.3f}  {where(at)}",
              flush=True)


def slope(horizons: list[int], worst: list[float]) -> tuple[float, float]:
    """Least-squares slope of log worst on log H and its standard error."""
    x, y = np.log(horizons), np.log(worst)
    if len(x) < 3:
        return float(np.polyfit(x, y, 1)[0]), float("nan")
    (b, a), cov = np.polyfit(x, y, 1, cov=True)
    return float(b), float(math.sqrt(cov[0, 0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizons", default="64,256")
    parser.add_argument("--ntp-horizons", default="64,256,1024")
    parser.add_argument("--oracle-checks", type=int, default=3)
    args = parser.parse_args()
    horizons = [int(h) for h in args.horizons.split(",")]
    ntp_horizons = [int(h) for h in args.ntp_horizons.split(",")]
    began = time.perf_counter()

    print(f"Family A: {len(RHOS)} event_prob in [1e-5, 0.1] x {len(BETAS)} beta in [1e-3, 1], "
          "normal_logit 0, event_logit 20 (population fits, exact dp)")
    print(f"Family B: A x normal_logit in {list(NORMAL_LOGITS)}")
    print("\nBest in class: closed form (grid + polish) vs evaluation.oracle.best_in_class")
    checks = family(64, (0.0, 0.1))
    for i in np.linspace(0, len(checks) - 1, args.oracle_checks).astype(int):
        task = checks[i]
        oracle = best_in_class(task)
        mine, theta = closed_form_best(task, with_theta=True)
        member = task.learner_class.model(np.array([theta]))
        exact = divergence(task.expert, member, task.prompts, method="dp").hellinger2
        print(f"  {where(task.params)}: closed form {mine:.10g} at theta {theta:.6g} (dp there"
              f" {exact:.10g}); oracle {oracle.hellinger2:.10g} at theta "
              f"{oracle.theta[0]:.6g} ({oracle.seconds:.1f} s)")

    print("\nNTP (logloss) worst C_apx against H")
    print(f"{'family':>8} " + " ".join(f"{'H=' + str(h):>10}" for h in ntp_horizons)
          + "   exponent (se)   worst at (largest H)")
    for name, logits in (("A", (0.0,)), ("B", NORMAL_LOGITS)):
        worst, at = [], None
        for h in ntp_horizons:
            tasks = family(h, logits)
            value, at, _ = worst_case(tasks, [closed_form_best(t) for t in tasks], "logloss")
            worst.append(value)
        b, se = slope(ntp_horizons, worst)
        print(f"{name:>8} " + " ".join(f"{w:10.4g}" for w in worst)
              + f"   {b:.2f} ({se:.2f})      {where(at)}", flush=True)

    for h in horizons:
        tasks_a = family(h, (0.0,))
        best_a = [closed_form_best(t) for t in tasks_a]
        ks = sorted({*(k for k in (1, 2, 4, 8, 16) if k <= h), h // 4})
        k_table(f"Family A, H = {h}: rho and chunk-rho:K over the theta grid", h, tasks_a,
                best_a, ["logloss", "rho", *(f"chunk-rho:{k}" for k in ks)])
        k_table(f"Family A, H = {h}: chunk-hellinger:K", h, tasks_a, best_a,
                [f"chunk-hellinger:{k}" for k in (*range(1, 9), 16)])
        tasks_b = family(h, NORMAL_LOGITS)
        best_b = [closed_form_best(t) for t in tasks_b]
        k_table(f"Family B, H = {h}: chunk-hellinger:K (R4b), chunk-rho:K, rho", h, tasks_b,
                best_b, ["logloss", *(f"chunk-hellinger:{k}" for k in (*range(1, 9), 16)),
                         *(f"chunk-rho:{k}" for k in (1, 4, 16)), "rho"])

    h = horizons[0]
    task = make_task(TIED, horizon=h, event_prob=0.0025, beta=0.1, normal_logit=0.1)
    print(f"\nchunk-hellinger:K fit seconds against K (H = {h}, event_prob 0.0025, beta 0.1, "
          "normal_logit 0.1)")
    print(f"{'K':>4} {'2^K outcomes s':>15} {'counts of ones s':>17} {'theta':>12}")
    for k in range(1, 17):
        row = []
        for counts in (False, True):
            start = time.perf_counter()
            fit = ChunkHellinger(chunk_size=k, sufficient_statistics=counts).fit(task, None)
            row.append(time.perf_counter() - start)
        print(f"{k:4d} {row[0]:15.3f} {row[1]:17.3f} {fit.theta[0]:12.6g}", flush=True)
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
