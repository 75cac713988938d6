"""The check's statistical tests: one implementation with qr-analyze, checked against SciPy."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats  # type: ignore[import-untyped]

from qr_core.analysis import chi_square_uniform, ks_uniform
from qr_entropy._uniformity import (
    StatTest,
    bit_bias_test,
    byte_chi_square_test,
    ks_uniform_test,
)


def test_byte_chi_square_equals_scipy_chisquare() -> None:
    data = np.random.default_rng(12).integers(0, 256, size=5000, dtype=np.uint8)
    result = byte_chi_square_test(data)
    reference = scipy_stats.chisquare(np.bincount(data, minlength=256))
    assert result.statistic == pytest.approx(float(reference.statistic), rel=1e-12)
    assert result.p_value == pytest.approx(float(reference.pvalue), rel=1e-9)
    assert result.n == 5000


def test_ks_is_the_same_computation_as_qr_analyze() -> None:
    # n = 500 values from a fixed seed: the check and qr-analyze give identical figures.
    u = np.random.default_rng(11).random(500)
    check, analysis = ks_uniform_test(u), ks_uniform(u)
    assert (check.statistic, check.p_value) == (analysis.statistic, analysis.p_value)
    exact = scipy_stats.kstest(u, "uniform", method="exact")
    assert check.statistic == float(exact.statistic)
    assert check.p_value == pytest.approx(float(exact.pvalue), rel=1e-12)
    assert check.n == 500


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
    assert chi_square_uniform([3, 3]).p_value == 1.0


def test_bit_bias_matches_the_normal_approximation_of_the_binomial() -> None:
    data = np.random.default_rng(3).integers(0, 256, size=2000, dtype=np.uint8)
    result = bit_bias_test(data)
    ones = int(np.unpackbits(data).sum())
    z = (ones - 8000) / math.sqrt(4000)
    assert result.statistic == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(2 * float(scipy_stats.norm.sf(abs(z))), rel=1e-12)


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
    low = StatTest("t", 0.0, 0.001, 1, "")
    assert low.passed(0.001)
    assert not low.passed(0.0011)


def test_check_reaches_the_statistics_without_matplotlib() -> None:
    code = (
        "import sys; import qr_entropy.cli, qr_entropy._uniformity;"
        "import numpy as np; qr_entropy._uniformity.ks_uniform_test(np.linspace(0.1, 0.9, 9));"
        "print('matplotlib' in sys.modules, 'scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
