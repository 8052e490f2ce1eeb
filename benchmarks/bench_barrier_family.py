"""Worst-case C_apx over the FiniteClassBarrier family and fit seconds, against the chunk size K.

The family of issue 13: ``event_prob = 1e-3`` and ``--biases`` log-spaced ``bias`` values in
[1e-3, 0.25], at ``--horizon`` H (default 256). Every instance is fitted on the exact expert
law (``demonstrations=None``) and scored exactly (``evaluation.divergences.divergence``
against ``evaluation.oracle.search.best_in_class``); the row reports the worst C_apx over the
family, the bias that attains it, the mean fit seconds per instance and the tournament's
statistics (``exact`` or ``sampled, n=...``). Agents: ``logloss``, ``robust``, ``rho``,
``chunk-rho:K`` for K = 1, 2, 4, ..., H, and ``chunk:K``, ``chunk-kr:K`` while ``3**K``
outcomes fit the cap (K <= 8 in powers of two). Then MixtureProduct (weight 0.1, p0 0.5,
p1 0.9) at ``--mix-horizon`` (one instance): the same chunk agents for K up to 16 (``2**K``
outcomes) and ``chunk-rho:K`` up to H.
Run: ``python benchmarks/bench_barrier_family.py [--horizon 256] [--biases 32]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from agents import make_agent
from evaluation import divergence
from evaluation.oracle import best_in_class
from ntp_envs import make_task

BARRIER = "ntp_envs/FiniteClassBarrier-v0"
MIX = "ntp_envs/MixtureProduct-v0"


def worst_case(tasks: list, agent: str) -> dict[str, object]:
    """Worst C_apx of ``agent`` over ``tasks`` (population fits, exact scores)."""
    values, seconds, how = [], [], ""
    for task in tasks:
        start = time.perf_counter()
        policy = make_agent(agent).fit(task, None, np.random.default_rng(0))
        seconds.append(time.perf_counter() - start)
        result = divergence(task.expert, policy, task.prompts)
        assert result.hellinger2_stderr == 0.0
        values.append(result.hellinger2 / best_in_class(task).hellinger2)
        how = str(policy.info.get("tournament", "-"))
    i = int(np.argmax(values))
    return {"worst": values[i], "at": tasks[i].params, "fit_s": float(np.mean(seconds)),
            "tournament": how}


def powers(limit: int) -> list[int]:
    return [2**j for j in range(limit.bit_length()) if 2**j <= limit]


def table(title: str, tasks: list, agents: list[str], horizon: int, knob: str) -> None:
    print(f"\n{title}")
    print(f"{'agent':>14} {'worst C_apx':>12} {'x K / H':>8} {knob:>10} {'fit s':>9}  tournament")
    for agent in agents:
        row = worst_case(tasks, agent)
        k = int(agent.split(":")[1]) if ":" in agent else horizon
        print(f"{agent:>14} {row['worst']:12.4g} {row['worst'] * k / horizon:8.3f} "
              f"{row['at'][knob]:10.4g} {row['fit_s']:9.4f}  {row['tournament']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=256)
    parser.add_argument("--biases", type=int, default=32)
    parser.add_argument("--mix-horizon", type=int, default=256)
    args = parser.parse_args()
    h = args.horizon
    biases = np.geomspace(1e-3, 0.25, args.biases)
    tasks = [make_task(BARRIER, horizon=h, event_prob=1e-3, bias=float(b)) for b in biases]
    small = [k for k in powers(h) if k <= 8]
    agents = ["logloss", "robust", "rho", *(f"chunk-rho:{k}" for k in powers(h)),
              *(f"chunk:{k}" for k in small), *(f"chunk-kr:{k}" for k in small)]
    table(f"FiniteClassBarrier, event_prob 1e-3, {len(tasks)} biases in [1e-3, 0.25], H = {h}",
          tasks, agents, h, "bias")
    hm = args.mix_horizon
    mix = [make_task(MIX, horizon=hm, weight=0.1, p0=0.5, p1=0.9)]
    up = [k for k in powers(hm) if k <= 16]
    agents = ["logloss", "robust", "rho", *(f"chunk-rho:{k}" for k in powers(hm)),
              *(f"chunk:{k}" for k in up), *(f"chunk-kr:{k}" for k in up)]
    table(f"MixtureProduct, weight 0.1, p0 0.5, p1 0.9, H = {hm}", mix, agents, hm, "weight")


if __name__ == "__main__":
    main()
