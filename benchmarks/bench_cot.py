"""Speed of the CoT pieces. Side by side on ParityCoT count-CoT fits (``linear-ar``'s
per-position multinomial regressions, l2 = 1e-4): the new solver path (L-BFGS on exact
gradients, positions on threads), the old path (explicit-Hessian Newton, ``solver="newton"``)
and scikit-learn's ``LogisticRegression`` (lbfgs, the same l2 as ``C = 1 / (l2 * total
weight)``, no intercept, the same rows and weights, a zero-weight row per never-seen output so
that it fits the same ``V`` outputs), each with its fit time, final per-token log loss and
greedy answer accuracy (exact over all prompts where the evaluator lists them, else on the
same sampled prompts for every path). Then the deterministic evaluator and
``mlp-ar``'s per-epoch cost on 3 x 3 multiplication (``--mult3``: its whole fit).

    python benchmarks/bench_cot.py [--bits 16 20] [--skip-old-large] [--mult3] [--threads N]

Exits non-zero when a check fails: a position unconverged (gradient max-norm above 1e-11),
the new per-token log loss not within 1e-6 of the old path's optimum, or a different answer
accuracy. Every loss gap is also bounded without the old path: the objective is
``l2``-strongly convex, so ``f - f* <= |grad|^2 / (2 l2)`` at the returned weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.special import log_softmax
from threadpoolctl import threadpool_limits

from agents.linear_ar import LinearAR, LinearARPolicy, PositionProblems, position_threads
from agents.mlp_ar import MLPAR
from evaluation.divergences import divergence
from evaluation.metrics.accuracy import answer_accuracy
from experts import collect_demonstrations
from ntp_envs import make_task
from ntp_envs.task import SequenceTask

L2 = 1e-4
LOSS_TOL = 1e-6
GTOL = 1e-11
CASES = (  # (num_bits, subset_size, demonstrations, fit-time target in s)
    (16, 8, 4000, 3.0),
    (20, 10, 20_000, 30.0),
)
MULT3_DEMOS = 20_000


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _design(rows: np.ndarray, num_inputs: int) -> csr_matrix:
    mask = rows >= 0
    index = np.broadcast_to(np.arange(rows.shape[0])[:, None], rows.shape)
    return csr_matrix((np.ones(int(mask.sum())), (index[mask], rows[mask])),
                      shape=(rows.shape[0], num_inputs))


def _log_loss(rows: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> float:
    """Weighted per-token log loss of the weights ``(inputs, V)`` on one position's rows."""
    logp = log_softmax(np.asarray(_design(rows, weights.shape[0]) @ weights), axis=1)
    return -float((counts * logp).sum() / counts.sum())


def sklearn_fit(task: SequenceTask, problems: PositionProblems) -> tuple[LinearARPolicy, float]:
    """scikit-learn's lbfgs on every position's regression (one thread); policy and seconds."""
    from sklearn.linear_model import LogisticRegression

    inputs, weights, seconds = [], [], 0.0
    vocab = task.vocab_size
    for h in range(task.horizon):
        index, rows, counts = problems(h)
        r, a = np.nonzero(counts)
        unseen = np.setdiff1d(np.arange(vocab), a)  # zero-weight rows: every output a class
        x = _design(np.concatenate([rows[r], np.full((len(unseen), rows.shape[1]), -1)]),
                    len(index))
        y = np.concatenate([a, unseen])
        w = np.concatenate([counts[r, a], np.zeros(len(unseen))])
        model = LogisticRegression(C=1.0 / (L2 * w.sum()), fit_intercept=False, tol=GTOL,
                                   max_iter=100_000)
        _, took = _timed(lambda m=model, x=x, y=y, w=w: m.fit(x, y, sample_weight=w))
        seconds += took
        full = np.zeros((len(index), vocab))
        full[:, model.classes_] = model.coef_.T
        inputs.append(index)
        weights.append(full)
    return LinearARPolicy(task, inputs, weights, {"agent": "sklearn-lbfgs"}), seconds


@dataclass
class Run:
    """One path's fit of every position: its policy, seconds, per-token loss, accuracy."""

    policy: LinearARPolicy
    seconds: float
    loss: float = float("nan")
    objective: float = float("nan")
    accuracy: float = float("nan")


def compare_solvers(args: argparse.Namespace) -> bool:
    """The side-by-side table; True when every check passed."""
    ok = True
    threads = position_threads(args.threads, 10**6)
    print(f"linear-ar on ParityCoT count CoT, l2 = {L2:g}; new path on {threads} thread(s) "
          "(and on one), old path and scikit-learn on one")
    for bits, subset, n, target in [case for case in CASES if case[0] in args.bits]:
        task = make_task("ntp_envs/ParityCoT-v0", num_bits=bits, subset_size=subset,
                         cot="count")
        demos = collect_demonstrations(task, n, 0)
        problems = PositionProblems(task, demos)
        print(f"\n{bits} bits, subset {subset}, {n} demonstrations (H = {task.horizon}, "
              f"V = {task.vocab_size}):")
        runs = {"new (L-BFGS)": Run(*_timed(lambda t=task, d=demos: LinearAR(
            num_threads=args.threads).fit(t, d)))}
        with threadpool_limits(limits=1):
            runs["new, 1 thread"] = Run(*_timed(lambda t=task, d=demos: LinearAR(
                num_threads=1).fit(t, d)))
            if not (args.skip_old_large and bits > CASES[0][0]):
                runs["old (Newton)"] = Run(*_timed(lambda t=task, d=demos: LinearAR(
                    solver="newton", num_threads=1).fit(t, d)))
            runs["scikit-learn lbfgs"] = Run(*sklearn_fit(task, problems))
        print(f"  {'path':<22}{'fit s':>9}{'log loss/token':>20}{'+ l2 term':>20}"
              f"{'accuracy':>10}{'grad max':>10}{'iterations':>11}")
        for label, run in runs.items():
            run.loss = float(np.mean([_log_loss(*problems(h)[1:], run.policy.weights[h])
                                      for h in range(task.horizon)]))
            acc = answer_accuracy(task, run.policy, rng=0)  # the same prompts for every path
            run.accuracy = acc.accuracy
            run.objective = run.loss + 0.5 * L2 * float(np.mean(
                [np.sum(w**2) for w in run.policy.weights]))
            info = run.policy.info
            grad = f"{info['grad_norm']:.1e}" if "grad_norm" in info else "-"
            print(f"  {label:<22}{run.seconds:9.2f}{run.loss:20.15f}{run.objective:20.15f}"
                  f"{run.accuracy:10.4f}{grad:>10}{info.get('iterations', '-'):>11}")
        print(f"  (accuracy {'exact over' if acc.stderr == 0 else 'sampled on'} "
              f"{acc.num_prompts} prompts)")
        new = runs["new (L-BFGS)"]
        info = new.policy.info
        dims = max(w.size for w in new.policy.weights)
        print(f"  new path: fit {new.seconds:.2f} s (target < {target:g} s: "
              f"{'met' if new.seconds < target else 'MISSED'}); every position within "
              f"|grad|^2 / (2 l2) <= {dims * info['grad_norm'] ** 2 / (2 * L2):.1e} of its "
              "optimum objective")
        if not info["converged"]:
            print(f"  CHECK FAILED: a position unconverged (grad max {info['grad_norm']:.1e})")
            ok = False
        if "old (Newton)" in runs:
            old = runs["old (Newton)"]
            gap = abs(new.loss - old.loss)
            print(f"  new vs old: |loss gap| {gap:.1e} (check <= {LOSS_TOL:g}), accuracy "
                  f"{new.accuracy:.6f} vs {old.accuracy:.6f}, speed-up "
                  f"{old.seconds / new.seconds:.1f}x")
            if gap > LOSS_TOL or new.accuracy != old.accuracy:
                print("  CHECK FAILED: the new path differs from the old optimum")
                ok = False
        sk = runs["scikit-learn lbfgs"]
        print(f"  scikit-learn: loss {sk.loss - new.loss:+.1e}, objective (with the l2 term) "
              f"{sk.objective - new.objective:+.1e} from the new path's, "
              f"{sk.seconds / runs['new, 1 thread'].seconds:.1f}x the new path's one-thread time")
    return ok


def evaluator_timings() -> None:
    """The exact evaluator and greedy accuracy over all 2^16 ParityCoT prompts."""
    task = make_task("ntp_envs/ParityCoT-v0", cot="count", cot_stride=4)
    policy = LinearAR().fit(task, collect_demonstrations(task, 2000, 0))
    result, took = _timed(lambda: divergence(task.expert, policy, task.prompts))
    print(f"\nD_H^2, KL, TV exact over {task.prompts.num_contexts} prompts (H = {task.horizon}):"
          f" {took:.2f} s (D_H^2 {result.hellinger2:.4f}, {result.method})")
    acc, took = _timed(lambda: answer_accuracy(task, policy))
    print(f"greedy answer accuracy over {acc.num_prompts} prompts: {took:.2f} s "
          f"({acc.accuracy:.4f})")


def mlp_timings(args: argparse.Namespace) -> None:
    """mlp-ar's cost per epoch on 3 x 3 multiplication (long CoT, lsd, 20,000 demonstrations)
    and, with ``--mult3``, the whole fit with its defaults and its held-out accuracy."""
    task = make_task("ntp_envs/MultiplicationCoT-v0", num_digits=3, cot="long",
                     answer_order="lsd")
    demos = collect_demonstrations(task, MULT3_DEMOS, 0)
    print(f"\nmlp-ar, 3 x 3 multiplication, long CoT, lsd (H = {task.horizon}), "
          f"{MULT3_DEMOS} demonstrations:")
    for batch in (64, MLPAR.batch_size):
        agent = MLPAR(epochs=1, batch_size=batch, validation=0.0)
        policy, took = _timed(lambda a=agent: a.fit(task, demos, np.random.default_rng(0)))
        print(f"  one epoch at batch {batch}: {took:.1f} s ({policy.info['parameters']} "
              "parameters)")
    if not args.mult3:
        return
    policy, took = _timed(lambda: MLPAR().fit(task, demos, np.random.default_rng(0)))
    info = policy.info
    acc, acc_s = _timed(lambda: answer_accuracy(task, policy, n_samples=5000, rng=0))
    print(f"  fit with the defaults: {took:.0f} s, {info['epochs_run']} epochs (best "
          f"{info['best_epoch']}), validation accuracy {info['validation_accuracy']:.4f} on "
          f"{info['validation_rows']} held-back demonstrations; held-out accuracy "
          f"{acc.accuracy:.4f} +- {acc.stderr:.4f} ({acc.num_prompts} {acc.split} pairs, "
          f"{acc_s:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, nargs="*", choices=[c[0] for c in CASES],
                        default=[c[0] for c in CASES], help="the cases to run (prompt bits)")
    parser.add_argument("--skip-old-large", action="store_true",
                        help="no old-path fit on the 20-bit case (about 12 minutes); the "
                             "strong-convexity bound still certifies the new loss")
    parser.add_argument("--mult3", action="store_true",
                        help="also the whole 3 x 3 mlp-ar fit (target: about 5 minutes)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the new path (default: the available cores)")
    args = parser.parse_args(argv)
    ok = compare_solvers(args) if args.bits else True
    evaluator_timings()
    mlp_timings(args)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
