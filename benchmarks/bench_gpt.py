"""Speed of the path-star GPT agents (``agents/gpt.py``) on this machine's CPU.

Times ``--steps`` training steps of the registered CPU configuration (``CPU_CONFIG``) on
``PathStar-v0`` defaults, single-threaded (what every sweep backend runs) and with all
cores, and the inference throughput of the measurements (sequences scored per second).
Extrapolates the full fit (``CPU_CONFIG.steps`` steps) and prints the load average, since
on a shared machine the time per step grows with the other processes' load.
The agents run transformers' GPT-NeoX (:data:`agents.gpt.MODEL_TYPE`, rotary positions); the
same training step of the hand-written GPT they ran on before
(``benchmarks/handwritten_gpt.py``: same sizes, rotary positions, same loop
:func:`agents.sequence_training.train_next_token`) and of transformers' GPT-2 at the same
sizes (``hf:gpt2``, learned absolute positions) are timed beside it, and each one's ratio to
the hand-written net printed: issue 21 would keep the hand-written net above
:data:`KEEP_RATIO`. All are timed over their training loops only, alternately, ``--repeats``
times each; medians are printed.
Run: ``python benchmarks/bench_gpt.py [--steps N] [--repeats R]``.
Target: a full fit in ~10 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np
import torch
import transformers

from agents.gpt import CPU_CONFIG, MODEL_TYPE, gpt_agent
from agents.hf_lm import HFAgent
from agents.sequence_training import Schedule, train_next_token
from evaluation.metrics.pathstar import pathstar_metrics
from experts import collect_demonstrations
from ntp_envs import make_task

try:
    from handwritten_gpt import GPTNet
except ImportError:  # imported as benchmarks.bench_gpt
    from benchmarks.handwritten_gpt import GPTNet

TARGET_FIT_S = 600.0
KEEP_RATIO = 1.5
"""Issue 21: keep the hand-written GPT when transformers' is more than this much slower."""
KINDS = ("hand-written", f"gpt-tf ({MODEL_TYPE})", "hf:gpt2")
"""The reference net, the agents' net and GPT-2 at the same sizes."""


def handwritten_seconds(steps: int, demos, task) -> tuple[float, int]:  # noqa: ANN001
    """Training-loop seconds of the hand-written GPT for ``steps`` steps (the agents' loop and
    inputs; the dummy token one past the prompt and target words) and its parameter count."""
    config = CPU_CONFIG
    dummy = max(task.prompt_vocab_size, task.vocab_size)
    torch.manual_seed(0)
    net = GPTNet(dummy + 1, task.vocab_size, task.prompts.prompt_length + task.horizon - 1,
                 config)
    start = task.prompts.prompt_length - 1
    x_all = torch.as_tensor(np.concatenate([demos.prompts, demos.tokens[:, :-1]], axis=1))
    y_all = torch.as_tensor(np.array(demos.tokens))
    schedule = Schedule(steps, config.batch_size, config.lr, config.weight_decay,
                        config.warmup, config.grad_clip)
    began = time.perf_counter()
    train_next_token(net, lambda x: net(x)[:, start:], x_all, y_all, schedule,
                     torch.Generator().manual_seed(0))
    return time.perf_counter() - began, int(sum(p.numel() for p in net.parameters()))


def time_steps(kind: str, steps: int, threads: int, demos, task) -> tuple[float, int]:  # noqa: ANN001
    """Seconds per training step of ``kind`` with ``threads`` torch threads (training loop
    only) and its parameter count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if kind == "hand-written":
            seconds, parameters = handwritten_seconds(steps, demos, task)
            return seconds / steps, parameters
        agent = gpt_agent("tf", replace(CPU_CONFIG, steps=steps))
        if kind == "hf:gpt2":
            agent = HFAgent(model_type="gpt2", sizes={"n_layer": CPU_CONFIG.n_layer,
                                                      "n_head": CPU_CONFIG.n_head,
                                                      "n_embd": CPU_CONFIG.d_model},
                            mode="tf", steps=steps, batch_size=CPU_CONFIG.batch_size,
                            lr=CPU_CONFIG.lr, weight_decay=CPU_CONFIG.weight_decay,
                            warmup=CPU_CONFIG.warmup, grad_clip=CPU_CONFIG.grad_clip)
        info = agent.fit(task, demos, np.random.default_rng(0)).info
        return info["train_seconds"] / steps, int(info["parameters"])
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps timed")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each net")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error(f"--steps and --repeats must be integers >= 1, got {args.steps} and "
                     f"{args.repeats}")
    task = make_task("ntp_envs/PathStar-v0")
    demos = collect_demonstrations(task, 20_000, 0)
    cores = os.cpu_count() or 1
    print(f"load average before: {os.getloadavg()}, cores: {cores}, config: {CPU_CONFIG}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    for threads in sorted({1, cores}):
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        params: dict[str, int] = {}
        for _ in range(args.repeats):  # alternate, so that load changes hit both alike
            for kind in KINDS:
                per_step, params[kind] = time_steps(kind, args.steps, threads, demos, task)
                times[kind].append(per_step)
        median = {kind: float(np.median(v)) for kind, v in times.items()}
        for kind in KINDS:
            full = median[kind] * CPU_CONFIG.steps
            print(f"{threads} thread(s) {kind:>18}: {median[kind] * 1e3:6.1f} ms/step (median of "
                  f"{args.repeats}: {', '.join(f'{t * 1e3:.1f}' for t in times[kind])}), "
                  f"{params[kind]:,} parameters -> full fit ({CPU_CONFIG.steps} steps) "
                  f"{full / 60:.1f} min ({'within' if full <= TARGET_FIT_S else 'over'} the "
                  f"{TARGET_FIT_S / 60:.0f}-min target)")
        for kind in KINDS[1:]:
            ratio = median[kind] / median["hand-written"]
            print(f"{threads} thread(s) ratio {kind} / hand-written: {ratio:.2f} "
                  f"({'above' if ratio > KEEP_RATIO else 'within'} the {KEEP_RATIO}x bound)")
        print(f"load average now {os.getloadavg()[0]:.1f}")
    policy = gpt_agent("tf", replace(CPU_CONFIG, steps=1)).fit(task, demos,
                                                              np.random.default_rng(0))
    torch.set_num_threads(1)
    start = time.perf_counter()
    pathstar_metrics(task, policy, n_prompts=5000, rng=0)
    seconds = time.perf_counter() - start
    print(f"measurements (1 thread): 5000 graphs in {seconds:.1f} s "
          f"({5000 * 2 * task.horizon / seconds:.0f} prefixes scored per second)")


if __name__ == "__main__":
    main()
