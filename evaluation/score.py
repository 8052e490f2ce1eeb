"""Score any policy against a task's expert: the same row a sweep stores.

    from evaluation.score import score
    row = score(task, policy)            # a dict: hellinger2, kl, tv, their errors, c_apx, ...

``policy`` is anything :func:`evaluation.adapters.as_sequence_model` takes (a suite policy, an
SB3 policy or algorithm, imitation's BC policy, a torch module mapping token contexts to
logits, any object with batched ``next_token_logprobs``). The row is
:func:`evaluation.bench.sweep.score_row`'s: D_H^2, KL, TV (exact with stderr 0 where the structure
allows, Monte Carlo with its standard error otherwise; ``eval_method`` says which), the
best-in-class value (:func:`evaluation.bench.sweep.compute_oracle`, read from ``store`` when it
holds it) and ``C_apx``. With ``store`` the row (and a new best-in-class value) is written to
it, keyed by ``label``; ``n_train = -1`` marks a policy not fitted by the suite, unless the
caller gives its training-set size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from evaluation.adapters import as_sequence_model
from evaluation.bench.store import ResultStore, canonical_json
from evaluation.bench.sweep import Job, compute_oracle, score_row
from ntp_envs.task import SequenceTask

__all__ = ["EXTERNAL_N_TRAIN", "score"]

EXTERNAL_N_TRAIN = -1
"""``n_train`` of a row scored from a policy the suite did not fit (size unknown)."""


@dataclasses.dataclass(frozen=True)
class _GivenTaskJob(Job):
    """A job on a task object already built (it need not rebuild from its env id)."""

    given: SequenceTask | None = dataclasses.field(default=None, compare=False, repr=False)

    def task(self) -> SequenceTask:  # type: ignore[override]
        assert self.given is not None
        return self.given


def score(
    task: SequenceTask,
    policy: Any,
    *,
    label: str = "policy",
    seed: int = 0,
    n_train: int = EXTERNAL_N_TRAIN,
    eval_samples: int = 100_000,
    oracle_starts: int = 16,
    store: ResultStore | None = None,
    causal: bool = False,
    config: dict[str, Any] | None = None,
    flag: str = "policy",
) -> dict[str, Any]:
    """The sweep row of ``policy`` on ``task`` (module doc). ``seed`` seeds Monte Carlo;
    ``config`` (JSON data) identifies the policy in the row key beside ``label``; ``causal``
    is passed to :class:`~evaluation.adapters.TorchLogitsModel`. One-line ValueError naming
    ``flag`` for a policy of another vocabulary or horizon."""
    model = as_sequence_model(task, policy, causal=causal, flag=flag)
    kwargs = {k: v for k, v in task.params.items() if k != "horizon"}
    identity = {"class": f"{type(policy).__module__}:{type(policy).__qualname__}",
                "label": label, **(config or {})}
    job = _GivenTaskJob(env_id=task.env_id, env_kwargs=kwargs, horizon=task.horizon,
                        agent=label, seed=seed, n_train=n_train, eval_samples=eval_samples,
                        oracle_starts=oracle_starts, agent_config=canonical_json(identity),
                        given=task)
    oracle = None if store is None else store.get_oracle(job.oracle_key)
    if oracle is None:
        oracle = compute_oracle(job)
        if store is not None:
            store.put_oracle(oracle)
    row = score_row(job, oracle, task, model, fit_seconds=0.0)
    if store is not None:
        store.put_result(row)
    return row
