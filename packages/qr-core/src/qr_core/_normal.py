"""The standard normal CDF, vectorised and accurate in both tails.

numpy has no ``erfc``. ``0.5 * (1 + erf(z / sqrt(2)))`` loses all relative accuracy
in the lower tail (1 + (-0.9999...) cancels), so Phi is computed as
``0.5 * erfc(-z / sqrt(2))`` with an ``erfc`` that keeps relative accuracy:

* ``x < 1``: ``erfc = 1 - erf`` with the positive series
  ``erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (2n+1)!!``; here
  ``erfc > 0.157``, so the subtraction costs at most a factor 6 of 1e-16.
* ``x >= 1``: the Laplace continued fraction
  ``erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))``,
  evaluated backwards from a fixed depth; 200 levels reach 2e-16 at x = 1 and
  converge faster above.
* ``x < 0``: ``erfc(x) = 2 - erfc(-x)``, whose value lies in [1, 2]: no cancellation.

Arrays of at most 32 values (the ``B`` values of one sampling step) go through
``math.erfc`` element by element instead: the vectorised evaluation costs about
250 small numpy operations whatever the size (0.6 ms for 8 values), the loop a
few microseconds. Tests compare both paths against ``math.erfc`` over the whole
range, so they agree to the same ~1e-13.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["erfc", "normal_cdf"]

_SERIES_LIMIT = 1.0
_SERIES_TERMS = 40
_CF_DEPTH = 200
# Up to this many values, a Python loop over math.erfc beats the fixed cost of
# the vectorised series and continued fraction.
_SCALAR_LIMIT = 32
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_ONE_OVER_SQRT_PI = 1.0 / math.sqrt(math.pi)

FloatArray = npt.NDArray[np.float64]


def _erfc_nonnegative(x: FloatArray) -> FloatArray:
    small = np.minimum(x, _SERIES_LIMIT)
    two_x2 = 2.0 * small * small
    term = small.copy()
    total = np.zeros_like(small)
    for n in range(_SERIES_TERMS):
        total += term
        term *= two_x2 / (2 * n + 3)
    series = 1.0 - _TWO_OVER_SQRT_PI * np.exp(-small * small) * total

    large = np.maximum(x, _SERIES_LIMIT)
    denom = large.copy()
    for n in range(_CF_DEPTH, 0, -1):
        denom = large + (0.5 * n) / denom
    fraction = _ONE_OVER_SQRT_PI * np.exp(-large * large) / denom
    return np.where(x < _SERIES_LIMIT, series, fraction)


def erfc(x: npt.ArrayLike) -> FloatArray:
    """Complementary error function, elementwise, relative error below ~1e-13.

    Measured worst case 6e-14, near x = 23, where ``exp(-x^2)`` inherits the
    rounding of ``x^2``. Up to 32 values are computed by ``math.erfc``.

    Args:
        x: Real values (any shape).

    Returns:
        ``erfc(x)`` as float64 with the shape of ``x``.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.size <= _SCALAR_LIMIT:
        flat = [math.erfc(v) for v in arr.ravel().tolist()]
        return np.array(flat, dtype=np.float64).reshape(arr.shape)
    positive = _erfc_nonnegative(np.abs(arr))
    return np.where(arr < 0, 2.0 - positive, positive)


def normal_cdf(z: npt.ArrayLike) -> FloatArray:
    """Standard normal CDF ``Phi(z) = 0.5 * erfc(-z / sqrt(2))``, elementwise.

    Relative accuracy holds in the lower tail (``Phi(-8)`` ~ 6e-16 is exact to
    ~1e-15) and the upper tail is exact to the spacing of float64 near 1.
    """
    arr = np.asarray(z, dtype=np.float64)
    return 0.5 * erfc(-arr / math.sqrt(2.0))
