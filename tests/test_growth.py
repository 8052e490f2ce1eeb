"""The growth exponent in H (least squares on log-log) against scipy's linear regression."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evaluation.bench.analysis import loglog_slope


def test_loglog_slope_matches_scipy_linregress() -> None:
    rng = np.random.default_rng(3)
    h = np.array([16, 32, 64, 128, 256, 512, 1024])
    y = 3.0 * h**0.7 * np.exp(0.1 * rng.standard_normal(len(h)))
    slope, se, n = loglog_slope(h, y)
    fit = stats.linregress(np.log(h), np.log(y))
    assert n == 7
    assert slope == pytest.approx(fit.slope, rel=1e-12)
    assert se == pytest.approx(fit.stderr, rel=1e-10)


def test_loglog_slope_skips_non_positive_and_needs_two_horizons() -> None:
    slope, se, n = loglog_slope([16, 64, 256, 1024], [np.nan, 2.0, 0.0, 8.0])
    assert n == 2 and slope == pytest.approx(np.log(4) / np.log(16)) and np.isnan(se)
    assert np.isnan(loglog_slope([64, 64], [1.0, 2.0])[0])
    assert np.isnan(loglog_slope([64], [1.0])[0])
