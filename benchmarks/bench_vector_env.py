"""Vector-env throughput: the natively batched envs against Gymnasium's ``SyncVectorEnv`` and
SB3's ``DummyVecEnv`` over the same env, side by side in one run.

Every env steps the same pre-drawn random actions (policy cost excluded) with autoreset.
Steps/s counts sub-env steps (``num_envs`` per vector step). Run:
``python benchmarks/bench_vector_env.py [--help]``. Target: native Gymnasium vector env at
256 sub-envs >= 20x the steps/s of ``SyncVectorEnv`` (exits 1 if missed).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

import ntp_envs
from ntp_envs.vector import make_sb3_vec_env, make_vector_env

TARGET_RATIO = 20.0


def steps_per_second(step: Callable[[np.ndarray], object], actions: np.ndarray,
                     repeats: int) -> list[float]:
    """Sub-env steps/s of ``step`` over the rows of ``actions``, once per repeat."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for row in actions:
            step(row)
        rates.append(actions.size / (time.perf_counter() - start))
    return rates


def bench_env(env_id: str, env_kwargs: dict, num_envs: int, native_steps: int,
              baseline_steps: int, repeats: int) -> dict[str, list[float]]:
    """Steps/s of the four vector envs of ``env_id`` (median over ``repeats``)."""
    def make() -> gym.Env:
        return gym.make(env_id, disable_env_checker=True, **env_kwargs)

    envs = {
        "native gymnasium": make_vector_env(env_id, num_envs, **env_kwargs),
        "SyncVectorEnv": gym.vector.SyncVectorEnv([make] * num_envs),
        "native SB3": make_sb3_vec_env(env_id, num_envs, seed=0, **env_kwargs),
        "DummyVecEnv": DummyVecEnv([make] * num_envs),
    }
    vocab = envs["native gymnasium"].task.vocab_size
    rng = np.random.default_rng(0)
    out = {}
    for name, venv in envs.items():
        steps = native_steps if name.startswith("native") else baseline_steps
        actions = rng.integers(0, vocab, size=(steps, num_envs))
        if isinstance(venv, gym.vector.VectorEnv):
            venv.reset(seed=0)
        else:
            venv.reset()
        venv.step(actions[0])  # warm-up
        out[name] = steps_per_second(venv.step, actions, repeats)
        venv.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=64,
                        help="episode length, where the env lets it be set")
    parser.add_argument("--native-steps", type=int, default=640,
                        help="vector steps per timed native run")
    parser.add_argument("--baseline-steps", type=int, default=64,
                        help="vector steps per timed Sync/Dummy run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env", action="append",
                        help="env id (repeatable; default: every registered env)")
    args = parser.parse_args(argv)

    env_ids = args.env or ntp_envs.registered_env_ids()
    print(f"{args.num_envs} sub-envs | gymnasium {gym.__version__} | numpy {np.__version__} | "
          f"{platform.processor() or platform.machine()}")
    met = True
    for env_id in env_ids:
        kwargs = {"horizon": args.horizon}
        try:
            ntp_envs.make_task(env_id, **kwargs)
        except ValueError:  # the env sets its own horizon: use its defaults
            kwargs = {}
        rates = bench_env(env_id, kwargs, args.num_envs, args.native_steps, args.baseline_steps,
                          args.repeats)
        median = {name: statistics.median(r) for name, r in rates.items()}
        gym_ratio = median["native gymnasium"] / median["SyncVectorEnv"]
        sb3_ratio = median["native SB3"] / median["DummyVecEnv"]
        met &= gym_ratio >= TARGET_RATIO
        print(f"\n{env_id} {kwargs or '(defaults)'}")
        for name, r in rates.items():
            print(f"  {name:>16}: median {median[name] / 1e3:10.1f} k steps/s  "
                  f"(runs: {', '.join(f'{x / 1e3:.1f}' for x in r)})")
        print(f"  ratio native/SyncVectorEnv: {gym_ratio:.0f}x "
              f"[{'met' if gym_ratio >= TARGET_RATIO else 'MISSED'}: >= {TARGET_RATIO:.0f}x]; "
              f"native SB3/DummyVecEnv: {sb3_ratio:.0f}x")
    print(f"\ntarget >= {TARGET_RATIO:.0f}x on every env: {'met' if met else 'MISSED'}")
    if not met:
        raise SystemExit("bench_vector_env: the target was MISSED")


if __name__ == "__main__":
    main()
