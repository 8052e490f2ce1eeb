"""L-BFGS on several independent problems at once: batched evaluations.

Each row of ``x (R, d)`` is its own minimisation of the same function; ``fun`` maps the rows
still running to their values ``(r,)`` and gradients ``(r, d)``, so a costly objective that
vectorises over parameters (the oracle's finite-state recursion) is called once per round
instead of once per row. Rows stop on their own (early stop): gradient small, no further
decrease to machine precision, or a failed line search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ValueGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class BatchResult:
    """End points, values, gradients' max-norms and iterations used, one per row."""

    x: Tensor
    value: Tensor
    grad_max: Tensor
    iterations: Tensor


def minimize_batch(
    fun: ValueGrad,
    x0: Tensor,
    *,
    max_iter: int = 2000,
    gtol: float = 1e-12,
    ftol: float = 1e-15,
    memory: int = 10,
    max_backtracks: int = 40,
) -> BatchResult:
    """Minimise every row of ``x0 (R, d)``; L-BFGS directions, Armijo backtracking.

    A row stops when ``max |g| <= gtol``, when an accepted step lowers ``f`` by no more than
    ``ftol * max(|f|, 1)``, or when backtracking finds no decrease.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (R, d), got {tuple(x0.shape)}")
    if max_iter < 0 or memory < 1 or gtol < 0 or ftol < 0:
        raise ValueError("max_iter >= 0, memory >= 1, gtol >= 0 and ftol >= 0 required")
    x = x0.detach().clone()
    f, g = fun(x)
    rows = x.shape[0]
    iterations = torch.zeros(rows, dtype=torch.int64)
    active = g.abs().amax(dim=1) > gtol
    s_hist: list[Tensor] = []  # each (R, d); rows that skipped an update hold zeros
    y_hist: list[Tensor] = []
    rho_hist: list[Tensor] = []  # (R,); zero where the pair is skipped
    for _ in range(max_iter):
        if not active.any():
            break
        direction = _two_loop(g, s_hist, y_hist, rho_hist)
        x_new, f_new, g_new, failed, decrease = _backtrack(fun, x, f, g, direction, active,
                                                           max_backtracks)
        moved = active & ~failed
        s = torch.where(moved[:, None], x_new - x, 0.0)
        y = torch.where(moved[:, None], g_new - g, 0.0)
        sy = (s * y).sum(dim=1)
        rho = torch.where(moved & (sy > 1e-300), 1.0 / torch.where(sy > 1e-300, sy, 1.0), 0.0)
        s_hist.append(s)
        y_hist.append(y)
        rho_hist.append(rho)
        if len(s_hist) > memory:
            s_hist.pop(0)
            y_hist.pop(0)
            rho_hist.pop(0)
        iterations += moved.to(torch.int64)
        x, f, g = x_new, f_new, g_new
        small = g.abs().amax(dim=1) <= gtol
        flat = decrease <= ftol * torch.clamp(f.abs(), min=1.0)
        active = active & ~failed & ~small & ~flat
    return BatchResult(x, f, g.abs().amax(dim=1), iterations)


def _backtrack(fun: ValueGrad, x: Tensor, f: Tensor, g: Tensor, direction: Tensor,
               active: Tensor, max_backtracks: int
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Armijo backtracking along ``direction`` for the active rows (one call per round).

    Returns the new ``(x, f, g)``, the rows where no decrease was found, and the decrease.
    """
    slope = (direction * g).sum(dim=1)
    uphill = slope >= 0
    direction = torch.where(uphill[:, None], -g, direction)
    slope = torch.where(uphill, -(g * g).sum(dim=1), slope)
    step = torch.ones(x.shape[0], dtype=x.dtype)
    pending = active.clone()
    x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
    for _ in range(max_backtracks):
        idx = pending.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        trial = x[idx] + step[idx, None] * direction[idx]
        f_try, g_try = fun(trial)
        ok = torch.isfinite(f_try) & (f_try <= f[idx] + 1e-4 * step[idx] * slope[idx])
        done = idx[ok]
        x_new[done], f_new[done], g_new[done] = trial[ok], f_try[ok], g_try[ok]
        pending[done] = False
        step[idx[~ok]] *= 0.5
    return x_new, f_new, g_new, pending, f - f_new


def _two_loop(g: Tensor, s_hist: list[Tensor], y_hist: list[Tensor],
              rho_hist: list[Tensor]) -> Tensor:
    """``-H g`` per row from the stored pairs (pairs with ``rho = 0`` are skipped)."""
    q = g.clone()
    alphas = []
    for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist), strict=True):
        a = rho * (s * q).sum(dim=1)
        q -= a[:, None] * y
        alphas.append(a)
    gamma = torch.ones(g.shape[0], dtype=g.dtype)  # s.y / y.y of each row's latest pair
    found = torch.zeros(g.shape[0], dtype=torch.bool)
    for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist), strict=True):
        yy = (y * y).sum(dim=1)
        use = (rho > 0) & ~found & (yy > 0)
        gamma = torch.where(use, (s * y).sum(dim=1) / torch.where(yy > 0, yy, 1.0), gamma)
        found |= use
    r = gamma[:, None] * q
    for s, y, rho, a in zip(s_hist, y_hist, rho_hist, reversed(alphas), strict=True):
        b = rho * (y * r).sum(dim=1)
        r += (a - b)[:, None] * s
    return -r
