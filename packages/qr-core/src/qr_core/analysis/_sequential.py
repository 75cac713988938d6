"""Group-sequential designs: Lan-DeMets alpha spending, exact boundaries, their power.

A group-sequential test of mean z looks at the data K times, after fractions
``t_1 < ... < t_K = 1`` of the planned tokens, and stops at the first look whose
statistic crosses its boundary: ``|Z_k| >= c_k``. Under the null hypothesis the
statistics ``Z_k`` are those of a Brownian motion ``S`` seen at the looks,
``Z_k = S(t_k) / sqrt(t_k)`` (exactly so for the known-variance normal tests of mean z,
whose increments between looks are independent normals). The boundaries are chosen so
that the probability of stopping at look k or before is the alpha-spending function
``alpha(t_k)`` (Lan & DeMets (1983), *Biometrika* 70, 659):

* ``obrien-fleming``: each side spends the one-sided O'Brien-Fleming-type function at
  level alpha/2, ``2 - 2 Phi(z_{1-alpha/4} / sqrt(t))``, so
  ``alpha(t) = 4 - 4 Phi(z_{1-alpha/4} / sqrt(t))`` in all (the two-sided form of
  DeMets & Lan (1994), *Stat. Med.* 13, 1341, and of the common software);
* ``pocock``: ``alpha(t) = alpha ln(1 + (e - 1) t)``, half on each side.

``c_1`` has a closed form; each later ``c_k`` solves ``P(first crossing at look k) =
alpha(t_k) - alpha(t_{k-1})``, where the probability of crossing at look k is an
integral over the density of ``S(t_{k-1})`` on the continuation region (the recursion
of Armitage, McPherson & Rowe (1969), *J. R. Stat. Soc. A* 132, 235; Jennison &
Turnbull (2000), *Group Sequential Methods*, ch. 19). That density is carried on a
grid (Simpson's rule); the probability of crossing given ``S(t_{k-1}) = u`` is the
normal tail itself, so only one integral per look is numerical. The tests check the
boundaries against SciPy's multivariate normal distribution and a simulation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._stats import scipy_stats
from qr_core.records._preregistration import SPENDING_FUNCTIONS

__all__ = [
    "SequentialDesign",
    "crossing_probabilities",
    "group_sequential",
    "spent_alpha",
]

_GRID: Final = 1001
"""Grid points per look (odd, for Simpson's rule); 2001 changes a boundary by < 1e-7."""

_F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SequentialDesign:
    """The boundaries of a two-sided group-sequential test."""

    alpha: float
    """Two-sided level of the whole test."""
    spending: str
    """The alpha-spending function (``obrien-fleming`` or ``pocock``)."""
    fractions: tuple[float, ...]
    """Information fractions of the looks (tokens at the look / planned tokens)."""
    critical: tuple[float, ...]
    """``c_k``: stop at look k when ``|Z_k| >= c_k`` (``inf``: no alpha left there)."""
    nominal_alpha: tuple[float, ...]
    """Two-sided p-value of ``c_k`` alone: ``2 (1 - Phi(c_k))``."""
    spent: tuple[float, ...]
    """``alpha(t_k)``: probability under the null of stopping at look k or before."""


def spent_alpha(spending: str, alpha: float, t: float) -> float:
    """The alpha spent by information fraction ``t`` (two-sided).

    Raises:
        AnalysisError: Unknown ``spending``, or ``alpha`` / ``t`` out of range.
    """
    _check(spending, alpha)
    if not 0.0 < t <= 1.0:
        raise AnalysisError(f"information fraction must lie in (0, 1], got {t!r}")
    if spending == "pocock":
        return alpha * math.log1p((math.e - 1.0) * t)
    norm = scipy_stats().norm
    return float(4.0 * norm.sf(norm.isf(alpha / 4.0) / math.sqrt(t)))


def group_sequential(
    fractions: Sequence[float], alpha: float, spending: str, *, grid: int = _GRID
) -> SequentialDesign:
    """The boundaries of the two-sided level-``alpha`` test with looks at ``fractions``.

    Args:
        fractions: Increasing information fractions, the last one 1.
        alpha: Two-sided level of the whole test.
        spending: ``obrien-fleming`` or ``pocock`` (Lan-DeMets types).
        grid: Grid points per look (odd).

    Raises:
        AnalysisError: An argument is out of range (the message names it).
    """
    _check(spending, alpha)
    t = _fractions(fractions)
    spent = [spent_alpha(spending, alpha, x) for x in t]
    stats = scipy_stats()
    critical = [float(stats.norm.isf(spent[0] / 2.0))]
    density: tuple[_F64, _F64] | None = None
    for k in range(1, len(t)):
        density = _continue(density, critical[k - 1], t, k - 1, 0.0, grid)
        target = spent[k] - spent[k - 1]
        nodes, weights = density
        dt = t[k] - t[k - 1]

        if target <= 0.0:
            critical.append(math.inf)
            continue
        # The crossing probability falls as c grows: bisect for the one that spends
        # exactly the target.
        low, high = 0.0, 40.0
        while high - low > 1e-12:
            mid = 0.5 * (low + high)
            if _cross(nodes, weights, mid * math.sqrt(t[k]), dt, 0.0) > target:
                low = mid
            else:
                high = mid
        critical.append(0.5 * (low + high))
    nominal = tuple(float(2.0 * stats.norm.sf(c)) for c in critical)
    return SequentialDesign(
        float(alpha), spending, tuple(t), tuple(critical), nominal, tuple(spent)
    )


def crossing_probabilities(
    critical: Sequence[float], fractions: Sequence[float], drift: float = 0.0, *, grid: int = _GRID
) -> tuple[float, ...]:
    """P(the test first stops at look k), k = 1 .. K, when ``S(t)`` has ``drift``.

    With the known-variance test of mean z, ``drift = effect * sqrt(N / f)`` for N
    planned tokens per arm, ``f = 2`` for two arms and 1 for one sample; their sum is
    the power.

    Raises:
        AnalysisError: ``critical`` and ``fractions`` differ in length, or the
            fractions are not increasing up to 1.
    """
    t = _fractions(fractions)
    if len(critical) != len(t):
        raise AnalysisError(
            f"critical has {len(critical)} values but fractions {len(t)}; need one per look"
        )
    norm = scipy_stats().norm
    b1, s1 = critical[0] * math.sqrt(t[0]), math.sqrt(t[0])
    out = [float(norm.cdf((-b1 - drift * t[0]) / s1) + norm.sf((b1 - drift * t[0]) / s1))]
    density: tuple[_F64, _F64] | None = None
    for k in range(1, len(t)):
        density = _continue(density, critical[k - 1], t, k - 1, drift, grid)
        nodes, weights = density
        b = critical[k] * math.sqrt(t[k])
        out.append(_cross(nodes, weights, b, t[k] - t[k - 1], drift))
    return tuple(out)


def _continue(
    density: tuple[_F64, _F64] | None, c: float, t: list[float], k: int, drift: float, grid: int
) -> tuple[_F64, _F64]:
    """Nodes and weights (density x Simpson weight) of ``S(t_k)`` on the continuation
    region of look k, from those of look k - 1 (``None`` at the first look)."""
    b = c * math.sqrt(t[k]) if math.isfinite(c) else 12.0 * math.sqrt(t[k])
    nodes = np.linspace(-b, b, grid)
    simpson = np.ones(grid)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    simpson *= (nodes[1] - nodes[0]) / 3.0
    if density is None:
        sd = math.sqrt(t[0])
        values = np.exp(-0.5 * ((nodes - drift * t[0]) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    else:
        prev_nodes, prev_weights = density
        dt = t[k] - t[k - 1]
        sd = math.sqrt(dt)
        diff = (nodes[:, None] - prev_nodes[None, :] - drift * dt) / sd
        kernel = np.exp(-0.5 * diff * diff) / (sd * math.sqrt(2 * math.pi))
        values = kernel @ prev_weights
    return nodes, values * simpson


def _cross(nodes: _F64, weights: _F64, b: float, dt: float, drift: float) -> float:
    """P(|S(t_k)| >= b and no earlier stop), from the weighted density at look k - 1."""
    norm = scipy_stats().norm
    sd = math.sqrt(dt)
    mean = nodes + drift * dt
    tail = norm.cdf((-b - mean) / sd) + norm.sf((b - mean) / sd)
    return float(np.dot(weights, tail))


def _check(spending: str, alpha: float) -> None:
    if spending not in SPENDING_FUNCTIONS:
        raise AnalysisError(f"spending must be one of {list(SPENDING_FUNCTIONS)}, got {spending!r}")
    if not 0.0 < alpha < 1.0:
        raise AnalysisError(f"alpha must lie in (0, 1), got {alpha!r}")


def _fractions(fractions: Sequence[float]) -> list[float]:
    t = [float(x) for x in fractions]
    increasing = all(a < b for a, b in itertools.pairwise(t))
    if not (t and t[0] > 0.0 and t[-1] == 1.0 and increasing):
        raise AnalysisError(
            f"fractions must increase from above 0 to exactly 1, got {list(fractions)}"
        )
    return t


def sequential_tokens(
    effect: float, alpha: float, target_power: float, arms: int, looks: int, spending: str
) -> tuple[int, float, SequentialDesign]:
    """The smallest planned tokens per arm whose group-sequential test reaches the power.

    The looks fall at ``ceil(k N / K)`` tokens per arm and the boundaries are those of
    their exact fractions; the known-variance test of mean z has drift
    ``|effect| sqrt(N / arms)``.

    Args:
        effect: Shift of mean z to detect (between the arms, or from 0).
        alpha: Two-sided level of the whole test.
        target_power: Power wanted.
        arms: 2 (two-arm: difference of means) or 1 (one sample).
        looks: Planned looks K (>= 2).
        spending: ``obrien-fleming`` or ``pocock``.

    Returns:
        ``(tokens_per_arm, achieved_power, design)``.

    Raises:
        AnalysisError: An argument is out of range (the message names it).
    """
    _check(spending, alpha)
    if not (math.isfinite(effect) and effect != 0.0):
        raise AnalysisError(f"effect must be a non-zero finite number, got {effect!r}")
    if not alpha < target_power < 1.0:
        raise AnalysisError(f"power must lie in (alpha, 1) = ({alpha}, 1), got {target_power!r}")
    if not 2 <= looks <= 20:
        raise AnalysisError(f"looks must lie in [2, 20], got {looks!r}")
    even = [k / looks for k in range(1, looks + 1)]
    even[-1] = 1.0
    design = group_sequential(even, alpha, spending)
    low, high = 0.0, 60.0  # the drift that reaches the power, at evenly spaced looks
    while high - low > 1e-9:
        mid = 0.5 * (low + high)
        if sum(crossing_probabilities(design.critical, even, mid)) < target_power:
            low = mid
        else:
            high = mid
    n = max(looks, math.ceil(arms * (high / effect) ** 2))

    def exact(n: int) -> tuple[float, SequentialDesign]:
        t = [-(-k * n // looks) / n for k in range(1, looks + 1)]
        d = group_sequential(t, alpha, spending)
        drift = abs(effect) * math.sqrt(n / arms)
        return sum(crossing_probabilities(d.critical, t, drift)), d

    achieved, design = exact(n)
    while achieved < target_power:
        n += 1
        achieved, design = exact(n)
    while n > looks:
        below, d = exact(n - 1)
        if below < target_power:
            break
        n, achieved, design = n - 1, below, d
    return n, achieved, design
