"""``log BC(P_b, Q)`` and its gradient in ``log P_b`` for a batch of learners, by an adjoint.

The same quantity as :func:`evaluation.methods.finite_state_dp.log_bhattacharyya`, written for the
best-in-class search: many learner tables ``P_b`` against one expert ``Q``, value and
gradient together, without an autograd graph over the ``H`` positions.

- Forward: ``alpha_{h+1} = alpha_h T_h`` with ``T_h(s, s') = sqrt(p q)(s, a)`` for the token
  ``a`` that moves ``s -> s'``, in linear space, each step rescaled to a maximum of 1 (the
  scales are summed in log space, so nothing underflows at ``H`` in the thousands).
- Backward (adjoint): ``beta_h = T_h beta_{h+1}``, rescaled the same way. The gradient of
  ``log BC_c`` in ``log p_t(s, a)`` is half the expected number of visits of ``(s, a)`` at
  positions using table ``t`` under the normalised path weights, i.e. the sum over ``h`` of
  ``alpha_h(s) T_h(s, a) beta_{h+1}(s') / <alpha_h, beta_h>``.
- Memory is bounded, not ``O(H x states)``: the forward keeps only checkpoints when all
  ``alpha_h`` would not fit in :data:`STORE_BYTES`, and the backward recomputes one chunk of
  positions at a time; the per-position visit terms of a chunk are summed by one batched
  matrix product.
- When the learner's memory is below the expert's, ``p`` does not depend on the oldest token
  ``hi`` of the expert's window ``s = hi * L + lo``, so each step is one matrix product
  ``(B, V) @ (V, V)`` per ``(c, lo)`` with the expert's factor shared by every learner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from evaluation.methods.finite_state_dp import NEG

__all__ = ["STORE_BYTES", "log_bhattacharyya_value_grad"]

STORE_BYTES = 2**30
"""Bytes of forward messages (and of one backward chunk) kept at once."""

TINY = torch.finfo(torch.float64).tiny
"""Floor of a rescaling factor: an all-zero message stays zero (and its log scale finite)."""


def log_bhattacharyya_value_grad(
    logp: Tensor, logq: Tensor, log_mu: Tensor, horizon: int
) -> tuple[Tensor, Tensor]:
    """``(log BC(P_b, Q), d log BC / d logp)`` for learner tables ``logp (B, C, Tp, Sp, V)``
    and one expert ``logq (C, Tq, Sq, V)``, ``Sp = V**mp <= Sq = V**mq``.

    The learner is lifted to the expert's window (state ``s -> s mod Sp``); the gradient has
    the shape of ``logp`` and treats its rows as free (no normalisation constraint).
    """
    logp, logq = _check(logp, logq, log_mu, horizon)
    n_batch, n_ctx, t_p, s_p, vocab = logp.shape
    t_q, s_q = logq.shape[1], logq.shape[2]
    if s_q == 1:  # lift a memoryless expert to memory 1, so that every step moves a window
        logq, s_q = logq.expand(n_ctx, t_q, vocab, vocab), vocab
    factored = s_p < s_q
    n_lo = s_q // vocab
    n_pos = max(t_p, t_q)
    weights = [_weights(logp, logq, t, t_p, t_q, factored) for t in range(min(horizon, n_pos))]

    state_bytes = 8 * n_batch * n_ctx * s_q
    store_all = (horizon + 1) * state_bytes <= STORE_BYTES
    chunk = max(1, min(horizon, STORE_BYTES // state_bytes, math.isqrt(horizon - 1) + 1))

    def w_at(h: int) -> _Weights:
        return weights[min(h, n_pos - 1)]

    # forward: normalised alpha in layout (C, L, B, V) = [c, lo, b, hi]; s = hi * L + lo
    alpha = logp.new_zeros((n_ctx, n_lo, n_batch, vocab))
    alpha[:, 0, :, 0] = 1.0
    scales: list[Tensor] = []  # the (C, B) rescaling factor of each step
    kept: dict[int, Tensor] = {}  # what the backward needs at h (store_all) or checkpoints
    for h in range(horizon):
        if not store_all and h % chunk == 0:
            kept[h] = alpha
        alpha, scale, keep = _forward_step(alpha, w_at(h), n_lo, vocab)
        scales.append(scale)
        if store_all:
            kept[h] = keep
    log_scale = torch.log(torch.stack(scales)).sum(dim=0)
    log_z = log_scale + torch.log(alpha.sum(dim=(1, 3)))  # (C, B)
    value = torch.logsumexp(log_z + log_mu[:, None], dim=0)  # (B,)
    ratio = torch.exp(log_z + log_mu[:, None] - value)  # r_c = mu_c BC_c / BC, (C, B)
    ratio = torch.where(torch.isfinite(value), ratio, 0.0)

    # backward: visits[t] = sum_h alpha_h T_h beta_{h+1} / <alpha_h, beta_h> (summed over hi
    # when factored: (C, L, B, V); else (C, L, B, V_hi, V_a))
    visits: dict[int, Tensor] = {}
    beta = torch.ones_like(alpha)
    for start in reversed(range(0, horizon, chunk)):
        stop = min(start + chunk, horizon)
        keeps = [kept[h] for h in range(start, stop)] if store_all else \
            _recompute(kept[start], start, stop, w_at, n_lo, vocab)
        for h in reversed(range(start, stop)):
            term, beta_raw = _backward_step(beta, keeps[h - start], w_at(h), n_lo, vocab)
            t = min(h, n_pos - 1)
            visits[t] = term if t not in visits else visits[t].add_(term)
            beta = beta_raw.div_(beta_raw.amax(dim=(1, 3), keepdim=True).clamp_(min=TINY))
    grad = torch.zeros_like(logp)
    for t, acc in visits.items():
        if factored:  # (C, L, B, V) -> (B, C, L, V), then fold lo onto the learner's state
            per_state = acc.permute(2, 0, 1, 3).reshape(n_batch, n_ctx, n_lo // s_p, s_p, vocab)
            per_state = per_state.sum(dim=2)
        else:
            per_state = acc.permute(2, 0, 3, 1, 4).reshape(n_batch, n_ctx, s_q, vocab)
        grad[:, :, min(t, t_p - 1)] += 0.5 * ratio.T[:, :, None, None] * per_state
    return value, grad


# ---------------------------------------------------------------------------- internals


def _check(logp: Tensor, logq: Tensor, log_mu: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
    if logp.ndim != 5 or logq.ndim != 4:
        raise ValueError(f"logp must have shape (B, C, Tp, Sp, V) and logq (C, Tq, Sq, V), got "
                         f"{tuple(logp.shape)} and {tuple(logq.shape)}")
    if logp.dtype != torch.float64 or logq.dtype != torch.float64:
        raise ValueError(f"tables must be float64, got {logp.dtype} and {logq.dtype}")
    vocab, s_p, s_q = logp.shape[-1], logp.shape[-2], logq.shape[-2]
    if logq.shape[-1] != vocab or logq.shape[0] != logp.shape[1]:
        raise ValueError(f"tables must share (C, V): {tuple(logp.shape)} vs {tuple(logq.shape)}")
    if vocab < 2 or s_q % s_p or not _is_power(s_p, vocab) or not _is_power(s_q, vocab):
        raise ValueError(f"state counts {s_p} (learner) and {s_q} (expert) must be powers of "
                         f"V = {vocab} with the learner's <= the expert's")
    if log_mu.shape != (logp.shape[1],):
        raise ValueError(f"log_mu must have shape ({logp.shape[1]},), got {tuple(log_mu.shape)}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return logp.detach().clamp(min=NEG), logq.detach().clamp(min=NEG)


def _is_power(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1


@dataclass(frozen=True)
class _Weights:
    """``sqrt(p q)`` at one table position, in the step layout.

    Factored: ``expert (C, L, V_hi, V_a)`` (and its transpose) times ``learner (C, L, B, V_a)``.
    Otherwise: ``expert (C, L, B, V_hi, V_a)`` is the whole product and ``learner`` is None.
    """

    expert: Tensor
    expert_t: Tensor | None
    learner: Tensor | None


def _weights(logp: Tensor, logq: Tensor, t: int, t_p: int, t_q: int, factored: bool) -> _Weights:
    lq = logq[:, min(t, t_q - 1)]  # (C, S, V)
    lp = logp[:, :, min(t, t_p - 1)]  # (B, C, Sp, V)
    n_ctx, s_q, vocab = lq.shape
    n_lo = s_q // vocab
    w_q = torch.exp(0.5 * lq).reshape(n_ctx, vocab, n_lo, vocab).transpose(1, 2)
    if factored:
        lo = torch.arange(n_lo, device=lp.device) % lp.shape[2]
        w_p = torch.exp(0.5 * lp[:, :, lo]).permute(1, 2, 0, 3).contiguous()
        return _Weights(w_q.contiguous(), w_q.transpose(-1, -2).contiguous(), w_p)
    w_p = torch.exp(0.5 * lp).reshape(lp.shape[0], n_ctx, vocab, n_lo, vocab)
    return _Weights((w_q[:, :, None] * w_p.permute(1, 3, 0, 2, 4)).contiguous(), None, None)


def _forward_step(alpha: Tensor, w: _Weights, n_lo: int,
                  vocab: int) -> tuple[Tensor, Tensor, Tensor]:
    """``alpha T_h`` rescaled to a maximum of 1 per ``(c, b)``, the scale ``(C, B)``, and what
    the backward needs at ``h``: ``alpha_h @ w_q`` when factored, else ``alpha_h``."""
    if w.learner is None:
        keep = alpha
        flow = (alpha.unsqueeze(-2) @ w.expert).squeeze(-2)  # (C, L, B, V_a)
    else:
        keep = alpha @ w.expert
        flow = keep * w.learner
    top = flow.amax(dim=(1, 3)).clamp_(min=TINY)  # (C, B)
    out = _moves_to_states(flow, n_lo, vocab)
    out.div_(top[:, None, :, None])
    return out, top, keep


def _backward_step(beta: Tensor, keep: Tensor, w: _Weights, n_lo: int,
                   vocab: int) -> tuple[Tensor, Tensor]:
    """``(visits at h, T_h beta_{h+1})`` for ``beta = beta_{h+1}`` in the alpha layout."""
    nxt = _states_to_moves(beta, n_lo, vocab)
    if w.learner is None:
        beta_raw = (w.expert @ nxt.unsqueeze(-1)).squeeze(-1)
        term = keep.unsqueeze(-1) * w.expert * nxt.unsqueeze(-2)  # (C, L, B, V_hi, V_a)
        mass = (keep * beta_raw).sum(dim=(1, 3))
        return term.div_(mass.clamp_(min=TINY)[:, None, :, None, None]), beta_raw
    right = nxt * w.learner
    term = right * keep  # summed over hi already: sum_hi alpha(hi) w_q(hi, a) w_p(a) beta'(a)
    mass = term.sum(dim=(1, 3))
    beta_raw = right @ w.expert_t
    return term.div_(mass.clamp_(min=TINY)[:, None, :, None]), beta_raw


def _moves_to_states(flow: Tensor, n_lo: int, vocab: int) -> Tensor:
    """``[c, lo, b, a]`` -> ``[c, lo', b, hi']`` (a copy) where ``lo V + a = hi' L + lo'``."""
    if n_lo == 1:
        return flow.contiguous()
    n_ctx, n_batch = flow.shape[0], flow.shape[2]
    split = flow.reshape(n_ctx, vocab, n_lo // vocab, n_batch, vocab)  # lo = (hi', j)
    return split.permute(0, 2, 4, 3, 1).reshape(n_ctx, n_lo, n_batch, vocab)  # lo' = (j, a)


def _states_to_moves(beta: Tensor, n_lo: int, vocab: int) -> Tensor:
    """The inverse of :func:`_moves_to_states`."""
    if n_lo == 1:
        return beta
    n_ctx, n_batch = beta.shape[0], beta.shape[2]
    split = beta.reshape(n_ctx, n_lo // vocab, vocab, n_batch, vocab)  # lo' = (j, a)
    return split.permute(0, 4, 1, 3, 2).reshape(n_ctx, n_lo, n_batch, vocab)  # lo = (hi', j)


def _recompute(alpha: Tensor, start: int, stop: int, w_at, n_lo: int,
               vocab: int) -> list[Tensor]:
    """What the backward needs at positions ``start .. stop - 1``, from ``alpha_start``."""
    out = []
    for h in range(start, stop):
        alpha, _, keep = _forward_step(alpha, w_at(h), n_lo, vocab)
        out.append(keep)
    return out
