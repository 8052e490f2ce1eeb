"""The return a policy earns in expectation in its task's env (the objective RL maximises).

``J(pi) = E_{x ~ mu, a_{1:H} ~ pi}[sum_h r_h]`` with the env's rewards
(:func:`ntp_envs.vector.sequence_rewards`): by default the expert's token log-probabilities,
so ``J(pi) = -(KL(P^pi || P*) + entropy(P^pi))`` up to the reward floor. Exact by
enumeration when the prompt law is finite and ``V**H`` is small, Monte Carlo (with a
standard error) otherwise.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from evaluation.divergences import MAX_AUTO_ENUMERATE
from evaluation.methods.enumeration import MAX_SEQUENCES, sequences_at
from ntp_envs.sequence_model import FinitePrompts, SequenceModel
from ntp_envs.task import SequenceTask
from ntp_envs.vector import sequence_rewards

__all__ = ["ReturnEstimate", "expected_return"]


class ReturnEstimate(NamedTuple):
    """``J(pi)``, its standard error (0.0 when exact) and the method used."""

    mean: float
    stderr: float
    method: str


def expected_return(
    task: SequenceTask,
    policy: SequenceModel,
    *,
    method: str = "auto",
    n_samples: int = 100_000,
    rng: np.random.Generator | int | None = None,
) -> ReturnEstimate:
    """``J(policy)`` in ``task``'s env. ``method="auto"`` enumerates (exact) when the prompt
    law is finite and ``V**H <= 4096``, else runs ``"monte_carlo"`` on ``n_samples``
    episodes (``rng``, a Generator or seed; ``None`` means seed 0); either can be forced."""
    if (policy.vocab_size, policy.horizon) != (task.vocab_size, task.horizon):
        raise ValueError("policy must share the task's vocab_size and horizon")
    if method not in ("auto", "enumerate", "monte_carlo"):
        raise ValueError(f"method must be one of ['auto', 'enumerate', 'monte_carlo'], "
                         f"got {method!r}")
    if int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples}")
    vocab, horizon = task.vocab_size, task.horizon
    finite = isinstance(task.prompts, FinitePrompts)
    if method == "enumerate" and not (finite and vocab**horizon <= MAX_SEQUENCES):
        raise ValueError(f"method='enumerate' needs a finite prompt law and V**H <= "
                         f"{MAX_SEQUENCES}, got {vocab}**{horizon}")
    if method == "enumerate" or (
        method == "auto" and finite and vocab**horizon <= MAX_AUTO_ENUMERATE
    ):
        n_seq = vocab**horizon
        flat = np.arange(task.prompts.num_contexts * n_seq)
        ctx, tokens = flat // n_seq, sequences_at(flat % n_seq, vocab, horizon)
        prompts = task.prompts.contexts[ctx]
        weights = np.exp(task.prompts.log_probs[ctx] + policy.sequence_logprob(prompts, tokens))
        returns = sequence_rewards(task, prompts, tokens).sum(axis=1)
        return ReturnEstimate(float(weights @ returns), 0.0, "enumerate")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(
        0 if rng is None else rng
    )
    prompts = task.prompts.sample(int(n_samples), generator)
    returns = sequence_rewards(task, prompts, policy.sample(prompts, generator)).sum(axis=1)
    return ReturnEstimate(float(returns.mean()),
                          float(returns.std(ddof=1) / math.sqrt(len(returns))), "monte_carlo")
