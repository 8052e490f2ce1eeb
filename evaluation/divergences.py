"""``divergence(expert, learner, prompts)``: D_H^2, KL and TV between two sequence laws.

The laws are ``P = mu x expert`` and ``Q = mu x learner`` with a shared prompt law ``mu``.
Methods are tried in the order of :data:`METHODS`; each says whether it applies (and why
not) and computes a :class:`DivergenceResult`. To add one (e.g. ``"stats"``, sufficient
statistics for exchangeable laws), write a :class:`Method` and insert it into ``METHODS``
at its place in the ``"auto"`` order: ``deterministic`` (deterministic experts,
:mod:`evaluation.methods.deterministic`), ``enumerate``, ``stats`` (sufficient statistics of
binary exchangeable laws, :mod:`evaluation.methods.sufficient_stats`), ``chunk`` (chunk models
against finite-state or count-law experts, :mod:`evaluation.methods.chunk_dp`), ``dp``,
``monte_carlo``.

``DivergenceResult.method`` (a sweep row's ``eval_method``) says how the numbers were got:

* ``enumerate``: exact, every sequence of every prompt summed (``V**H`` small); with TV.
* ``stats``: exact, sums over the number of ones of binary exchangeable (count) laws; with TV.
* ``chunk``: exact, a recursion over chunk boundaries for chunk models; no TV.
* ``dp``: exact, a forward recursion over window states of finite-state models; no TV.
* ``deterministic_exact``: exact, a deterministic expert's one sequence per prompt scored
  for every prompt of a finite prompt law; with TV.
* ``deterministic_mc``: estimated, the same for a deterministic expert whose prompt law is
  too large to sum (``n_samples`` prompts drawn); each value with its standard error.
* ``monte_carlo``: estimated from ``n_samples`` expert sequences with exact sequence
  log-likelihoods; each value with its standard error (``D_H^2`` may leave ``[0, 2]``).
* ``deterministic``: rows stored before the two above were named apart, either of them;
  ``hellinger2_stderr`` is ``0`` for the exact sum and positive for the estimate.

Exact values are checked to lie in their ranges up to round-off (:mod:`evaluation.methods.roundoff`)
and ``*_stderr`` is ``0.0`` for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from evaluation.methods.chunk_dp import (
    MAX_CHUNK_DP_ELEMENTS,
    chunk_dp_elements,
    count_law_chunk_divergences,
    finite_state_chunk_divergences,
)
from evaluation.methods.deterministic import (
    deterministic_divergences,
    exact_over_support,
    is_deterministic,
)
from evaluation.methods.enumeration import MAX_SEQUENCES, enumerate_divergences
from evaluation.methods.finite_state_dp import finite_state_divergences
from evaluation.methods.monte_carlo import monte_carlo_divergences
from evaluation.methods.sufficient_stats import count_law_divergences
from ntp_envs.chunk_tables import ChunkTables
from ntp_envs.sequence_model import (
    CountLaw,
    FinitePrompts,
    FiniteStateTables,
    PromptDistribution,
    SequenceModel,
)
from ntp_envs.type_aliases import IntArray

__all__ = ["METHODS", "DivergenceResult", "Method", "divergence"]

T = TypeVar("T")

MAX_AUTO_ENUMERATE = 4096
"""``"auto"`` enumerates when ``V**H`` is at most this (it then also gives TV), and beyond it
(up to ``MAX_SEQUENCES``) for models without a structured exact form when enumeration scores no
more prefixes than Monte Carlo would sequences: ``C * V**(H-1) <= n_samples``."""

MAX_DP_STATES = 4096
"""Largest window-state count ``V**k`` the finite-state DP accepts."""


@dataclass(frozen=True)
class DivergenceResult:
    """Divergences of ``Q`` from ``P``; ``None`` where not computable, stderr 0.0 when exact."""

    hellinger2: float
    hellinger2_stderr: float
    kl: float | None
    kl_stderr: float | None
    tv: float | None
    tv_stderr: float | None
    method: str


@dataclass(frozen=True)
class Problem:
    """One request: the two models, the prompt law and the Monte Carlo settings."""

    expert: SequenceModel
    learner: SequenceModel
    prompts: PromptDistribution
    n_samples: int
    rng: np.random.Generator


@dataclass(frozen=True)
class Method:
    """``unavailable(problem, auto)`` is why the method cannot (or, in auto, should not) run,
    or ``None``; ``run(problem)`` computes the result."""

    name: str
    unavailable: Callable[[Problem, bool], str | None]
    run: Callable[[Problem], DivergenceResult]


# ------------------------------------------------------------------- deterministic expert


def _deterministic_unavailable(problem: Problem, auto: bool) -> str | None:
    if not is_deterministic(problem.expert, problem.prompts):
        return f"{type(problem.expert).__name__} is not deterministic (deterministic_sequences)"
    return None


def _deterministic_run(problem: Problem) -> DivergenceResult:
    est = deterministic_divergences(
        problem.expert, problem.learner, problem.prompts, problem.n_samples, problem.rng
    )
    exact = exact_over_support(problem.prompts, problem.expert.horizon)
    return DivergenceResult(*est, method="deterministic_exact" if exact else "deterministic_mc")


# ------------------------------------------------------------------------- enumeration


def _enumerate_unavailable(problem: Problem, auto: bool) -> str | None:
    if not isinstance(problem.prompts, FinitePrompts):
        return "enumeration needs a FinitePrompts prompt law"
    vocab, horizon = problem.expert.vocab_size, problem.expert.horizon
    if vocab**horizon > MAX_SEQUENCES:
        return f"enumeration needs V**H <= {MAX_SEQUENCES}, got {vocab}**{horizon}"
    if not auto or vocab**horizon <= MAX_AUTO_ENUMERATE:
        return None
    passes = problem.prompts.num_contexts * vocab ** (horizon - 1)
    if passes > problem.n_samples:
        return (f"auto enumerates V**H > {MAX_AUTO_ENUMERATE} only when C * V**(H-1) = "
                f"{passes} <= n_samples = {problem.n_samples}")
    structured = [m.name for m in METHODS if m.name in ("stats", "chunk", "dp")
                  and m.unavailable(problem, True) is None]
    if structured:
        return f"{structured[0]} is exact and cheaper at V**H > {MAX_AUTO_ENUMERATE}"
    return None


def _enumerate_run(problem: Problem) -> DivergenceResult:
    assert isinstance(problem.prompts, FinitePrompts)
    exact = enumerate_divergences(problem.expert, problem.learner, problem.prompts)
    return DivergenceResult(exact.hellinger2, 0.0, exact.kl, 0.0, exact.tv, 0.0, "enumerate")


# ------------------------------------------------------------------ sufficient statistics


def _align_contexts(model: SequenceModel, prompts: FinitePrompts, n_ctx: int, what: str,
                    reorder: Callable[[IntArray], T]) -> T | None | str:
    """Reorder the model's per-context ``what`` (``n_ctx`` rows) to the order of ``prompts``:
    ``reorder(index)`` when the model lists its own prompts in another order, ``None`` when the
    rows already line up, or why they cannot."""
    own = getattr(model, "prompts", None)
    if isinstance(own, FinitePrompts) and own.num_contexts == n_ctx:
        try:
            index = own.index_of(prompts.contexts)
        except ValueError as err:
            return f"{type(model).__name__} does not cover the prompt law: {err}"
        return None if np.array_equal(index, np.arange(n_ctx)) else reorder(index)
    if n_ctx != prompts.num_contexts:
        return (f"{type(model).__name__} has {what} for {n_ctx} contexts, "
                f"the prompt law has {prompts.num_contexts}")
    return None


def _aligned_count_law(model: SequenceModel, prompts: FinitePrompts) -> CountLaw | str:
    """The model's count law with contexts in the order of ``prompts``, or why there is none."""
    law = model.count_law()
    if law is None:
        return f"{type(model).__name__} exposes no count_law()"
    aligned = _align_contexts(model, prompts, law.log_seq.shape[0], "a count law",
                              lambda index: CountLaw(law.log_seq[index]))
    return law if aligned is None else aligned


def _stats_laws(problem: Problem) -> tuple[CountLaw, CountLaw] | str:
    if not isinstance(problem.prompts, FinitePrompts):
        return "sufficient statistics need a FinitePrompts prompt law"
    expert = _aligned_count_law(problem.expert, problem.prompts)
    if isinstance(expert, str):
        return expert
    learner = _aligned_count_law(problem.learner, problem.prompts)
    if isinstance(learner, str):
        return learner
    return expert, learner


def _stats_unavailable(problem: Problem, auto: bool) -> str | None:
    laws = _stats_laws(problem)
    return laws if isinstance(laws, str) else None


def _stats_run(problem: Problem) -> DivergenceResult:
    laws = _stats_laws(problem)
    assert not isinstance(laws, str) and isinstance(problem.prompts, FinitePrompts)
    exact = count_law_divergences(*laws, problem.prompts.log_probs)
    return DivergenceResult(exact.hellinger2, 0.0, exact.kl, 0.0, exact.tv, 0.0, "stats")


# --------------------------------------------------------------------- finite-state DP


def _aligned_tables(model: SequenceModel, prompts: FinitePrompts) -> FiniteStateTables | str:
    """The model's tables with contexts in the order of ``prompts``, or why there are none."""
    tables = model.finite_state()
    if tables is None:
        return f"{type(model).__name__} exposes no finite_state()"
    aligned = _align_contexts(
        model, prompts, tables.num_contexts, "tables",
        lambda index: FiniteStateTables(tables.logp[index], tables.memory, tables.horizon))
    return tables if aligned is None else aligned


def _dp_tables(problem: Problem) -> tuple[FiniteStateTables, FiniteStateTables] | str:
    if not isinstance(problem.prompts, FinitePrompts):
        return "the finite-state DP needs a FinitePrompts prompt law"
    expert = _aligned_tables(problem.expert, problem.prompts)
    if isinstance(expert, str):
        return expert
    learner = _aligned_tables(problem.learner, problem.prompts)
    if isinstance(learner, str):
        return learner
    states = expert.vocab_size ** max(expert.memory, learner.memory)
    if states > MAX_DP_STATES:
        return f"the finite-state DP needs V**k <= {MAX_DP_STATES} window states, got {states}"
    return expert, learner


def _dp_unavailable(problem: Problem, auto: bool) -> str | None:
    tables = _dp_tables(problem)
    return tables if isinstance(tables, str) else None


def _dp_run(problem: Problem) -> DivergenceResult:
    tables = _dp_tables(problem)
    assert not isinstance(tables, str) and isinstance(problem.prompts, FinitePrompts)
    hellinger2, kl = finite_state_divergences(*tables, problem.prompts.log_probs)
    return DivergenceResult(hellinger2, 0.0, kl, 0.0, None, None, "dp")


# ------------------------------------------------------------------------ chunk models


def _chunk_forms(problem: Problem) -> tuple[FiniteStateTables | CountLaw, ChunkTables] | str:
    """Expert form (finite-state tables or count law) and the learner's chunk tables, aligned
    with the prompt law, or why the chunk recursion does not apply."""
    if not isinstance(problem.prompts, FinitePrompts):
        return "the chunk recursion needs a FinitePrompts prompt law"
    learner = problem.learner.chunk_tables()
    if learner is None:
        return f"{type(problem.learner).__name__} exposes no chunk_tables()"
    aligned = _align_contexts(problem.learner, problem.prompts, learner.num_contexts,
                              "chunk tables", learner.select_contexts)
    if isinstance(aligned, str):
        return aligned
    learner = learner if aligned is None else aligned
    tables = _aligned_tables(problem.expert, problem.prompts)
    if not isinstance(tables, str):
        size = chunk_dp_elements(tables.memory, learner)
        if size > MAX_CHUNK_DP_ELEMENTS:
            return f"the chunk recursion needs C V^M V^K <= {MAX_CHUNK_DP_ELEMENTS}, got {size}"
        return tables, learner
    law = _aligned_count_law(problem.expert, problem.prompts)
    if isinstance(law, str):
        return f"the chunk recursion needs a finite-state or count-law expert ({tables}; {law})"
    if learner.memory != 0:
        return f"a count-law expert needs a memory-0 chunk model, got memory {learner.memory}"
    return law, learner


def _chunk_unavailable(problem: Problem, auto: bool) -> str | None:
    forms = _chunk_forms(problem)
    return forms if isinstance(forms, str) else None


def _chunk_run(problem: Problem) -> DivergenceResult:
    forms = _chunk_forms(problem)
    assert not isinstance(forms, str) and isinstance(problem.prompts, FinitePrompts)
    expert, learner = forms
    log_mu = problem.prompts.log_probs
    if isinstance(expert, FiniteStateTables):
        hellinger2, kl = finite_state_chunk_divergences(expert, learner, log_mu)
    else:
        hellinger2, kl = count_law_chunk_divergences(expert, learner, log_mu)
    return DivergenceResult(hellinger2, 0.0, kl, 0.0, None, None, "chunk")


# ------------------------------------------------------------------------- Monte Carlo


def _monte_carlo_run(problem: Problem) -> DivergenceResult:
    est = monte_carlo_divergences(
        problem.expert, problem.learner, problem.prompts, problem.n_samples, problem.rng
    )
    return DivergenceResult(*est, method="monte_carlo")


METHODS: list[Method] = [
    Method("deterministic", _deterministic_unavailable, _deterministic_run),
    Method("enumerate", _enumerate_unavailable, _enumerate_run),
    Method("stats", _stats_unavailable, _stats_run),
    Method("chunk", _chunk_unavailable, _chunk_run),
    Method("dp", _dp_unavailable, _dp_run),
    Method("monte_carlo", lambda problem, auto: None, _monte_carlo_run),
]
"""Exact and approximate methods, in the order ``"auto"`` tries them."""


def divergence(
    expert: SequenceModel,
    learner: SequenceModel,
    prompts: PromptDistribution,
    *,
    method: str = "auto",
    n_samples: int = 100_000,
    rng: np.random.Generator | int | None = None,
) -> DivergenceResult:
    """``D_H^2``, ``KL(P* || Q)`` and TV between ``P* = mu x expert`` and ``Q = mu x learner``.

    ``method`` is ``"auto"`` (the first applicable of :data:`METHODS`) or a method name.
    ``n_samples`` and ``rng`` (a Generator or seed; ``None`` means seed 0) serve Monte Carlo.
    """
    names = [m.name for m in METHODS]
    if method != "auto" and method not in names:
        raise ValueError(f"method must be one of {['auto', *names]}, got {method!r}")
    for attr in ("vocab_size", "horizon"):
        if getattr(expert, attr) != getattr(learner, attr):
            raise ValueError(f"expert and learner must share {attr}: "
                             f"{getattr(expert, attr)} != {getattr(learner, attr)}")
    if int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(
        0 if rng is None else rng
    )
    problem = Problem(expert, learner, prompts, int(n_samples), generator)
    if method == "auto":
        for candidate in METHODS:
            if candidate.unavailable(problem, True) is None:
                return candidate.run(problem)
        raise ValueError("no divergence method applies")  # unreachable: MC always applies
    chosen = METHODS[names.index(method)]
    reason = chosen.unavailable(problem, False)
    if reason is not None:
        raise ValueError(f"method={method!r} does not apply: {reason}")
    return chosen.run(problem)
