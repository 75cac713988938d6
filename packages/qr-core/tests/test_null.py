"""The exact null tables and the randomised transform, checked by exact calculation.

No sampling here. Each amplifier's u is ``lo(s) + V (hi(s) - lo(s))`` with
``lo(s) = T(s - 1)``, ``hi(s) = T(s)`` from one table T, so the atoms tile [0, 1].
With V uniform, ``P(u <= x)`` is linear in x inside each atom and equals the true
``F(s)`` at the atom's top ``x = T(s)``, where ``P(u <= x) - x = F(s) - T(s)``. Hence

    max over x of |P(u <= x) - x| = max over s of |F(s) - T(s)|

plus what the implementation adds on top: V is a multiple of 2**-53 (at most
2**-53 of an atom, i.e. <= 2**-53 of probability), the float64 product and sum in
``lo + V (hi - lo)`` (<= 2 ulp = 4.4e-16), and the clamp to ``(1e-10, 1 - 1e-10)``
(<= 1e-10). F comes from references independent of the tables: exact binomial
coefficients in Python integers for ``one_count``; for ``byte_sum`` the sum of the 8
bit planes ``S = sum_i 2^i B_i`` with ``B_i ~ Binomial(n, 1/2)`` independent,
convolved by direct sums of non-negative terms (no FFT), whose rounding bound is
stated at the function.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qr_core import ZScoreBitsAmplifier, ZScoreMeanAmplifier
from qr_core._null import Statistic, null_table
from qr_core._pit import randomized_pit, uniform_53

# What the implementation adds to the table error (see the module docstring).
IMPLEMENTATION_SLACK = 2.0**-53 + 4.4e-16 + 1e-10
# The targets for max over x of |P(u <= x) - x|.
TARGET = {"one_count": 1e-9, "byte_sum": 1e-6}


def _exact_binomial_cdf(n_bytes: int, start: int, length: int) -> tuple[np.ndarray, float]:
    """``P(S <= k)`` for k in ``[start, start + length)``, S ~ Binomial(8 n, 1/2).

    Exact integers, rounded once to float64 (error <= 2**-60). Returns the values
    and a bound on the mass below ``start`` that they leave out (Hoeffding).
    """
    m = 8 * n_bytes
    c = math.comb(m, start)
    cum = 0
    out = np.empty(length, dtype=np.float64)
    shift = max(m - 62, 0)
    for i in range(length):
        k = start + i
        cum += c
        out[i] = (cum >> shift) / 2.0 ** (m - shift)
        c = c * (m - k) // (k + 1)
    gap = m / 2 - start
    below = 0.0 if start == 0 else math.exp(-2 * gap * gap / m)
    return out, below + 2.0**-60


def _binomial_pmf(n: int, half_width: float) -> tuple[int, np.ndarray]:
    """Binomial(n, 1/2) pmf within ``half_width`` of n/2, each value correctly rounded."""
    lo = max(0, math.floor(n / 2 - half_width))
    hi = min(n, math.ceil(n / 2 + half_width))
    c = math.comb(n, lo)
    values = []
    for k in range(lo, hi + 1):
        values.append(c / 2**n if n < 1000 else (c << 64 >> n) / 2.0**64)
        c = c * (n - k) // (k + 1)
    return lo, np.array(values)


def _byte_sum_reference_cdf(n: int) -> tuple[int, np.ndarray, float]:
    """``P(S <= s)`` over a window, S the sum of n uniform bytes, via bit planes.

    Returns ``(start, cdf, bound)``. Planes are cut at 12 of their standard
    deviations (mass left out per plane <= 2 exp(-72) by Hoeffding) and partial
    sums at 13 of theirs (<= 2 exp(-28) each; the planes' range is small, see
    the exponent below); all sums add non-negative terms, so rounding is at most
    one relative ulp per addition: below 1e-11 in total for these sizes.
    """
    sd_plane = math.sqrt(n) / 2
    tap_lo, taps = _binomial_pmf(n, 12 * sd_plane)
    start, acc = 0, np.ones(1)
    lost = 0.0
    for i in range(8):
        step = 2**i
        out = np.zeros(acc.size + step * (taps.size - 1))
        for t, w in enumerate(taps):
            out[t * step : t * step + acc.size] += w * acc
        start += step * tap_lo
        acc = out
        lost += 2 * math.exp(-72)
        # Prune the partial sum sum_{l <= i} 2^l B_l to 13 of its standard deviations.
        mean = n * (2 ** (i + 1) - 1) / 2
        sd = math.sqrt(n * (4 ** (i + 1) - 1) / 12)
        keep_lo = max(0, math.floor(mean - 13 * sd) - start)
        keep_hi = min(acc.size, math.ceil(mean + 13 * sd) - start + 1)
        if keep_lo > 0 or keep_hi < acc.size:
            # Hoeffding over n bytes of range 2^(i+1) - 1: 2 exp(-2 (13 sd)^2 / (n r^2)).
            r = 2 ** (i + 1) - 1
            lost += 2 * math.exp(-2 * (13 * sd) ** 2 / (n * r * r))
        acc = acc[keep_lo:keep_hi]
        start += keep_lo
    return start, np.cumsum(acc), lost + 1e-11


def _table_error(
    table_start: int, table_cdf: np.ndarray, ref_start: int, ref_cdf: np.ndarray
) -> float:
    """max over s of |T(s) - F(s)|, both extended by 0 below and 1 above their windows."""
    lo = min(table_start, ref_start)
    hi = max(table_start + table_cdf.size, ref_start + ref_cdf.size)
    s = np.arange(lo, hi)

    def extend(start: int, cdf: np.ndarray) -> np.ndarray:
        i = s - start
        return np.where(i < 0, 0.0, np.where(i >= cdf.size, 1.0, cdf[np.clip(i, 0, cdf.size - 1)]))

    return float(np.abs(extend(table_start, table_cdf) - extend(ref_start, ref_cdf)).max())


@pytest.mark.parametrize("n_bytes", [1, 3, 1016, 20472], ids=lambda n: f"n={n}")
def test_one_count_table_is_exact_binomial(n_bytes: int) -> None:
    # n = N - 8 statistic bytes: N = 1,024 and N = 20,480 are the sizes.
    table = null_table("one_count", n_bytes)
    ref, bound = _exact_binomial_cdf(n_bytes, table.start, table.cdf.size)
    error = _table_error(table.start, table.cdf, table.start, ref) + bound
    assert error + IMPLEMENTATION_SLACK <= TARGET["one_count"], error
    # Measured: 3.3e-16 (n = 1,016) and 2.3e-15 (n = 20,472); 1e-12 leaves room.
    assert error < 1e-12


@pytest.mark.parametrize("n_bytes", [1, 2, 1016, 20472], ids=lambda n: f"n={n}")
def test_byte_sum_table_matches_the_bit_plane_convolution(n_bytes: int) -> None:
    table = null_table("byte_sum", n_bytes)
    start, ref, bound = _byte_sum_reference_cdf(n_bytes)
    error = _table_error(table.start, table.cdf, start, ref) + bound
    assert error + IMPLEMENTATION_SLACK <= TARGET["byte_sum"], error
    # Measured |T - F|: 5.4e-14 (n = 1,016) and 1.6e-12 (n = 20,472), plus the
    # reference's own bound 1.2e-11.
    assert error < 1e-9


def test_small_byte_sums_are_exact() -> None:
    # Two bytes: P(S <= s) = (number of pairs) / 65536, exactly representable; the
    # FFT leaves a few ulp.
    table = null_table("byte_sum", 2)
    counts = np.convolve(np.ones(256), np.ones(256))
    assert table.start == 0
    np.testing.assert_allclose(table.cdf, np.cumsum(counts) / 65536, rtol=0, atol=1e-15)


@pytest.mark.parametrize("statistic", ["one_count", "byte_sum"])
def test_tables_are_monotone_and_end_at_one(statistic: str) -> None:
    table = null_table(statistic, 1016)  # type: ignore[arg-type]
    assert np.all(np.diff(table.cdf) >= 0)
    assert table.cdf[-1] == 1.0
    assert table.cdf[0] < 1e-15


def test_pit_atoms_tile_the_unit_interval() -> None:
    # u at V = 0 is the atom's bottom T(s - 1); the top T(s) is the next atom's bottom.
    table = null_table("one_count", 1016)
    s = np.arange(table.start - 2, table.start + table.cdf.size + 2)
    bottom = randomized_pit(table, s, np.zeros(s.size))
    nearly_top = randomized_pit(table, s, np.full(s.size, 1 - 2.0**-53))
    assert bottom[0] == 0.0
    assert bottom[-1] == 1.0
    np.testing.assert_allclose(nearly_top[:-1], bottom[1:], rtol=0, atol=4.4e-16)
    assert np.all(np.diff(bottom) >= 0)


@pytest.mark.parametrize("statistic", ["one_count", "byte_sum"])
def test_atoms_outside_the_window_are_empty(statistic: Statistic) -> None:
    table = null_table(statistic, 1016)
    first, last = table.start, table.start + table.cdf.size - 1
    lo, hi = table.atoms(np.array([first - 9, first - 1, first, last, last + 1, last + 9]))
    assert lo.tolist() == [0.0, 0.0, 0.0, table.cdf[-2], 1.0, 1.0]
    assert hi.tolist() == [0.0, 0.0, table.cdf[0], 1.0, 1.0, 1.0]


def test_uniform_53_reads_the_last_8_bytes_little_endian() -> None:
    tail = np.array([[0] * 8, [255] * 8, [0, 8, 0, 0, 0, 0, 0, 0], [0] * 7 + [128]], np.uint8)
    v = uniform_53(tail)
    assert v[0] == 0.0
    assert v[1] == 1 - 2.0**-53
    assert v[2] == 2.0**-53  # bit 11 of the 64 is the lowest bit kept
    assert v[3] == 0.5


@pytest.mark.parametrize("cls", [ZScoreMeanAmplifier, ZScoreBitsAmplifier])
def test_s_is_the_first_n_minus_8_bytes_and_v_the_last_8(
    cls: type[ZScoreMeanAmplifier] | type[ZScoreBitsAmplifier],
) -> None:
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=(1, 1024), dtype=np.uint8)
    amp = cls(sample_count=1024)
    base = amp.amplify_batch(raw)
    other_v = raw.copy()
    other_v[0, -8:] ^= 0xFF
    changed = amp.amplify_batch(other_v)
    assert changed.z_score[0] == base.z_score[0]
    assert changed.u[0] != base.u[0]
    table = null_table(cls.statistic, 1016)
    s = amp.integer_statistic(raw)
    lo, hi = table.atoms(s)
    assert lo[0] <= base.u[0] <= hi[0]
    assert lo[0] <= changed.u[0] <= hi[0]
    expected = lo[0] + uniform_53(raw[:, -8:])[0] * (hi[0] - lo[0])
    assert base.u[0] == expected
