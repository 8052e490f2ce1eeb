"""LogLossBC (exact Newton fit) vs imitation's BC (Adam on an MLP) on the same 1M tokens.

Both learn from the same ARLinear demonstrations (default: 15,625 sequences x H = 64 =
1,000,000 tokens; linear-softmax class of dim 64) and are scored by the same metric: the
per-token log loss on a separate held-out demonstration set, next to the expert's own
(the entropy-rate floor). LogLossBC's fit is timed end to end from the raw demonstrations
(median of ``--repeats``). imitation's ``BC`` (default ``FeedForward32Policy``, batch 32,
Adam lr 1e-3, ent_weight 1e-3) trains on ``Demonstrations.to_transitions()``; every
``--eval-every`` batches the clock is paused and its held-out loss measured, until it is
within ``--tolerance`` nats/token of LogLossBC's or its *training* time (conversion and
evaluations excluded) reaches ``--budget-factor`` x LogLossBC's fit time.
Run: ``python benchmarks/bench_logloss.py [--quick] [--help]``.
Targets: LogLossBC fits 1M tokens in < 10 s; BC needs > 10x that time to match its loss.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from imitation.algorithms.bc import BC
from imitation.util import logger as imit_logger

from agents import LogLossBC
from experts import Demonstrations, collect_demonstrations
from ntp_envs import make_task
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray

ENV_ID = "ntp_envs/ARLinear-v0"
TARGET_FIT_S = 10.0
TARGET_SPEEDUP = 10.0
EVAL_BATCH = 16384  # held-out rows per evaluate_actions call


class _StopTraining(Exception):
    """Raised from BC's ``on_batch_end`` callback to end training."""


@dataclass
class BCRun:
    """The course of one BC training run; ``trace`` rows are (batches, train s, loss)."""

    target: float
    budget_s: float
    trace: list[tuple[int, float, float]] = field(default_factory=list)
    batches: int = 0
    train_s: float = 0.0
    convert_s: float = 0.0
    eval_s: float = 0.0
    reached_at: int | None = None  # index into trace

    @property
    def best(self) -> tuple[int, float, float]:
        return min(self.trace, key=lambda row: row[2])


def per_token_loss(logp: FloatArray) -> float:
    return -float(np.mean(logp))


def bc_heldout_logprobs(bc: BC, heldout: Demonstrations, task: SequenceTask) -> FloatArray:
    """``(n, H)`` log-probs of the held-out tokens under BC's policy (batched, no grad)."""
    obs = heldout.observations(task)[:, :-1].reshape(-1, task.prompts.prompt_length + 1
                                                     + task.horizon)
    acts = heldout.tokens.reshape(-1).copy()  # writable: torch warns on read-only arrays
    out = np.empty(acts.shape[0])
    policy = bc.policy
    with torch.no_grad():
        for start in range(0, acts.shape[0], EVAL_BATCH):
            rows = slice(start, start + EVAL_BATCH)
            _, logp, _ = policy.evaluate_actions(
                torch.as_tensor(obs[rows], device=policy.device),
                torch.as_tensor(acts[rows], device=policy.device),
            )
            out[rows] = logp.cpu().numpy()
    return out.reshape(heldout.tokens.shape)


def time_logloss(task: SequenceTask, demos: Demonstrations, repeats: int):
    """Median wall time of ``LogLossBC().fit`` (after a warm-up), all times, last policy."""
    policy = LogLossBC().fit(task, demos)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy = LogLossBC().fit(task, demos)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, policy


def run_bc(
    env_kwargs: dict, task: SequenceTask, demos: Demonstrations, heldout: Demonstrations,
    target: float, budget_s: float, eval_every: int, batch_size: int, seed: int,
) -> tuple[BCRun, FloatArray]:
    """Train imitation's BC until its held-out loss <= target or ``budget_s`` of training."""
    run = BCRun(target=target, budget_s=budget_s)
    start = time.perf_counter()
    transitions = demos.to_transitions(task)
    run.convert_s = time.perf_counter() - start
    env = gym.make(ENV_ID, **env_kwargs)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as logdir:
        bc = BC(observation_space=env.observation_space, action_space=env.action_space,
                rng=np.random.default_rng(seed), demonstrations=transitions,
                batch_size=batch_size,
                custom_logger=imit_logger.configure(logdir, format_strs=[]))
        best_logp = bc_heldout_logprobs(bc, heldout, task)
        run.trace.append((0, 0.0, per_token_loss(best_logp)))
        resume = time.perf_counter()

        def evaluate() -> None:
            nonlocal resume, best_logp
            run.train_s += time.perf_counter() - resume
            t0 = time.perf_counter()
            logp = bc_heldout_logprobs(bc, heldout, task)
            run.eval_s += time.perf_counter() - t0
            loss = per_token_loss(logp)
            if loss < run.best[2]:
                best_logp = logp
            run.trace.append((run.batches, run.train_s, loss))
            if loss <= target:
                run.reached_at = len(run.trace) - 1
                raise _StopTraining
            if run.train_s >= budget_s:
                raise _StopTraining
            resume = time.perf_counter()

        def on_batch_end() -> None:
            run.batches += 1
            over = run.train_s + (time.perf_counter() - resume) >= budget_s
            if run.batches % eval_every == 0 or over:
                evaluate()

        try:
            bc.train(n_epochs=10**9, on_batch_end=on_batch_end, progress_bar=False,
                     log_interval=10**12)
        except _StopTraining:
            pass
    env.close()
    return run, best_logp


def fmt_s(seconds: float) -> str:
    return f"{seconds:8.2f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--num-contexts", type=int, default=16)
    parser.add_argument("--learner-memory", type=int, default=8)
    parser.add_argument("--expert-memory", type=int, default=10)
    parser.add_argument("--misspecification", type=float, default=0.5)
    parser.add_argument("--task-seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=15_625, help="training sequences")
    parser.add_argument("--n-heldout", type=int, default=2_000, help="held-out sequences")
    parser.add_argument("--repeats", type=int, default=3, help="timed LogLossBC fits")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="BC reaches LogLossBC when within this many nats/token of it")
    parser.add_argument("--budget-factor", type=float, default=10.0,
                        help="BC training budget, in multiples of LogLossBC's fit time")
    parser.add_argument("--eval-every", type=int, default=500, help="BC batches per check")
    parser.add_argument("--bc-batch-size", type=int, default=32, help="imitation's default")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is fastest for BC's batch-32 MLP; "
                        "0 = torch's default)")
    parser.add_argument("--best-in-class", action="store_true",
                        help="also fit LogLossBC on the exact expert law (slow: ~30 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_heldout, args.repeats, args.eval_every = 500, 200, 1, 100
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    # imitation's batch-0 log calls float() on a tensor that requires grad
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")

    env_kwargs = dict(horizon=args.horizon, num_contexts=args.num_contexts,
                      learner_memory=args.learner_memory, expert_memory=args.expert_memory,
                      misspecification=args.misspecification, task_seed=args.task_seed)
    task = make_task(ENV_ID, **env_kwargs)
    demos = collect_demonstrations(task, args.n_train, args.seed)
    heldout = collect_demonstrations(task, args.n_heldout, args.seed + 1)
    n_tokens = demos.tokens.size
    print(f"{ENV_ID} {env_kwargs}")
    print(f"learner class dim {task.learner_class.dim} | train {args.n_train} seq = "
          f"{n_tokens:,} tokens | held-out {args.n_heldout} seq = {heldout.tokens.size:,} "
          f"tokens | numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()} | load avg "
          f"{os.getloadavg()[0]:.2f}")

    floor = per_token_loss(heldout.expert_logprobs)
    fit_s, fit_times, ours = time_logloss(task, demos, args.repeats)
    ours_logp = ours.token_logprobs(heldout.prompts, heldout.tokens)
    ours_loss = per_token_loss(ours_logp)
    target = ours_loss + args.tolerance
    budget = args.budget_factor * fit_s

    best_in_class = None
    if args.best_in_class:
        start = time.perf_counter()
        population = LogLossBC().fit(task, None)
        best_in_class = (time.perf_counter() - start,
                         per_token_loss(population.token_logprobs(heldout.prompts,
                                                                  heldout.tokens)))

    run, bc_logp = run_bc(env_kwargs, task, demos, heldout, target, budget, args.eval_every,
                          args.bc_batch_size, args.seed)
    best_batches, best_s, best_loss = run.best
    samples = run.batches * args.bc_batch_size

    print(f"\nBC held-out loss every {args.eval_every} batches of {args.bc_batch_size} "
          "(training time only):")
    shown = sorted(set(np.linspace(0, len(run.trace) - 1, 12).round().astype(int)))
    for i in shown:
        batches, secs, loss = run.trace[i]
        print(f"  batches {batches:8d}  epochs {batches * args.bc_batch_size / n_tokens:6.3f}"
              f"  train {secs:7.2f} s  loss {loss:.6f}  (ours {ours_loss - loss:+.6f})")

    rule = "-" * 96
    print(f"\n{'method':<40}{'time':>12}{'held-out loss':>16}{'- floor':>12}{'- ours':>12}"
          f"{'Mtok/s':>9}")
    print(rule)
    print(f"{'expert (entropy-rate floor)':<40}{'':>12}{floor:16.6f}{0.0:12.6f}"
          f"{floor - ours_loss:+12.6f}")
    if best_in_class is not None:
        secs, loss = best_in_class
        print(f"{'LogLossBC on exact P* (best in class)':<40}{fmt_s(secs):>12}{loss:16.6f}"
              f"{loss - floor:12.6f}{loss - ours_loss:+12.6f}")
    print(f"{'LogLossBC (Newton, exact argmin)':<40}{fmt_s(fit_s):>12}{ours_loss:16.6f}"
          f"{ours_loss - floor:12.6f}{0.0:+12.6f}{n_tokens / fit_s / 1e6:9.2f}")
    label = "reached" if run.reached_at is not None else "budget"
    final_batches, final_s, final_loss = run.trace[-1]
    print(f"{'imitation BC, at stop (' + label + ')':<40}{fmt_s(final_s):>12}{final_loss:16.6f}"
          f"{final_loss - floor:12.6f}{final_loss - ours_loss:+12.6f}"
          f"{final_batches * args.bc_batch_size / max(final_s, 1e-12) / 1e6:9.3f}")
    print(f"{'imitation BC, best check':<40}{fmt_s(best_s):>12}{best_loss:16.6f}"
          f"{best_loss - floor:12.6f}{best_loss - ours_loss:+12.6f}")
    print(rule)

    diff = (ours_logp - bc_logp).sum(axis=1) / args.horizon  # per-token, per sequence
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
    print(f"LogLossBC fit times: {', '.join(f'{t:.2f}' for t in fit_times)} s "
          f"(median {fit_s:.2f} s; target < {TARGET_FIT_S:.0f} s: "
          f"{'met' if fit_s < TARGET_FIT_S else 'MISSED'}); iterations "
          f"{ours.info['iterations']}, grad norm {ours.info['grad_norm']:.1e}, "
          f"train loss {ours.info['log_loss_per_token']:.6f}")
    print(f"BC: {run.batches:,} batches = {samples:,} samples = "
          f"{samples / n_tokens:.3f} epochs in {run.train_s:.2f} s of training; "
          f"to_transitions {run.convert_s:.2f} s and {len(run.trace)} held-out checks "
          f"{run.eval_s:.2f} s (both excluded)")
    print(f"BC best - ours = {float(diff.mean()):+.6f} +- {se:.6f} nats/token "
          "(paired over held-out sequences)")
    print(f"target for BC: ours + {args.tolerance:g} = {target:.6f} nats/token; "
          f"budget {args.budget_factor:g} x {fit_s:.2f} s = {budget:.2f} s")
    if run.reached_at is not None:
        prev_s = run.trace[max(run.reached_at - 1, 0)][1]
        ratio = final_s / fit_s
        print(f"BC reached it after {final_s:.2f} s of training (first check within "
              f"tolerance; previous check {prev_s:.2f} s): LogLossBC is {ratio:.1f}x faster")
    else:
        print(f"BC did not reach it within {args.budget_factor:g}x our time ({run.train_s:.2f} s)"
              f"; best {best_loss:.6f} ({best_loss - ours_loss:+.6f} vs ours): "
              f"LogLossBC is > {run.train_s / fit_s:.1f}x faster")
    print(f"load avg at end {os.getloadavg()[0]:.2f} (timings are wall clock)")
    failed = [name for name, ok in [
        (f"fit < {TARGET_FIT_S:.0f} s", fit_s < TARGET_FIT_S),
        (f"BC > {TARGET_SPEEDUP:.0f}x slower",
         run.reached_at is None or final_s / fit_s > TARGET_SPEEDUP)] if not ok]
    if failed:
        raise SystemExit(f"bench_logloss: targets MISSED: {failed}")


if __name__ == "__main__":
    main()
