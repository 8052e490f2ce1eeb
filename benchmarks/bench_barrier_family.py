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

Speed of the exact population tournaments (issue 20; ``--speed``): fit seconds of ``rho``,
``robust-rho``, ``chunk-rho:1`` and ``chunk-rho:16`` on one FiniteClassBarrier instance
(event_prob 1e-5, bias 0.01, min_prob 1e-30) and of ``rho``, ``chunk-rho:1`` and
``chunk-rho:16`` on one MixtureProduct instance (weight 0.1, p0 0.5, p1 0.9) at H = 256,
1024, 4096, next to the "before" seconds below (the code before issue 20, measured on the
shared 2-core machine under load; ``robust-rho`` was then called ``robust``). ``--compare``
also times the reference path in this process (atoms token by token, full tournaments in
every refinement round) up to ``--compare-max-h``. An earlier run of the old code under
heavier load took 299 s for ``rho`` on the barrier and 77 s on the mixture at H = 4096
(issue 20 reports 93-130 s on the barrier).

Before (seconds per population fit; every fit exact)::

    env      H     rho      robust-rho  chunk-rho:1  chunk-rho:16
    barrier  256   0.679    0.133       0.005        0.014
    barrier  1024  11.28    0.664       0.011        0.017
    barrier  4096  184.1    2.527       0.035        0.037
    mixture  256   3.771    -           0.645        0.837
    mixture  1024  8.109    -           0.490        0.831
    mixture  4096  14.32    -           0.606        0.743

Run: ``python benchmarks/bench_barrier_family.py --speed [--compare]``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from unittest import mock

import numpy as np

from agents import make_agent, tournament
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


SPEED_AGENTS = {"barrier": ("rho", "robust-rho", "chunk-rho:1", "chunk-rho:16"),
                "mixture": ("rho", "chunk-rho:1", "chunk-rho:16")}
BEFORE: dict[tuple[str, int, str], float] = {
    ("barrier", 256, "rho"): 0.679, ("barrier", 256, "robust-rho"): 0.133,
    ("barrier", 256, "chunk-rho:1"): 0.005, ("barrier", 256, "chunk-rho:16"): 0.014,
    ("barrier", 1024, "rho"): 11.28, ("barrier", 1024, "robust-rho"): 0.664,
    ("barrier", 1024, "chunk-rho:1"): 0.011, ("barrier", 1024, "chunk-rho:16"): 0.017,
    ("barrier", 4096, "rho"): 184.1, ("barrier", 4096, "robust-rho"): 2.527,
    ("barrier", 4096, "chunk-rho:1"): 0.035, ("barrier", 4096, "chunk-rho:16"): 0.037,
    ("mixture", 256, "rho"): 3.771, ("mixture", 256, "chunk-rho:1"): 0.645,
    ("mixture", 256, "chunk-rho:16"): 0.837,
    ("mixture", 1024, "rho"): 8.109, ("mixture", 1024, "chunk-rho:1"): 0.490,
    ("mixture", 1024, "chunk-rho:16"): 0.831,
    ("mixture", 4096, "rho"): 14.32, ("mixture", 4096, "chunk-rho:1"): 0.606,
    ("mixture", 4096, "chunk-rho:16"): 0.743,
}
"""Seconds per fit before issue 20 (the table of the module doc)."""


def speed_task(env: str, horizon: int):  # noqa: ANN201 - a SequenceTask
    """The instance ``--speed`` times for ``env`` (``barrier`` or ``mixture``)."""
    if env == "barrier":
        return make_task(BARRIER, horizon=horizon, event_prob=1e-5, bias=0.01, min_prob=1e-30)
    return make_task(MIX, horizon=horizon, weight=0.1, p0=0.5, p1=0.9)


@contextlib.contextmanager
def reference_path() -> Iterator[None]:
    """Finite-state atoms token by token and a full tournament in every refinement round:
    the algorithm before issue 20 (not its every constant: the count-law statistics and the
    candidate policies are built the new way)."""

    def full(self: tournament.TournamentSource, candidates: list, start: int | None = None
             ) -> tuple[int, float]:
        best, scores = self.select(candidates)
        return best, float(scores[best])

    with mock.patch.object(tournament._IidStates, "build", return_value=None), \
            mock.patch.object(tournament.TournamentSource, "winner", full):
        yield


def timed_fit(agent: str, task) -> tuple[float, str]:  # noqa: ANN001 - a SequenceTask
    """Seconds of one population fit and its winner (member or logit)."""
    start = time.perf_counter()
    policy = make_agent(agent).fit(task, None, np.random.default_rng(0))
    seconds = time.perf_counter() - start
    assert policy.info.get("tournament") == "exact", policy.info.get("tournament")
    winner = policy.info.get("member") or f"logit {policy.theta[1]:.6f}"
    return seconds, winner


def speed(horizons: list[int], compare_max_h: int | None) -> None:
    """Print fit seconds before (recorded) and now, and the reference path's if asked."""
    print(f"{'env':>8} {'H':>5} {'agent':>13} {'before s':>9} {'after s':>8} "
          f"{'reference s':>11}  winner")
    for horizon in horizons:
        for env, agents in SPEED_AGENTS.items():
            task = speed_task(env, horizon)
            for agent in agents:
                after, winner = timed_fit(agent, task)
                before = BEFORE.get((env, horizon, agent))
                ref = "-"
                if compare_max_h is not None and horizon <= compare_max_h:
                    with reference_path():
                        seconds, ref_winner = timed_fit(agent, task)
                    assert ref_winner == winner, (ref_winner, winner)
                    ref = f"{seconds:.3f}"
                shown = "-" if before is None else f"{before:.3f}"
                print(f"{env:>8} {horizon:>5} {agent:>13} {shown:>9} {after:8.3f} {ref:>11}  "
                      f"{winner}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=256)
    parser.add_argument("--biases", type=int, default=32)
    parser.add_argument("--mix-horizon", type=int, default=256)
    parser.add_argument("--speed", action="store_true",
                        help="print fit seconds before/after instead of the C_apx tables")
    parser.add_argument("--speed-horizons", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--compare", action="store_true",
                        help="with --speed: also time the reference path (slow at large H)")
    parser.add_argument("--compare-max-h", type=int, default=1024)
    args = parser.parse_args()
    if min(args.speed_horizons) < 1 or args.compare_max_h < 1:
        parser.error("--speed-horizons and --compare-max-h must be integers >= 1")
    if args.speed:
        speed(args.speed_horizons, args.compare_max_h if args.compare else None)
        return
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
