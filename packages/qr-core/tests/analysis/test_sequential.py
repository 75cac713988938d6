"""Group-sequential boundaries: published values, an independent integral, a simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qr_core.analysis import AnalysisError
from qr_core.analysis._sequential import (
    crossing_probabilities,
    group_sequential,
    sequential_tokens,
    spent_alpha,
)


@pytest.mark.parametrize(
    ("spending", "looks", "published"),
    [
        # DeMets & Lan (1994), Stat. Med. 13, 1341, table 1: alpha = 0.05, 5 equal looks.
        ("obrien-fleming", 5, (4.877, 3.357, 2.680, 2.290, 2.031)),
        ("pocock", 5, (2.438, 2.427, 2.410, 2.397, 2.386)),
        # The same design with 4 looks (e.g. R ldbounds, gsDesign sfLDOF).
        ("obrien-fleming", 4, (4.3326, 2.9631, 2.3590, 2.0141)),
    ],
)
def test_boundaries_match_published_tables(
    spending: str, looks: int, published: tuple[float, ...]
) -> None:
    design = group_sequential([k / looks for k in range(1, looks + 1)], 0.05, spending)
    decimals = len(str(published[0]).split(".")[1])
    assert [round(c, decimals) for c in design.critical] == list(published)


def test_spending_functions_spend_alpha_by_the_end() -> None:
    for spending in ("obrien-fleming", "pocock"):
        assert spent_alpha(spending, 0.05, 1.0) == pytest.approx(0.05, abs=1e-15)
    # O'Brien-Fleming spends almost nothing early; Pocock about evenly.
    assert spent_alpha("obrien-fleming", 0.05, 0.25) < 1e-4
    assert spent_alpha("pocock", 0.05, 0.25) == pytest.approx(0.05 * math.log1p((math.e - 1) / 4))


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_joint_probabilities_agree_with_the_multivariate_normal(spending: str) -> None:
    """Independent check: P(no crossing up to look k) from SciPy's multivariate normal
    CDF (Genz's algorithm) with corr(Z_i, Z_j) = sqrt(t_i / t_j)."""
    t = [0.3, 0.55, 1.0]
    design = group_sequential(t, 0.05, spending)
    for k in (2, 3):
        cov = np.array([[math.sqrt(min(a, b) / max(a, b)) for b in t[:k]] for a in t[:k]])
        mvn = stats.multivariate_normal(mean=np.zeros(k), cov=cov, abseps=1e-10, releps=1e-10)
        c = np.array(design.critical[:k])
        inside = 0.0  # P(|Z_i| < c_i for all i): inclusion-exclusion over the corners
        for signs in np.ndindex(*(2,) * k):
            corner = np.where(np.array(signs) == 1, c, -c)
            inside += (-1) ** (k - sum(signs)) * mvn.cdf(corner)
        assert 1.0 - inside == pytest.approx(design.spent[k - 1], abs=2e-6)


def test_simulated_walks_cross_as_often_as_alpha() -> None:
    """200,000 null walks of 4 looks (seed 27): the share that ever crosses is 0.05 within
    4 standard errors (se = 0.00049), and each look's share matches its spending."""
    rng = np.random.default_rng(27)
    n, t = 200_000, np.array([0.25, 0.5, 0.75, 1.0])
    steps = rng.standard_normal((n, 4)) * np.sqrt(np.diff(t, prepend=0.0))
    z = np.cumsum(steps, axis=1) / np.sqrt(t)
    design = group_sequential(t.tolist(), 0.05, "pocock")
    crossed = np.abs(z) >= np.array(design.critical)
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    se = math.sqrt(0.05 * 0.95 / n)
    assert abs(np.mean(first >= 0) - 0.05) < 4 * se
    per_look = np.diff(design.spent, prepend=0.0)
    for k in range(4):
        share = np.mean(first == k)
        assert abs(share - per_look[k]) < 4 * math.sqrt(per_look[k] / n) + 1e-4


def test_power_of_a_drift_agrees_with_simulation() -> None:
    """50,000 walks with drift 2.8 (seed 28): the crossing share within 4 se of the
    computed power."""
    t = [1 / 3, 2 / 3, 1.0]
    design = group_sequential(t, 0.05, "obrien-fleming")
    power = sum(crossing_probabilities(design.critical, t, drift=2.8))
    rng = np.random.default_rng(28)
    n, ta = 50_000, np.array(t)
    dt = np.diff(ta, prepend=0.0)
    s = np.cumsum(rng.standard_normal((n, 3)) * np.sqrt(dt) + 2.8 * dt, axis=1)
    crossed = (np.abs(s / np.sqrt(ta)) >= np.array(design.critical)).any(axis=1)
    assert abs(crossed.mean() - power) < 4 * math.sqrt(power * (1 - power) / n)


def test_one_look_is_the_fixed_test() -> None:
    design = group_sequential([1.0], 0.05, "obrien-fleming")
    assert design.critical[0] == pytest.approx(stats.norm.isf(0.025), abs=1e-12)
    assert design.nominal_alpha[0] == pytest.approx(0.05)


def test_sequential_plan_needs_a_few_more_tokens_than_a_fixed_one() -> None:
    n, power, design = sequential_tokens(0.02, 0.05, 0.8, 2, 4, "obrien-fleming")
    assert power >= 0.8
    assert 39_245 < n < 1.03 * 39_245  # O'Brien-Fleming costs about 2% (fixed: 39,245)
    below, _, _ = sequential_tokens(0.02, 0.05, 0.8, 2, 4, "pocock")
    assert below > 1.15 * 39_245  # Pocock spends early and pays about 20%
    assert len(design.critical) == 4


@pytest.mark.parametrize(
    ("fractions", "alpha", "spending", "message"),
    [
        ([0.5, 0.9], 0.05, "pocock", "fractions must increase"),
        ([0.5, 0.4, 1.0], 0.05, "pocock", "fractions must increase"),
        ([0.5, 1.0], 1.5, "pocock", "alpha must lie"),
        ([0.5, 1.0], 0.05, "haybittle", "spending must be one of"),
    ],
)
def test_bad_designs_are_refused(
    fractions: list[float], alpha: float, spending: str, message: str
) -> None:
    with pytest.raises(AnalysisError, match=message):
        group_sequential(fractions, alpha, spending)
