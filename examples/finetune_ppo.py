"""Fine-tune a BC-initialised SB3 PPO policy on an env's reward, and see what it changes.

imitation's BC fits a neural policy to expert demonstrations of ARLinear-v0; PPO then starts
from those weights and maximises the env's return, the expert's log-likelihood of the emitted
sequence, ``J(pi) = E_pi[log P*(tau)] = -(KL(P^pi || P*) + entropy(P^pi))``. Expected: the
return goes up (PPO's objective) while the sequence law moves *away* from the expert's
(D_H^2 to the expert goes up): maximising likelihood under the expert rewards its most likely
sequences, not its distribution. Both are computed exactly (``V**H = 64`` sequences per
prompt). Run: ``python examples/finetune_ppo.py [--timesteps N]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from agents.imitation_agents import ImitationBC
from agents.sb3_policy import NeuralPolicy, as_sb3_policy, bc_initialised_ppo
from evaluation.divergences import divergence
from evaluation.metrics.returns import expected_return
from experts import collect_demonstrations
from ntp_envs import make_task
from ntp_envs.vector import SequenceVecEnv


def finetune(timesteps: int = 4096, seed: int = 0) -> dict[str, dict[str, float]]:
    """BC on 2000 demonstrations, then PPO for ``timesteps`` env steps; exact scores of both."""
    task = make_task("ntp_envs/ARLinear-v0", horizon=6)
    demos = collect_demonstrations(task, 2000, seed=seed)
    bc = ImitationBC(n_epochs=20).fit(task, demos, np.random.default_rng(seed))
    ppo = bc_initialised_ppo(bc, SequenceVecEnv(task, 16), seed=seed, n_steps=64,
                             batch_size=256, n_epochs=10, learning_rate=1e-3, ent_coef=0.0)
    th.set_num_threads(1)  # small MLPs train fastest on one thread
    ppo.learn(total_timesteps=timesteps)
    tuned = NeuralPolicy(task, ppo.policy, {"agent": "ppo-from-bc", "timesteps": timesteps})
    scores = {}
    for name, policy in [("expert", task.expert), ("bc", bc), ("bc+ppo", tuned)]:
        venv = SequenceVecEnv(task, 16)
        venv.seed(seed)
        sb3_mean, sb3_std = evaluate_policy(as_sb3_policy(policy, task, seed=seed), venv,
                                            n_eval_episodes=400, deterministic=False,
                                            warn=False)
        scores[name] = {"return": expected_return(task, policy).mean,
                        "evaluate_policy": float(sb3_mean), "evaluate_policy_std": float(sb3_std),
                        "hellinger2": divergence(task.expert, policy, task.prompts).hellinger2}
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scores = finetune(args.timesteps, args.seed)
    print(f"{'policy':>8}  {'J (exact)':>10}  {'evaluate_policy (400 ep.)':>26}  {'D_H^2':>8}")
    for name, s in scores.items():
        print(f"{name:>8}  {s['return']:10.4f}  {s['evaluate_policy']:12.4f} ± "
              f"{s['evaluate_policy_std'] / np.sqrt(400):<11.4f}  {s['hellinger2']:8.4f}")


if __name__ == "__main__":
    main()
