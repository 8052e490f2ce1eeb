"""Exact divergences between finite-state sequence laws, in torch float64 (differentiable).

Both laws share the prompt law ``mu`` (``log_mu``, shape ``(C,)``) and the window memory
``k`` (``S = V**k`` states; lift the shorter one with :meth:`FiniteStateTables.lift`).
Tables ``logp[..., c, t, s, a]`` may carry any leading batch shape (e.g. restarts of an
optimiser); position ``h`` uses table index ``min(h, T - 1)`` and the window state moves
``s -> (s * V) mod S + a`` (conventions of :mod:`ntp_envs.sequence_model`).

``BC_c`` is a forward recursion over window states with weights ``sqrt(p q)``; positions
from ``max(Tp, Tq) - 1`` on share one transfer matrix, which is applied by binary
exponentiation (``~2 log2 H`` products) when that is cheaper than stepping. All of it is
done in log space, so nothing underflows at ``H`` in the thousands. A structural zero is
stored as the finite log-weight ``NEG`` so that gradients stay free of NaN.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from evaluation.methods.roundoff import checked_kl, hellinger2_from_log_bc
from ntp_envs.sequence_model import FiniteStateTables

__all__ = [
    "finite_state_divergences",
    "hellinger2_from_log_bc",
    "kl_divergence",
    "lift_to_common_memory",
    "log_bhattacharyya",
]

Tail = Literal["auto", "power", "loop"]

NEG = -1e30
"""Log-weight standing for an exact zero (finite, so autograd never meets ``inf - inf``)."""

LSE_CUTOFF = 700.0
"""Exact log-space products drop terms below ``e^-LSE_CUTOFF`` of the largest (speed)."""

SHIFTED_CUTOFF = 350.0
"""BLAS log-space products drop rescaled factors below ``e^-SHIFTED_CUTOFF``."""

EXACT_LOGMATMUL_MAX_ELEMENTS = 2**15
"""Log-space matrix products with at most this many ``batch * S**3`` terms are done by an
exact logsumexp; larger ones by rescaled BLAS products (see :func:`_log_matmul`)."""

EXACT_CHUNK_ELEMENTS = 2**22
"""Memory bound (terms per chunk) of the exact logsumexp product."""


def log_bhattacharyya(
    logp: Tensor, logq: Tensor, log_mu: Tensor, horizon: int, *, tail: Tail = "auto"
) -> Tensor:
    """``log BC(P, Q)`` for tables ``(..., C, Tp, S, V)`` and ``(..., C, Tq, S, V)``.

    Returns a tensor of the broadcast batch shape. ``tail`` picks how the shared tail
    matrix is applied (``"power"``: repeated squaring, ``"loop"``: step by step).
    """
    _check_inputs(logp, logq, log_mu, horizon, tail)
    t_p, t_q, n_states = logp.shape[-3], logq.shape[-3], logp.shape[-2]
    split = min(max(t_p, t_q) - 1, horizon)
    lp, lq = logp.clamp(min=NEG), logq.clamp(min=NEG)

    def weights(h: int) -> Tensor:  # log sqrt(p q) at position h, (..., C, S, V)
        return 0.5 * (lp[..., min(h, t_p - 1), :, :] + lq[..., min(h, t_q - 1), :, :])

    batch = torch.broadcast_shapes(logp.shape[:-3], logq.shape[:-3])
    alpha = torch.full((*batch, n_states), NEG, dtype=torch.float64, device=logp.device)
    alpha[..., 0] = 0.0
    for h in range(split):
        alpha = _log_step(alpha, weights(h))
    steps = horizon - split
    if steps > 0:
        w = weights(split)
        if _use_power(tail, steps, _numel(batch), n_states, w.shape[-1], log=True):
            alpha = _log_apply_power(alpha, _log_transfer(w), steps)
        else:
            for _ in range(steps):
                alpha = _log_step(alpha, w)
    log_bc_c = _lse(alpha, -1)
    return _lse(log_bc_c + log_mu.to(log_bc_c), -1)


def kl_divergence(
    logp: Tensor, logq: Tensor, log_mu: Tensor, horizon: int, *, tail: Tail = "auto"
) -> Tensor:
    """``KL(P || Q)`` for tables ``(..., C, Tp, S, V)`` and ``(..., C, Tq, S, V)``.

    ``+inf`` where ``Q`` gives zero probability to a token ``P`` can emit (reachably).
    """
    _check_inputs(logp, logq, log_mu, horizon, tail)
    t_p, t_q, n_states = logp.shape[-3], logq.shape[-3], logp.shape[-2]
    split = min(max(t_p, t_q) - 1, horizon)

    def rows(h: int) -> tuple[Tensor, Tensor, Tensor]:
        """Next-token probs of P, KL of each row, and rows where the KL is infinite."""
        lp, lq = logp[..., min(h, t_p - 1), :, :], logq[..., min(h, t_q - 1), :, :]
        probs = torch.exp(lp)
        support = probs > 0
        finite = support & torch.isfinite(lq)
        diff = torch.where(finite, lp - torch.where(finite, lq, 0.0), 0.0)
        kl = torch.where(finite, probs * diff, 0.0).sum(-1)
        return probs, kl, (support & ~finite).any(-1).to(torch.float64)

    mass = torch.zeros((*logp.shape[:-3], n_states), dtype=torch.float64, device=logp.device)
    mass[..., 0] = 1.0
    batch = torch.broadcast_shapes(logp.shape[:-3], logq.shape[:-3])
    kl_c = torch.zeros(batch, dtype=torch.float64, device=logp.device)
    bad_c = torch.zeros(batch, dtype=torch.float64, device=logp.device)
    for h in range(split):
        probs, kl_row, bad_row = rows(h)
        kl_c = kl_c + (mass * kl_row).sum(-1)
        bad_c = bad_c + (mass * bad_row).sum(-1)
        mass = _lin_step(mass, probs)
    steps = horizon - split
    if steps > 0:
        probs, kl_row, bad_row = rows(split)
        if _use_power(tail, steps, _numel(batch), n_states + 2, 1, log=False):
            kl_add, bad_add = _lin_accumulate_power(mass, probs, kl_row, bad_row, steps)
            kl_c, bad_c = kl_c + kl_add, bad_c + bad_add
        else:
            for _ in range(steps):
                kl_c = kl_c + (mass * kl_row).sum(-1)
                bad_c = bad_c + (mass * bad_row).sum(-1)
                mass = _lin_step(mass, probs)
    mu = torch.exp(log_mu.to(kl_c))
    positive = mu > 0
    total = (torch.where(positive, mu, 0.0) * torch.where(positive, kl_c, 0.0)).sum(-1)
    bad = (mu * bad_c).sum(-1)
    return torch.where(bad > 0, torch.full_like(total, math.inf), total)


def lift_to_common_memory(
    p: FiniteStateTables, q: FiniteStateTables
) -> tuple[FiniteStateTables, FiniteStateTables]:
    """Both tables written with the larger of their two memories."""
    memory = max(p.memory, q.memory)
    return p.lift(memory), q.lift(memory)


def finite_state_divergences(
    p: FiniteStateTables, q: FiniteStateTables, log_mu: np.ndarray
) -> tuple[float, float]:
    """``(D_H^2(P, Q), KL(P || Q))`` for numpy tables sharing contexts and ``mu``."""
    if p.horizon != q.horizon or p.vocab_size != q.vocab_size:
        raise ValueError("tables must share horizon and vocab_size")
    if p.num_contexts != q.num_contexts or np.shape(log_mu) != (p.num_contexts,):
        raise ValueError("tables and log_mu must share the number of contexts")
    p, q = lift_to_common_memory(p, q)
    logp, logq = torch.from_numpy(p.logp), torch.from_numpy(q.logp)
    mu = torch.as_tensor(np.asarray(log_mu, dtype=np.float64))
    with torch.no_grad():
        log_bc = float(log_bhattacharyya(logp, logq, mu, p.horizon))
        kl = float(kl_divergence(logp, logq, mu, p.horizon))
    return hellinger2_from_log_bc(log_bc), checked_kl(kl)


# ---------------------------------------------------------------------------- internals


def _check_inputs(logp: Tensor, logq: Tensor, log_mu: Tensor, horizon: int, tail: str) -> None:
    if logp.ndim < 4 or logq.ndim < 4:
        raise ValueError(f"tables must have shape (..., C, T, S, V), got {tuple(logp.shape)} "
                         f"and {tuple(logq.shape)}")
    if logp.dtype != torch.float64 or logq.dtype != torch.float64:
        raise ValueError(f"tables must be float64, got {logp.dtype} and {logq.dtype}")
    if logp.shape[-2:] != logq.shape[-2:] or logp.shape[-4] != logq.shape[-4]:
        raise ValueError(f"tables must share (C, S, V): {tuple(logp.shape)} vs "
                         f"{tuple(logq.shape)}; lift both to one memory first")
    n_states, vocab = logp.shape[-2], logp.shape[-1]
    power = 1
    while power < n_states and vocab > 1:
        power *= vocab
    if power != n_states:
        raise ValueError(f"S = {n_states} is not a power of V = {vocab}")
    if log_mu.shape != (logp.shape[-4],):
        raise ValueError(f"log_mu must have shape ({logp.shape[-4]},), got {tuple(log_mu.shape)}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if tail not in ("auto", "power", "loop"):
        raise ValueError(f"tail must be 'auto', 'power' or 'loop', got {tail!r}")


def _numel(shape: torch.Size | tuple[int, ...]) -> int:
    return math.prod(shape)


def _use_power(tail: str, steps: int, batch: int, size: int, vocab: int, log: bool) -> bool:
    """Repeated squaring or stepping? A rough single-core cost model in nanoseconds."""
    if tail != "auto":
        return tail == "power"
    cube = batch * size**3
    if log and cube <= EXACT_LOGMATMUL_MAX_ELEMENTS:
        product = 10.0 * cube + 60_000
    else:
        product = 0.15 * cube + 15.0 * batch * size**2 + 60_000
    vecmat = 10.0 * batch * size**2 + 20_000
    power = math.ceil(math.log2(steps + 1)) * (product + vecmat)
    loop = steps * ((35_000 if log else 25_000) + 3.0 * batch * size * vocab)
    return power < loop


def _log_step(alpha: Tensor, w: Tensor) -> Tensor:
    """One position: ``alpha'(s') = logsumexp_{s, a: s'=(sV mod S)+a} alpha(s) + w(s, a)``."""
    x = alpha.unsqueeze(-1) + w  # (..., S, V)
    n_states, vocab = x.shape[-2], x.shape[-1]
    if n_states == 1:
        out = torch.logsumexp(x, dim=-1)
    else:  # s = hi * (S / V) + lo  ->  s' = lo * V + a
        x = x.reshape(*x.shape[:-2], vocab, n_states // vocab, vocab)
        out = torch.logsumexp(x, dim=-3).reshape(*x.shape[:-3], n_states)
    return out.clamp(min=NEG)


def _lin_step(mass: Tensor, probs: Tensor) -> Tensor:
    """One position of the forward marginals (linear space)."""
    x = mass.unsqueeze(-1) * probs
    n_states, vocab = x.shape[-2], x.shape[-1]
    if n_states == 1:
        return x.sum(-1)
    x = x.reshape(*x.shape[:-2], vocab, n_states // vocab, vocab)
    return x.sum(-3).reshape(*x.shape[:-3], n_states)


def _shift_pattern(n_states: int, vocab: int, device: torch.device) -> Tensor:
    """``E[s, a, s'] = [s' = (s V) mod S + a]`` (all ``a`` lead to ``0`` when ``S = 1``)."""
    pattern = torch.zeros((n_states, vocab, n_states), dtype=torch.float64, device=device)
    s = torch.arange(n_states, device=device)[:, None]
    a = torch.arange(vocab, device=device)[None, :]
    target = (s * vocab) % n_states + a if n_states > 1 else torch.zeros_like(s + a)
    pattern[s.expand_as(target), a.expand_as(target), target] = 1.0
    return pattern


def _log_transfer(w: Tensor) -> Tensor:
    """Dense log transfer matrix ``(..., S, S)`` from log weights ``(..., S, V)``."""
    pattern = _shift_pattern(w.shape[-2], w.shape[-1], w.device)
    log_pattern = torch.where(pattern > 0, 0.0, NEG)
    return torch.logsumexp(w.unsqueeze(-1) + log_pattern, dim=-2).clamp(min=NEG)


def _safe_log(x: Tensor) -> Tensor:
    positive = x > 0
    return torch.where(positive, torch.log(torch.where(positive, x, 1.0)), NEG)


def _log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) @ exp(b))`` for log matrices ``(..., S, S)``.

    Small products are exact logsumexps. Larger ones rescale rows of ``a`` and columns of
    ``b`` to a maximum of 1 and use BLAS, dropping factors below ``e^-SHIFTED_CUTOFF``; if
    that could lose more than ``1e-16`` of any reachable entry, the exact form is used.
    """
    n_states = a.shape[-1]
    cube = _numel(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])) * n_states**3
    if cube <= EXACT_LOGMATMUL_MAX_ELEMENTS:
        return _exact_log_matmul(a, b)
    row = a.amax(dim=-1, keepdim=True).detach()
    col = b.amax(dim=-2, keepdim=True).detach()
    product = _cut_exp(a - row) @ _cut_exp(b - col)
    with torch.no_grad():
        weak = product < n_states * math.exp(36.9 - SHIFTED_CUTOFF)
        if weak.any():
            reachable = (a > 0.5 * NEG).to(a.dtype) @ (b > 0.5 * NEG).to(b.dtype) > 0
            if (weak & reachable).any():
                return _exact_log_matmul(a, b)
    return (_safe_log(product) + row + col).clamp(min=NEG)


def _exact_log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Exact ``log(exp(a) @ exp(b))`` by logsumexp, in row chunks of bounded size."""
    n_states = a.shape[-1]
    batch = _numel(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    rows = max(1, EXACT_CHUNK_ELEMENTS // (batch * n_states**2))
    parts = [
        _lse(a[..., i : i + rows, :].unsqueeze(-1) + b.unsqueeze(-3), -2)
        for i in range(0, n_states, rows)
    ]
    return torch.cat(parts, dim=-2).clamp(min=NEG)


def _lse(x: Tensor, dim: int) -> Tensor:
    """``logsumexp`` over ``dim``, dropping terms below ``e^-LSE_CUTOFF`` of the largest.

    Exponentials that underflow run many times slower than ordinary ones on CPUs; the
    dropped terms change the sum by a relative ``< S e^-LSE_CUTOFF``.
    """
    top = x.amax(dim=dim, keepdim=True).detach()
    shifted = x - top
    keep = shifted > -LSE_CUTOFF
    terms = torch.exp(torch.where(keep, shifted, 0.0)) * keep
    return (top + torch.log(terms.sum(dim=dim, keepdim=True))).squeeze(dim)


def _cut_exp(x: Tensor) -> Tensor:
    """``exp(x)`` for ``x <= 0``, with entries below ``e^-SHIFTED_CUTOFF`` set to zero (so
    products of two entries stay clear of subnormals)."""
    keep = x > -SHIFTED_CUTOFF
    return torch.exp(torch.where(keep, x, 0.0)) * keep


def _log_vecmat(v: Tensor, a: Tensor) -> Tensor:
    """``log(exp(v) @ exp(a))`` for a log vector ``(..., S)`` and log matrix ``(..., S, S)``."""
    return torch.logsumexp(v.unsqueeze(-1) + a, dim=-2).clamp(min=NEG)


def _log_apply_power(alpha: Tensor, transfer: Tensor, steps: int) -> Tensor:
    """``alpha @ transfer**steps`` in log space by binary exponentiation."""
    power = transfer
    while True:
        if steps & 1:
            alpha = _log_vecmat(alpha, power)
        steps >>= 1
        if steps == 0:
            return alpha
        power = _log_matmul(power, power)


def _lin_accumulate_power(
    mass: Tensor, probs: Tensor, kl_rows: Tensor, bad_rows: Tensor, steps: int
) -> tuple[Tensor, Tensor]:
    """``sum_{j < steps} mass P^j kl`` (and the same for ``bad``) via ``[[P, kl, bad], [0, I]]``."""
    n_states, vocab = probs.shape[-2], probs.shape[-1]
    pattern = _shift_pattern(n_states, vocab, probs.device)
    transition = torch.einsum("...sa,sat->...st", probs, pattern)
    batch = torch.broadcast_shapes(transition.shape[:-2], kl_rows.shape[:-1], mass.shape[:-1])
    size = n_states + 2
    top = torch.cat(
        [
            transition.expand(*batch, n_states, n_states),
            kl_rows.expand(*batch, n_states).unsqueeze(-1),
            bad_rows.expand(*batch, n_states).unsqueeze(-1),
        ],
        dim=-1,
    )
    bottom = torch.zeros((2, size), dtype=torch.float64, device=probs.device)
    bottom[0, n_states] = bottom[1, n_states + 1] = 1.0
    power = torch.cat([top, bottom.expand(*batch, 2, size)], dim=-2)
    vec = torch.cat([mass.expand(*batch, n_states), mass.new_zeros((*batch, 2))], dim=-1)
    while True:
        if steps & 1:
            vec = (vec.unsqueeze(-2) @ power).squeeze(-2)
        steps >>= 1
        if steps == 0:
            return vec[..., n_states], vec[..., n_states + 1]
        power = power @ power
