"""Exact divergences between binary exchangeable sequence laws from sufficient statistics.

A :class:`~ntp_envs.sequence_model.CountLaw` gives ``log P(a_{1:H} | c)`` as a function of
the number of ones ``k`` only, so every sum over the ``2^H`` sequences of a context becomes
a sum over ``k = 0..H`` with weights ``binom(H, k)``:

``BC = sum_c mu_c sum_k binom(H, k) sqrt(P_k Q_k)``,
``KL(P || Q) = sum_c mu_c sum_k binom(H, k) P_k (log P_k - log Q_k)``,
``TV = 1 - sum_c mu_c sum_k binom(H, k) min(P_k, Q_k)``.

Everything is summed in log space (log-binomial weights), so it is exact at ``H = 4096``
and beyond, where every single sequence probability underflows float64. Cost ``O(C H)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import logsumexp
from torch import Tensor

from evaluation.methods.enumeration import ExactDivergences
from evaluation.methods.finite_state_dp import NEG
from evaluation.methods.roundoff import checked_kl, hellinger2_from_log_bc, tv_from_log_overlap
from ntp_envs.sequence_model import CountLaw, log_binomial
from ntp_envs.type_aliases import FloatArray

__all__ = ["count_law_divergences", "log_bhattacharyya_counts"]


def _check(p: CountLaw, q: CountLaw, log_mu: FloatArray) -> FloatArray:
    if p.log_seq.shape != q.log_seq.shape:
        raise ValueError(f"count laws must share (C, H + 1): {p.log_seq.shape} vs "
                         f"{q.log_seq.shape}")
    log_mu = np.asarray(log_mu, dtype=np.float64)
    if log_mu.shape != (p.log_seq.shape[0],):
        raise ValueError(f"log_mu must have shape ({p.log_seq.shape[0]},), got {log_mu.shape}")
    return log_mu


def count_law_divergences(p: CountLaw, q: CountLaw, log_mu: FloatArray) -> ExactDivergences:
    """Exact ``(D_H^2(P, Q), KL(P || Q), TV(P, Q))`` for ``P = mu x p`` and ``Q = mu x q``.

    ``D_H^2 = -2 expm1(log BC)``; ``KL`` is ``+inf`` when ``Q`` gives zero probability to a
    sequence that ``P`` can emit (in a context with ``mu_c > 0``).
    """
    log_mu = _check(p, q, log_mu)
    lp, lq = p.log_seq, q.log_seq
    # log of (mu_c binom(H, k)): the weight of one count class
    log_w = log_mu[:, None] + log_binomial(p.horizon)[None, :]
    with np.errstate(invalid="ignore"):
        log_bc = float(logsumexp(log_w + 0.5 * (lp + lq)))
        log_overlap = float(logsumexp(log_w + np.minimum(lp, lq)))
    mass = log_w + lp  # log P(context c, #ones = k)
    support = mass > -math.inf
    if (support & (lq == -math.inf)).any():
        kl = math.inf
    else:
        kl = checked_kl(float(np.sum(np.exp(mass[support]) * (lp[support] - lq[support]))))
    return ExactDivergences(
        hellinger2=hellinger2_from_log_bc(log_bc), kl=kl, tv=tv_from_log_overlap(log_overlap)
    )


def log_bhattacharyya_counts(log_seq_p: Tensor, log_seq_q: Tensor, log_mu: Tensor) -> Tensor:
    """``log BC(P, Q)`` for count laws ``(..., C, H + 1)`` (float64, differentiable).

    Leading batch dimensions of ``log_seq_p`` and ``log_seq_q`` broadcast; ``log_mu`` has
    shape ``(C,)``. Exact zeros (``-inf``) are clamped to the finite ``NEG`` of
    :mod:`evaluation.methods.finite_state_dp`, so gradients stay free of NaN.
    """
    if log_seq_p.ndim < 2 or log_seq_q.ndim < 2:
        raise ValueError("count laws must have shape (..., C, H + 1), got "
                         f"{tuple(log_seq_p.shape)} and {tuple(log_seq_q.shape)}")
    if log_seq_p.dtype != torch.float64 or log_seq_q.dtype != torch.float64:
        raise ValueError(f"count laws must be float64, got {log_seq_p.dtype} and "
                         f"{log_seq_q.dtype}")
    if log_seq_p.shape[-2:] != log_seq_q.shape[-2:]:
        raise ValueError(f"count laws must share (C, H + 1): {tuple(log_seq_p.shape)} vs "
                         f"{tuple(log_seq_q.shape)}")
    n_ctx, n_counts = log_seq_p.shape[-2], log_seq_p.shape[-1]
    if n_counts < 2:
        raise ValueError(f"count laws need H + 1 >= 2 entries, got {n_counts}")
    if log_mu.shape != (n_ctx,):
        raise ValueError(f"log_mu must have shape ({n_ctx},), got {tuple(log_mu.shape)}")
    binom = torch.from_numpy(log_binomial(n_counts - 1)).to(log_seq_p.device)
    weights = log_mu.to(log_seq_p)[:, None] + binom[None, :]
    x = 0.5 * (log_seq_p.clamp(min=NEG) + log_seq_q.clamp(min=NEG)) + weights
    return torch.logsumexp(x.flatten(-2), dim=-1)
