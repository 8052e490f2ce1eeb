"""Exact and Monte Carlo divergences between sequence laws (see :mod:`evaluation.divergences`)."""

from evaluation.divergences import DivergenceResult, divergence

__all__ = ["DivergenceResult", "divergence"]
