"""How far round-off pushes the exact methods' raw values outside their ranges.

Run: ``python benchmarks/bench_roundoff.py``. Each exact kernel scores a law against itself
(true ``D_H^2 = KL = 0``) at horizons up to 16,384, and the raw values, before any clipping,
are printed. Exits 1 if any lies farther outside its range than a thousandth of
:data:`evaluation.methods.roundoff.ROUNDOFF_TOLERANCE` (the tolerance would then be too tight).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp

from evaluation.methods.finite_state_dp import kl_divergence, log_bhattacharyya
from evaluation.methods.roundoff import ROUNDOFF_TOLERANCE
from ntp_envs.mixture_product import MixtureOfProducts
from ntp_envs.sequence_model import FinitePrompts, log_binomial


def finite_state_raw(rng: np.random.Generator) -> dict[str, list[float]]:
    """Raw ``D_H^2`` and ``KL`` of random finite-state laws against themselves (DP)."""
    out: dict[str, list[float]] = {"dp D_H^2": [], "dp KL": []}
    for memory, vocab in [(0, 2), (4, 2), (2, 3), (8, 2)]:
        for horizon in (64, 4096, 16384):
            logits = 3 * rng.normal(size=(3, memory + 1, vocab**memory, vocab))
            tables = torch.from_numpy(log_softmax(logits, -1))
            log_mu = torch.from_numpy(np.log(rng.dirichlet(np.ones(3))))
            log_bc = float(log_bhattacharyya(tables, tables, log_mu, horizon))
            out["dp D_H^2"].append(-2 * math.expm1(log_bc))
            out["dp KL"].append(float(kl_divergence(tables, tables, log_mu, horizon)))
    return out


def count_law_raw() -> dict[str, list[float]]:
    """Raw ``D_H^2`` and ``TV`` of mixtures of products against themselves (count sums)."""
    out: dict[str, list[float]] = {"stats D_H^2": [], "stats TV": []}
    prompts = FinitePrompts(np.zeros((1, 1), dtype=np.int64), np.zeros(1))
    for horizon in (64, 4096, 16384):
        law = MixtureOfProducts(prompts, horizon, 0.3, 0.2, 0.7).count_law()
        log_mass = float(logsumexp(log_binomial(horizon)[None, :] + law.log_seq))
        out["stats D_H^2"].append(-2 * math.expm1(log_mass))  # log BC = log overlap = log mass
        out["stats TV"].append(-math.expm1(log_mass))
    return out


def main() -> int:
    raw = {**finite_state_raw(np.random.default_rng(0)), **count_law_raw()}
    limit = ROUNDOFF_TOLERANCE / 1000
    print(f"raw values of exact methods where the truth is 0 (tolerance {ROUNDOFF_TOLERANCE})")
    worst = 0.0
    for name, values in raw.items():
        below = max(0.0, -min(values))
        worst = max(worst, below)
        print(f"  {name:12s} min {min(values): .3e}  max {max(values): .3e}  "
              f"({len(values)} cases)")
    print(f"largest excess below 0: {worst:.3e} (check: <= {limit:.0e})")
    return 0 if worst <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
