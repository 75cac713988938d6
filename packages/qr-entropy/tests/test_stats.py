"""The check's statistical tests, with SciPy and with the pure fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats  # type: ignore[import-untyped]

from qr_entropy import _stats
from qr_entropy._stats import (
    bit_bias_test,
    byte_chi_square_test,
    chi2_sf,
    ks_uniform_test,
)


@pytest.fixture
def no_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as if SciPy were not installed (qr-entropy must not require it)."""
    monkeypatch.setattr(_stats, "_scipy_stats", lambda: None)
    assert not _stats.scipy_available()


@pytest.mark.parametrize("df", [1, 2, 7, 255])
@pytest.mark.parametrize("quantile", [1e-9, 0.001, 0.1, 0.5, 0.9, 0.999, 1 - 1e-9])
def test_chi2_fallback_matches_scipy(no_scipy: None, df: int, quantile: float) -> None:
    x = float(scipy_stats.chi2.ppf(quantile, df))
    expected = float(scipy_stats.chi2.sf(x, df))
    assert chi2_sf(x, df) == pytest.approx(expected, rel=1e-9, abs=1e-13)


def test_chi2_fallback_edge_values(no_scipy: None) -> None:
    assert chi2_sf(0.0, 255) == 1.0
    assert chi2_sf(-1.0, 3) == 1.0
    assert chi2_sf(10_000.0, 255) < 1e-300 or chi2_sf(10_000.0, 255) == 0.0


def test_ks_statistic_equals_scipy() -> None:
    # n = 500 values from a fixed seed; D must match SciPy's to rounding.
    u = np.random.default_rng(11).random(500)
    fallback = ks_uniform_test(u)
    exact = scipy_stats.kstest(u, "uniform")
    assert fallback.statistic == pytest.approx(float(exact.statistic), abs=1e-12)
    assert fallback.p_value == pytest.approx(float(exact.pvalue), abs=0.005)
    assert fallback.n == 500


def test_ks_detects_non_uniform_u() -> None:
    u = np.random.default_rng(5).random(200) ** 2  # n = 200, seed 5: mass moved towards 0
    assert not ks_uniform_test(u).passed(0.001)
    with pytest.raises(ValueError, match="at least one"):
        ks_uniform_test([])


def test_byte_chi_square_exact_cases() -> None:
    flat = np.tile(np.arange(256, dtype=np.uint8), 40)
    result = byte_chi_square_test(flat)
    assert (result.statistic, result.p_value, result.n) == (0.0, 1.0, 10240)
    assert byte_chi_square_test(flat.tobytes()).statistic == 0.0
    stuck = np.zeros(10240, dtype=np.uint8)
    assert byte_chi_square_test(stuck).statistic == pytest.approx(255 * 10240)
    assert not byte_chi_square_test(stuck).passed(0.001)


def test_bit_bias_exact_cases() -> None:
    balanced = np.full(1000, 0x0F, dtype=np.uint8)
    assert bit_bias_test(balanced).statistic == 0.0
    assert bit_bias_test(balanced).p_value == 1.0
    ones = np.full(1000, 0xFF, dtype=np.uint8)
    result = bit_bias_test(ones)
    assert result.statistic == pytest.approx(math.sqrt(8000))
    assert result.n == 8000
    assert "fraction of ones 1.000000" in result.detail
    assert not result.passed(0.001)


def test_pass_rule_is_p_at_least_alpha() -> None:
    result = bit_bias_test(np.full(8, 0x0F, dtype=np.uint8))
    assert result.passed(1.0)  # p = 1
    low = _stats.StatTest("t", 0.0, 0.001, 1, "")
    assert low.passed(0.001)
    assert not low.passed(0.0011)
