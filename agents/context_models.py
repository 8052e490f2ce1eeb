"""Full-context autoregressive learners' shared parts: the one-hot context and its data.

At position ``h`` the context is ``(x, a_{<h})``, ``L + h`` tokens; its one-hot encoding
has a 1 at index ``j * V_in + token_j`` for every context position ``j``, with
``V_in = max(prompt vocabulary, V)``. ``linear-ar`` (logits linear in this encoding, one
weight matrix per position ``h``, as in Malach 2023) and ``mlp-ar`` (a shallow MLP on it)
both read it. Inputs that never occur in the training data at a position carry no
information: learners index only the observed ones (:class:`ObservedInputs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import log_softmax

from agents.base import demonstration_arrays
from ntp_envs.sequence_model import FinitePrompts, SequenceModel
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

MAX_POPULATION_ROWS = 2**17
"""Largest prompt support a population fit (one row per prompt) accepts."""


@dataclass(frozen=True)
class ContextOneHot:
    """The one-hot encoding of ``(x, a_{<h})`` (module doc)."""

    prompt_length: int
    horizon: int
    input_vocab: int

    @classmethod
    def of(cls, task: SequenceTask) -> ContextOneHot:
        """The encoding for ``task``'s prompts and tokens."""
        return cls(task.prompts.prompt_length, task.horizon,
                   max(task.prompt_vocab_size, task.vocab_size))

    def num_inputs(self, h: int) -> int:
        """Length ``(L + h) V_in`` of the encoding at position ``h``."""
        return (self.prompt_length + h) * self.input_vocab

    def active(self, prompts: IntArray, prefixes: IntArray) -> IntArray:
        """Indices of the ones, ``(B, L + h)``: ``j * V_in + token_j``."""
        context = np.concatenate([np.asarray(prompts, dtype=np.int64),
                                  np.asarray(prefixes, dtype=np.int64)], axis=1)
        if context.shape[1] > self.prompt_length + self.horizon - 1:
            raise ValueError(f"context must hold at most {self.prompt_length + self.horizon - 1}"
                             f" tokens, got {context.shape[1]}")
        if context.size and (context.min() < 0 or context.max() >= self.input_vocab):
            raise ValueError(f"context tokens must lie in [0, {self.input_vocab - 1}]")
        return context + np.arange(context.shape[1]) * self.input_vocab


@dataclass(frozen=True)
class ObservedInputs:
    """The sorted one-hot indices seen in training at one position, and the lookup into them."""

    observed: IntArray

    @classmethod
    def of(cls, active: IntArray) -> ObservedInputs:
        return cls(np.unique(np.asarray(active, dtype=np.int64)))

    def __len__(self) -> int:
        return int(self.observed.size)

    def lookup(self, active: IntArray) -> IntArray:
        """Compact index of each entry of ``active`` (``-1`` where never observed)."""
        if not len(self):
            return np.full(np.shape(active), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.observed, active), len(self) - 1)
        return np.where(self.observed[pos] == active, pos, -1)

    def check(self, num_inputs: int, name: str) -> None:
        """ValueError (naming ``name``) unless the indices are sorted, distinct and in range."""
        obs = self.observed
        if obs.ndim != 1 or obs.dtype.kind not in "iu" or (obs.size and (
                obs.min() < 0 or obs.max() >= num_inputs or (np.diff(obs) <= 0).any())):
            raise ValueError(f"{name} must be sorted distinct indices in [0, {num_inputs - 1}]")


def training_sequences(
    task: SequenceTask, demonstrations: Demonstrations | None
) -> tuple[IntArray, IntArray, FloatArray]:
    """``(prompts, tokens, weights)`` to fit on: the demonstrations (weight 1 each) or, for a
    population fit, every prompt of a finite law with its expert sequence (weight ``mu``)."""
    if demonstrations is not None:
        prompts, tokens = demonstration_arrays(task, demonstrations)
        return prompts.astype(np.int64), tokens.astype(np.int64), np.ones(len(tokens))
    prompts_law = task.prompts
    if not isinstance(prompts_law, FinitePrompts):
        raise ValueError(f"{task.env_id}: a population fit needs a finite prompt law")
    if prompts_law.num_contexts > MAX_POPULATION_ROWS:
        raise ValueError(f"{task.env_id}: a population fit lists at most {MAX_POPULATION_ROWS} "
                         f"prompts, the law has {prompts_law.num_contexts}")
    tokens = task.expert.deterministic_sequences(prompts_law.contexts)
    if tokens is None:
        raise ValueError(f"{task.env_id}: a population fit of a full-context learner needs a "
                         "deterministic expert")
    return prompts_law.contexts, tokens, np.exp(prompts_law.log_probs)


def position_rows(
    active: IntArray, targets: IntArray, weights: FloatArray, vocab_size: int
) -> tuple[IntArray, FloatArray]:
    """Distinct rows of ``active`` and their weighted target counts ``(R, V)``."""
    rows, inverse = np.unique(active, axis=0, return_inverse=True)
    counts = np.zeros((rows.shape[0], vocab_size))
    np.add.at(counts, (inverse.ravel(), targets), weights)
    return rows, counts


class ContextModel(SequenceModel):
    """A sequence model whose logits at position ``h`` are ``logits(h, active)`` of the
    one-hot context (``active`` from :meth:`ContextOneHot.active`)."""

    def __init__(
        self,
        encoding: ContextOneHot,
        vocab_size: int,
        logits: Callable[[int, IntArray], FloatArray],
    ) -> None:
        self.encoding = encoding
        self.vocab_size = int(vocab_size)
        self.horizon = encoding.horizon
        self._logits = logits

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.ndim != 2 or prompts.shape[1] != self.encoding.prompt_length:
            raise ValueError(f"prompts must have shape (B, {self.encoding.prompt_length}), "
                             f"got {prompts.shape}")
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        h = prefixes.shape[1]
        if h >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, got {h}")
        logits = self._logits(h, self.encoding.active(prompts, prefixes))
        return log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
