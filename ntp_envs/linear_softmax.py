"""Linear-softmax autoregressive models that see the prompt and the last ``memory`` tokens.

``pi_theta(a | x, a_{<h}) ∝ exp(<theta, phi(x, a_{<h}, a)>)`` with the feature map

``phi(x, a_{<h}, a) = P (z(x, a_{<h}) ⊗ e_a)``,
``z = [onehot_C(x), onehot_V(a_{h-1}), ..., onehot_V(a_{h-m})]``,

where a lag block is all zeros before the start of the sequence (``h - j < 1``), ``⊗ e_a``
places ``z`` in the block of token ``a`` (index ``i * V + a``), and ``P`` is an optional
fixed ``(feature_dim, (C + m V) V)`` projection (identity when ``feature_dim`` is None).
The model is additive over lags: it cannot express interactions between lags or lags
beyond ``m``. It is finite-state with memory ``m`` and ``T = min(m + 1, H)`` positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

from ntp_envs.sequence_model import (
    FinitePrompts,
    FiniteStateModel,
    FiniteStateTables,
    window_states,
)
from ntp_envs.type_aliases import FloatArray, IntArray


@dataclass(frozen=True)
class LinearSoftmaxClass:
    """The class ``{pi_theta : theta in R^dim}`` with the window feature map above."""

    prompts: FinitePrompts
    vocab_size: int
    memory: int
    horizon: int
    projection: FloatArray | None = None

    @property
    def num_contexts(self) -> int:
        return self.prompts.num_contexts

    @property
    def full_dim(self) -> int:
        return (self.num_contexts + self.memory * self.vocab_size) * self.vocab_size

    @property
    def dim(self) -> int:
        return self.full_dim if self.projection is None else int(self.projection.shape[0])

    @property
    def num_positions(self) -> int:
        return min(self.memory + 1, self.horizon)

    @property
    def num_states(self) -> int:
        return self.vocab_size**self.memory

    @property
    def num_inputs(self) -> int:
        """Length ``C + m V`` of the multi-hot input ``z``."""
        return self.num_contexts + self.memory * self.vocab_size

    def weight_matrix(self, theta: FloatArray) -> FloatArray:
        """``W`` of shape ``(C + m V, V)`` with ``<theta, phi(., a)> = z . W[:, a]``."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.dim,):
            raise ValueError(f"theta must have shape ({self.dim},), got {theta.shape}")
        full = theta if self.projection is None else self.projection.T @ theta
        return full.reshape(self.num_inputs, self.vocab_size)

    def active_inputs(self, context: IntArray, position: IntArray, state: IntArray) -> IntArray:
        """Indices of the nonzero entries of ``z`` for rows ``(c, t, s)``; ``-1`` pads.

        Shape ``(R, 1 + m)``: the context index, then lag ``j``'s one-hot index when
        ``j <= t`` (the lag exists), else ``-1``.
        """
        context = np.asarray(context, dtype=np.int64)
        position = np.asarray(position, dtype=np.int64)
        state = np.asarray(state, dtype=np.int64)
        vocab, n_ctx = self.vocab_size, self.num_contexts
        out = np.full((context.shape[0], 1 + self.memory), -1, dtype=np.int64)
        out[:, 0] = context
        for j in range(1, self.memory + 1):
            digit = (state // vocab ** (j - 1)) % vocab
            out[:, j] = np.where(position >= j, n_ctx + (j - 1) * vocab + digit, -1)
        return out

    def all_rows(self) -> tuple[IntArray, IntArray, IntArray]:
        """Every table row ``(c, t, s)``, flattened in ``(C, T, S)`` order."""
        c, t, s = np.meshgrid(
            np.arange(self.num_contexts), np.arange(self.num_positions),
            np.arange(self.num_states), indexing="ij",
        )
        return c.ravel(), t.ravel(), s.ravel()

    def logits(self, theta: FloatArray) -> FloatArray:
        """``<theta, phi(c, t, s, a)>`` for every row: shape ``(C, T, S, V)``."""
        weights = self.weight_matrix(theta)
        active = self.active_inputs(*self.all_rows())
        padded = np.vstack([weights, np.zeros((1, self.vocab_size))])  # index -1 -> zeros
        out = padded[active].sum(axis=1)
        return out.reshape(self.num_contexts, self.num_positions, self.num_states, self.vocab_size)

    def tables(self, theta: FloatArray) -> FiniteStateTables:
        """Finite-state tables of ``pi_theta``."""
        logp = log_softmax(self.logits(theta), axis=-1)
        return FiniteStateTables(logp, self.memory, self.horizon)

    def model(self, theta: FloatArray) -> FiniteStateModel:
        """``pi_theta`` as a sequence model."""
        return FiniteStateModel(self.tables(theta), self.prompts)

    def counts(self, context_index: IntArray, tokens: IntArray) -> FloatArray:
        """Empirical visit counts ``N[c, t, s, a]`` of ``(B, H)`` sequences."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n_ctx, n_pos, n_states, vocab = (
            self.num_contexts, self.num_positions, self.num_states, self.vocab_size,
        )
        t = np.minimum(np.arange(tokens.shape[1]), n_pos - 1)[None, :]
        s = window_states(tokens, self.memory, vocab)
        flat = ((np.asarray(context_index)[:, None] * n_pos + t) * n_states + s) * vocab + tokens
        size = n_ctx * n_pos * n_states * vocab
        return np.bincount(flat.ravel(), minlength=size).astype(np.float64).reshape(
            n_ctx, n_pos, n_states, vocab
        )

    def expected_counts(self, expert: FiniteStateTables) -> FloatArray:
        """``E_{P*}[N[c, t, s, a]]`` per sequence (weights ``mu``), exactly, from the expert."""
        if expert.num_contexts != self.num_contexts or expert.memory < self.memory:
            raise ValueError("expert tables must share the contexts and have memory >= "
                             f"{self.memory}")
        marg = expert.forward_marginals()  # (C, H, S*)
        n_pos = self.num_positions
        out = np.zeros((self.num_contexts, n_pos, self.num_states, self.vocab_size))
        # positions before `split` have their own tables; all later ones share the last.
        split = min(max(n_pos, expert.num_positions) - 1, expert.horizon - 1)
        groups = [(h, marg[:, h]) for h in range(split)]
        groups.append((split, marg[:, split:].sum(axis=1)))
        ratio = expert.num_states // self.num_states
        for h, visits in groups:
            flow = visits[:, :, None] * np.exp(expert.at_position(h))  # (C, S*, V)
            # s* = hi * S + lo with lo the learner's window state
            flow = flow.reshape(self.num_contexts, ratio, self.num_states, self.vocab_size)
            out[:, min(h, n_pos - 1)] += flow.sum(axis=1)
        return out * np.exp(self.prompts.log_probs)[:, None, None, None]
