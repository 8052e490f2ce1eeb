"""Demonstration throughput: batched ``collect_demonstrations`` vs imitation's ``rollout``.

Both draw expert sequences of the same ARLinear env (same task, same expert); the batched
path never steps an env. Run: ``python benchmarks/bench_demonstrations.py [--help]``.
Targets: batched >= 5 million tokens/s and >= 50x imitation's rollout (exits 1 if missed).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import gymnasium as gym
import numpy as np
from imitation.data import rollout
from imitation.data.wrappers import RolloutInfoWrapper
from stable_baselines3.common.vec_env import DummyVecEnv

from experts import as_sb3_policy, collect_demonstrations
from ntp_envs import make_task

ENV_ID = "ntp_envs/ARLinear-v0"
TARGET_TOKENS_PER_S = 5e6
TARGET_RATIO = 50.0


def bench_batched(env_kwargs: dict, n: int, repeats: int) -> list[float]:
    """Tokens/s of ``collect_demonstrations`` for each repeat."""
    task = make_task(ENV_ID, **env_kwargs)
    collect_demonstrations(task, min(n, 1000), seed=0)  # warm-up
    rates = []
    for rep in range(repeats):
        start = time.perf_counter()
        demos = collect_demonstrations(task, n, seed=rep)
        rates.append(demos.tokens.size / (time.perf_counter() - start))
    return rates


def bench_imitation(env_kwargs: dict, num_envs: int, episodes: int, repeats: int) -> list[float]:
    """Tokens/s of imitation's ``rollout.rollout`` with the expert on a ``DummyVecEnv``."""
    task = make_task(ENV_ID, **env_kwargs)
    venv = DummyVecEnv([lambda: RolloutInfoWrapper(gym.make(ENV_ID, **env_kwargs))] * num_envs)
    venv.seed(0)
    expert = as_sb3_policy(task.expert, task, seed=0, env=venv)
    rng = np.random.default_rng(0)
    rollout.rollout(expert, venv, rollout.make_sample_until(min_episodes=num_envs), rng=rng)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        trajs = rollout.rollout(expert, venv, rollout.make_sample_until(min_episodes=episodes),
                                rng=rng)
        rates.append(sum(len(t.acts) for t in trajs) / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--n", type=int, default=200_000, help="sequences per batched run")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=200, help="min_episodes per rollout")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    env_kwargs = {"vocab_size": args.vocab_size, "horizon": args.horizon}
    print(f"{ENV_ID} {env_kwargs} | numpy {np.__version__} | {platform.processor() or '?'}")
    batched = bench_batched(env_kwargs, args.n, args.repeats)
    imitation = bench_imitation(env_kwargs, args.num_envs, args.episodes, args.repeats)
    fast, slow = statistics.median(batched), statistics.median(imitation)
    print(f"batched collect_demonstrations (n={args.n}): median {fast / 1e6:8.2f} M tokens/s  "
          f"(runs: {', '.join(f'{r / 1e6:.2f}' for r in batched)})")
    print(f"imitation rollout ({args.num_envs} envs, >= {args.episodes} episodes): "
          f"median {slow / 1e3:8.2f} k tokens/s  "
          f"(runs: {', '.join(f'{r / 1e3:.2f}' for r in imitation)})")
    print(f"ratio: {fast / slow:.0f}x")
    print(f"targets: >= {TARGET_TOKENS_PER_S / 1e6:.0f} M tokens/s "
          f"[{'met' if fast >= TARGET_TOKENS_PER_S else 'MISSED'}], >= {TARGET_RATIO:.0f}x "
          f"[{'met' if fast / slow >= TARGET_RATIO else 'MISSED'}]")
    if fast < TARGET_TOKENS_PER_S or fast / slow < TARGET_RATIO:
        raise SystemExit("bench_demonstrations: a target was MISSED")


if __name__ == "__main__":
    main()
