"""Scoring a transformers model with the suite: batched teacher-forced log-likelihoods.

A randomly initialised 2-layer GPT-2 (:func:`agents.hf_lm.build_model`, no download) on
``ARLinear-v0`` with ``vocab_size=4, horizon=8``: exact scoring enumerates the ``4^8 = 65,536``
sequences of each of the task's contexts and needs each one's log-likelihood under the model
(:meth:`~ntp_envs.sequence_model.SequenceModel.extension_logprobs`: one teacher-forced pass
per prefix of length ``H - 1`` scores its ``V`` completions); Monte Carlo needs
:meth:`agents.hf_lm.HFSequenceModel.sequence_logprob` on sampled sequences. Prints

* sequences/s of those log-likelihoods over the whole support (one context's 65,536), with
  one torch thread and with all cores, ``--repeats`` times (median), and with one thread per
  inference chunk size (:data:`agents.lm_inputs.CPU_CHUNK_TOKENS`, the default, and others);
* the seconds of the whole exact score (:func:`evaluation.divergences.divergence` with
  ``method="enumerate"``: D_H^2, KL, TV over every context's 65,536 sequences; target < 10 s)
  and of :func:`evaluation.score.score`'s row (its ``auto`` method enumerates a network's law
  past ``V**H = MAX_AUTO_ENUMERATE`` when that scores no more prefixes than Monte Carlo would
  sequences: ``C * V**(H-1) <= eval_samples``), plus its best-in-class oracle.

Run: ``python benchmarks/bench_hf_score.py [--repeats R] [--n-embd W]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import transformers

import agents.lm_inputs
from agents.hf_lm import HFSequenceModel, build_model
from evaluation.divergences import divergence
from evaluation.methods.enumeration import sequences_at
from evaluation.score import score
from ntp_envs import make_task

TARGET_SCORE_S = 10.0
TASK_KWARGS = {"vocab_size": 4, "horizon": 8}


def sequences_per_second(reader: HFSequenceModel, context: np.ndarray, tokens: np.ndarray,
                         threads: int) -> float:
    """Sequences per second of ``reader.sequence_logprob`` on ``tokens`` after ``context``."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prompts = np.repeat(context[None], len(tokens), axis=0)
        start = time.perf_counter()
        logp = reader.sequence_logprob(prompts, tokens)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    if not np.isfinite(logp).all():
        raise RuntimeError("non-finite log-likelihoods")
    return len(tokens) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timings of each measurement")
    parser.add_argument("--n-embd", type=int, default=64, help="width of the 2-layer model")
    args = parser.parse_args()
    if args.repeats < 1 or args.n_embd < 4 or args.n_embd % 4:
        parser.error(f"--repeats must be >= 1 and --n-embd a multiple of 4 (4 heads), got "
                     f"{args.repeats} and {args.n_embd}")
    task = make_task("ntp_envs/ARLinear-v0", **TASK_KWARGS)
    model = build_model(task, "gpt2", {"n_layer": 2, "n_head": 4, "n_embd": args.n_embd})
    reader = HFSequenceModel(model, task, "tf", torch.device("cpu"))
    support = task.vocab_size ** task.horizon
    tokens = sequences_at(np.arange(support), task.vocab_size, task.horizon)
    contexts = task.prompts.contexts
    cores = os.cpu_count() or 1
    parameters = sum(p.numel() for p in model.parameters())
    print(f"# {os.uname().machine}, {cores} cores, load average {os.getloadavg()}; torch "
          f"{torch.__version__}, transformers {transformers.__version__}")
    print(f"ARLinear-v0 {TASK_KWARGS}: {len(contexts)} contexts x {support:,} sequences; "
          f"gpt2 n_layer 2, n_embd {args.n_embd}: {parameters:,} parameters")
    for threads in sorted({1, cores}):
        rates = [sequences_per_second(reader, contexts[0], tokens, threads)
                 for _ in range(args.repeats)]
        print(f"log-likelihoods, {threads} thread(s): {np.median(rates):,.0f} sequences/s "
              f"(median of {args.repeats}: {', '.join(f'{r:,.0f}' for r in rates)})")
    default = agents.lm_inputs.CPU_CHUNK_TOKENS
    for chunk in (1024, default, 4 * default, 16 * default):
        agents.lm_inputs.CPU_CHUNK_TOKENS = chunk
        rates = [sequences_per_second(reader, contexts[0], tokens, 1)
                 for _ in range(args.repeats)]
        print(f"log-likelihoods, 1 thread, chunks of {chunk:,} tokens"
              f"{' (the default)' if chunk == default else ''}: {np.median(rates):,.0f} "
              f"sequences/s (median of {args.repeats})")
    agents.lm_inputs.CPU_CHUNK_TOKENS = default
    torch.set_num_threads(1)
    for repeat in range(args.repeats):
        start = time.perf_counter()
        exact = divergence(task.expert, reader, task.prompts, method="enumerate")
        seconds = time.perf_counter() - start
        print(f"exact score (1 thread, method enumerate), run {repeat + 1}: {seconds:.2f} s "
              f"({'within' if seconds < TARGET_SCORE_S else 'over'} the "
              f"{TARGET_SCORE_S:.0f}-s target; {len(contexts) * support / seconds:,.0f} "
              f"sequences/s): D_H^2 {exact.hellinger2:.6f}, KL {exact.kl:.4f}, TV {exact.tv:.4f}")
        start = time.perf_counter()
        row = score(task, model, seed=repeat)
        seconds = time.perf_counter() - start
        print(f"score(task, model) (1 thread, method auto -> {row['eval_method']}; "
              f"eval_samples {row['eval_samples']:,}), run {repeat + 1}: "
              f"{seconds:.2f} s in all, of which evaluation {row['eval_seconds']:.2f} s and the "
              f"best-in-class oracle ({row['oracle_method']}) the rest; D_H^2 "
              f"{row['hellinger2']:.6f} +- {row['hellinger2_stderr']:.6f}")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
