"""Speed of the CoT pieces: linear-ar's exact per-position fits, the deterministic evaluator
(exact over all 2^16 parity prompts), greedy answer accuracy, and mlp-ar's training epochs.

    python benchmarks/bench_cot.py
"""

from __future__ import annotations

import time

import numpy as np

from agents.linear_ar import LinearAR
from agents.mlp_ar import MLPAR
from evaluation.accuracy import answer_accuracy
from evaluation.divergences import divergence
from experts import collect_demonstrations
from ntp_envs import make_task


def _timed(label: str, fn):  # noqa: ANN001, ANN202 - a tiny timing helper
    start = time.perf_counter()
    value = fn()
    print(f"{label}: {time.perf_counter() - start:.2f} s")
    return value


def main() -> None:
    for cot, stride in (("count", 16), ("count", 4), ("xor", 1)):
        task = make_task("ntp_envs/ParityCoT-v0", cot=cot, cot_stride=stride)
        demos = collect_demonstrations(task, 2000, 0)
        policy = _timed(f"linear-ar fit, parity 16/8 cot={cot} stride {stride} (H={task.horizon},"
                        " n=2000)", lambda t=task, d=demos: LinearAR().fit(t, d))
        result = _timed("  D_H^2, KL, TV exact over 65536 prompts",
                        lambda t=task, p=policy: divergence(t.expert, p, t.prompts))
        acc = _timed("  greedy answer accuracy over 65536 prompts",
                     lambda t=task, p=policy: answer_accuracy(t, p))
        print(f"  D_H^2 {result.hellinger2:.4f} ({result.method}), accuracy {acc.accuracy:.4f}, "
              f"{policy.info['parameters']} weights, {policy.info['iterations']} Newton steps")
    task = make_task("ntp_envs/MultiplicationCoT-v0", answer_order="lsd")
    for epochs in (1, 2):
        agent = MLPAR(epochs=epochs)
        policy = _timed(f"mlp-ar fit, multiplication 2 x 2 long CoT (H={task.horizon}, all "
                        f"{task.prompts.num_contexts} training pairs), {epochs} epoch(s)",
                        lambda a=agent: a.fit(task, None, np.random.default_rng(0)))
    acc = _timed("  held-out greedy accuracy over "
                 f"{task.test_prompts.num_contexts} pairs", lambda: answer_accuracy(task, policy))
    print(f"  accuracy after 2 epochs {acc.accuracy:.4f}, {policy.info['parameters']} parameters")


if __name__ == "__main__":
    main()
