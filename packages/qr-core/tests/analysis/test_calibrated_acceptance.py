"""Acceptance (issue 24): a perfect device keeps every test's error rate when calibrated.

A perfect device (``zscore_bits`` at N = 20,480 bytes: S ~ Binomial(163,776, 1/2)) is
calibrated from B blocks, B in {1,000, 10,000, 100,000}, and T tokens are drawn, T in
{1,000, 20,000, 100,000}; each of ``qr_core.analysis``'s tests must reject at alpha
0.05 and 0.01 at rate alpha, within Monte Carlo error: Stouffer, the mean-z CI, the
Bayes factor, the network variance, Welch in three designs (a calibrated arm against
an exact one, two arms with their own calibrations, two arms on one calibration) and
the two-arm Bayes factor; KS, the walk, runs and lag-1 autocorrelation. Exact arms
(no calibration) are checked too: KS (finite-n), the walk with its whole-step
correction, runs and autocorrelation.

How it simulates (exact draws unless stated):

* The calibration: ``m_hat = Binomial(163,776 B, 1/2) / B`` (the exact law of the mean
  of B bit counts), ``s_hat^2 = s0^2 chi2_{B-1} / (B-1)`` (normal theory: the bit
  count's excess kurtosis, -1.2e-5, changes Var(s_hat^2) by a relative 3e-6).
* Summary tests are functions of each arm's sum of S, exact ``Binomial(163,776 T, 1/2)``,
  and of its sum of squared deviations, ``s0^2 chi2_{T-1}`` (normal theory, as above);
  they are evaluated in vectorised form over R_SUMMARY runs, and the vectorised
  formulas are checked against the library's functions on real z arrays in each cell.
* Path tests draw every token: T sorted uniforms (normalised exponential spacings)
  through the exact null CDF of S (``qr_core._null``) give T exact (S, V); u comes from
  the project's own ``randomized_pit`` with the calibration's (m_hat, s_hat), clamped
  like the amplifier; a random permutation gives the time order of
  ``z = (S - m_hat) / s_hat``. The walk, runs and autocorrelation p-values come from
  the library's functions, run by run. The calibrated KS test is the library's Monte
  Carlo test; its null draws are shared by a cell's runs (R_BOOT of them from
  ``ks_calibrated_null``, the generator ``ks_uniform`` uses), so a correct null makes
  the cell's count of ``p <= alpha`` Beta-binomial(R, k, R_BOOT + 1 - k) with
  ``k = alpha (R_BOOT + 1)``, exactly: the test checks that the Monte Carlo null is the
  law of D that the real transform produces.

Acceptance: every count lies inside its two-sided Binomial(R, alpha) interval
(Beta-binomial for the calibrated KS) of level 1e-3 / K, K = 240 checks (Bonferroni),
so a correct implementation fails this test with probability at most 1e-3. R:
summary 40,000 per cell; path 2,000 / 600 / 200 runs at T = 1,000 / 20,000 / 100,000;
R_BOOT 9,999 / 1,999 / 499. Seed 2024. Two worker processes.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from scipy import optimize, special, stats  # type: ignore[import-untyped]

from qr_core._null import null_table
from qr_core._pit import randomized_pit
from qr_core.analysis import (
    CalibrationUncertainty,
    effect_size,
    lag1_autocorrelation,
    runs_test,
    stouffer,
    welch,
)
from qr_core.analysis._ks import ks_calibrated_null, ks_sf, ks_statistic
from qr_core.analysis._netvar import network_variance_cdf
from qr_core.analysis._walk import walk_p_value

ALPHAS = (0.05, 0.01)
N_BYTES = 20_480 - 8
BITS = 8 * N_BYTES
M0 = BITS / 2.0
S0 = math.sqrt(BITS / 4.0)
TOKENS = (1_000, 20_000, 100_000)
BLOCKS = (1_000, 10_000, 100_000)
R_SUMMARY = 40_000
R_PATH = {1_000: 2_000, 20_000: 600, 100_000: 200}
R_BOOT = {1_000: 9_999, 20_000: 1_999, 100_000: 499}
SEED = 2024
FAILURE_BUDGET = 1e-3

Counts = dict[str, dict[float, int]]


def _counts() -> defaultdict[str, dict[float, int]]:
    return defaultdict(lambda: dict.fromkeys(ALPHAS, 0))


def _add(counts: Counts, name: str, p: np.ndarray) -> None:
    for a in ALPHAS:
        counts[name][a] += int(np.count_nonzero(p <= a))


def _calibration(rng: np.random.Generator, b: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    m = rng.binomial(BITS * b, 0.5, size=size) / b
    s = S0 * np.sqrt(rng.chisquare(b - 1, size=size) / (b - 1))
    return m, s


def _satterthwaite(components: list[tuple[np.ndarray, float]]) -> np.ndarray:
    total = sum(v for v, _ in components)
    return total**2 / sum(v**2 / d for v, d in components)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- summary tests


def summary_cell(t: int, b: int, seed: int) -> Counts:
    """Mean-type tests of a calibrated arm A alone and against an exact arm C, an arm
    Bc with its own calibration, and an arm D on A's calibration."""
    rng = np.random.default_rng(seed)
    cal, cal_b = CalibrationUncertainty.normal(b, "a"), CalibrationUncertainty.normal(b, "b")
    nu, mse2, sdse2 = cal.df, cal.mean_se_z**2, cal.std_se_z**2
    lo, hi = _netvar_critical(t, cal)
    counts = _counts()
    ma, sa = _calibration(rng, b, R_SUMMARY)
    mb, sb = _calibration(rng, b, R_SUMMARY)
    arm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in "ABCD":  # mean of S and sum of squared deviations of S
        arm[name] = (
            rng.binomial(BITS * t, 0.5, size=R_SUMMARY) / t,
            S0**2 * rng.chisquare(t - 1, size=R_SUMMARY),
        )
    za, va = (arm["A"][0] - ma) / sa, arm["A"][1] / (t - 1) / sa**2
    designs = {
        "welch_cal_vs_exact": ((arm["C"][0] - M0) / S0, arm["C"][1] / (t - 1) / S0**2, None),
        "welch_two_cals": ((arm["B"][0] - mb) / sb, arm["B"][1] / (t - 1) / sb**2, cal_b),
        "welch_shared_cal": ((arm["D"][0] - ma) / sa, arm["D"][1] / (t - 1) / sa**2, cal),
    }
    se = math.sqrt(1.0 / t + mse2)
    _add(counts, "stouffer", 2.0 * stats.t.sf(np.abs(za / se), nu))
    _add(counts, "bayes", special.erfc(np.abs(za / se) / math.sqrt(2.0)))
    comps = [(va / t, t - 1.0), (mse2 + za**2 * sdse2, nu)]
    se_e, df_e = np.sqrt(sum(c for c, _ in comps)), _satterthwaite(comps)
    for a in ALPHAS:
        reject = np.abs(za) > stats.t.ppf(1 - a / 2, df_e) * se_e
        counts["effect_ci"][a] += int(np.count_nonzero(reject))
    ss = (arm["A"][1] + t * (arm["A"][0] - ma) ** 2) / sa**2  # sum of z^2
    for a in ALPHAS:
        counts["netvar"][a] += int(np.count_nonzero((ss < lo[a]) | (ss > hi[a])))
    for name, (z2, v2, cal2) in designs.items():
        d = za - z2
        comps = [(va / t, t - 1.0), (v2 / t, t - 1.0)]
        model = 2.0 / t
        if cal2 is cal:  # one calibration: the offset cancels, the common scale stays
            comps.append((d**2 * sdse2, nu))
        else:
            for mean, c in ((za, cal), (z2, cal2)):
                if c is not None:
                    comps.append((c.mean_se_z**2 + mean**2 * sdse2, c.df))
                    model += c.mean_se_z**2
        se_w = np.sqrt(sum(c for c, _ in comps))
        _add(counts, name, 2.0 * stats.t.sf(np.abs(d / se_w), _satterthwaite(comps)))
        if name == "welch_two_cals":
            _add(counts, "bayes_two_cals", special.erfc(np.abs(d) / math.sqrt(2.0 * model)))
    _crosscheck(t, b, rng)
    return dict(counts)


def _netvar_critical(t: int, cal: CalibrationUncertainty) -> tuple[dict[float, float], ...]:
    """sum z^2 where the library's network-variance CDF is alpha/2 and 1 - alpha/2."""

    def root(target: float, low: float, high: float) -> float:
        return float(optimize.brentq(lambda s: network_variance_cdf(s, t, cal) - target, low, high))

    width = 8.0 * math.sqrt(2 * t + 2 * (1 + t * cal.mean_se_z**2) ** 2 + 2 * t * t / cal.df)
    lo = {a: root(a / 2, 1.0, t + width) for a in ALPHAS}
    hi = {a: root(1 - a / 2, t - width / 4, t + 4 * width) for a in ALPHAS}
    return lo, hi


def _crosscheck(t: int, b: int, rng: np.random.Generator) -> None:
    """The vectorised formulas above are the library's, on real z arrays."""
    cal, cal_b = CalibrationUncertainty.normal(b, "a"), CalibrationUncertainty.normal(b, "b")
    m, s = _calibration(rng, b, 1)
    za = (rng.binomial(BITS, 0.5, size=t) - m[0]) / s[0]
    zc = (rng.binomial(BITS, 0.5, size=t) - M0) / S0
    mean, var = float(za.mean()), float(za.var(ddof=1))
    se = math.sqrt(1 / t + 1 / b)
    st = stouffer(za, cal)
    assert math.isclose(st.p_value, 2 * stats.t.sf(abs(mean / se), b - 1), rel_tol=1e-9)
    assert math.isclose(st.standard_error, se, rel_tol=1e-12)
    comps = [(var / t, t - 1.0), (1.0 / b + mean**2 / (2.0 * (b - 1)), b - 1.0)]
    e = effect_size(za, calibration=cal)
    assert math.isclose(e.standard_error, math.sqrt(sum(c for c, _ in comps)), rel_tol=1e-9)
    assert math.isclose(e.df, float(_satterthwaite(comps)), rel_tol=1e-9)  # type: ignore[arg-type]
    w = welch(za, zc, cal, None)
    comps = [(var / t, t - 1.0), (float(zc.var(ddof=1)) / t, t - 1.0), *comps[1:]]
    assert math.isclose(w.standard_error, math.sqrt(sum(c for c, _ in comps)), rel_tol=1e-9)
    assert math.isclose(w.model_standard_error, math.sqrt(2 / t + 1 / b), rel_tol=1e-12)
    shared = welch(za, zc * 0.9, cal, cal)
    d = shared.difference
    assert math.isclose(shared.calibration_variance, d * d / (2.0 * (b - 1)), rel_tol=1e-9)
    two = welch(za, zc, cal, cal_b)
    assert two.calibration_variance > 2.0 / b


# --------------------------------------------------------------------------- path tests


def path_cell(t: int, b: int | None, seed: int) -> Counts:
    """KS, walk, runs and autocorrelation over every token of R_PATH[t] runs."""
    rng = np.random.default_rng(seed)
    reps = R_PATH[t]
    table = null_table("one_count", N_BYTES)
    edges = np.concatenate(([0.0], table.cdf))
    cal = None if b is None else CalibrationUncertainty.normal(b, "a")
    if cal is not None:
        null = ks_calibrated_null([(t, cal)], R_BOOT[t], seed)
    counts = _counts()
    batch = 8
    done = 0
    while done < reps:
        r = min(batch, reps - done)
        done += r
        e = rng.standard_exponential((r, t + 1))
        np.cumsum(e, axis=1, out=e)
        uni = e[:, :t] / e[:, t:]
        idx = np.searchsorted(table.cdf, uni, side="right")
        v = (uni - edges[idx]) / (edges[idx + 1] - edges[idx])
        s_int = (table.start + idx).astype(np.int64)
        m, sd = _calibration(rng, b, r) if b is not None else (np.full(r, M0), np.full(r, S0))
        for j in range(r):
            location = None if b is None else (float(m[j]), float(sd[j]))
            u = np.clip(randomized_pit(table, s_int[j], v[j], location), 1e-10, 1 - 1e-10)
            d = ks_statistic(u)
            if cal is None:
                p_ks = ks_sf(d, t)
            else:
                p_ks = (1.0 + np.count_nonzero(null >= d)) / (null.size + 1.0)
            z = (rng.permutation(s_int[j]) - m[j]) / sd[j]
            excursion = float(np.abs(np.cumsum(z)).max()) / math.sqrt(t)
            p = {
                "ks": p_ks,
                "walk": walk_p_value(excursion, t, cal),
                "autocorr": lag1_autocorrelation(z).p_value,
                "runs": _runs_p(z),
            }
            for name, value in p.items():
                _add(counts, name, np.array([value]))
    return dict(counts)


def _runs_p(z: np.ndarray) -> float:
    """The library's exact runs p-value where it can decide a rejection at 0.05 or 0.01;
    elsewhere the normal approximation (within 1e-3 of it at n >= 1,000) decides alike."""
    signs = np.sign(z)
    signs = signs[signs != 0]  # exact zeros belong to neither sign (as in runs_test)
    n1, n2 = int((signs > 0).sum()), int((signs < 0).sum())
    n = n1 + n2
    runs = int(np.count_nonzero(signs[1:] != signs[:-1])) + 1
    mean = 1.0 + 2.0 * n1 * n2 / n
    var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - n) / (n * n * (n - 1.0))
    p_normal = float(special.erfc(abs(runs - mean) / math.sqrt(2.0 * var)))
    return runs_test(z).p_value if 0.002 < p_normal < 0.2 else p_normal


# --------------------------------------------------------------------------- the test


def _interval(reps: int, alpha: float, level: float, boot: int | None) -> tuple[int, int]:
    """Two-sided acceptance region of a correct test's rejection count at ``level``."""
    if boot is None:
        law = stats.binom(reps, alpha)
    else:
        k = math.floor(alpha * (boot + 1))
        law = stats.betabinom(reps, k, boot + 1 - k)
    return int(law.ppf(level / 2)), int(law.isf(level / 2))


def _job(job: tuple[str, int, int | None, int]) -> tuple[str, int, int | None, Counts, float]:
    kind, t, b, seed = job
    t0 = time.process_time()
    fn: Callable[..., Counts] = summary_cell if kind == "summary" else path_cell
    counts = fn(t, b, seed)
    return kind, t, b, counts, time.process_time() - t0


@pytest.mark.slow
def test_a_perfect_device_keeps_every_error_rate() -> None:
    seeds = iter(np.random.SeedSequence(SEED).generate_state(64))
    jobs: list[tuple[str, int, int | None, int]] = []
    for t in TOKENS:
        jobs.append(("path", t, None, int(next(seeds))))
        for b in BLOCKS:
            jobs.append(("summary", t, b, int(next(seeds))))
            jobs.append(("path", t, b, int(next(seeds))))
    jobs.sort(key=lambda j: -(j[1] * R_PATH[j[1]] if j[0] == "path" else 0))  # longest first
    t0 = time.perf_counter()
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        results = list(pool.map(_job, jobs))
    wall = time.perf_counter() - t0
    checks = sum(len(r[3]) * len(ALPHAS) for r in results)
    assert checks == 240
    level = FAILURE_BUDGET / checks
    lines, failures = [], []
    for kind, t, b, counts, secs in sorted(results, key=lambda r: (r[1], r[2] or 0, r[0])):
        reps = R_SUMMARY if kind == "summary" else R_PATH[t]
        lines.append(f"[{kind}] T = {t:,}, B = {b or 'exact'}, R = {reps} ({secs:.1f} s CPU)")
        for name in sorted(counts):
            boot = R_BOOT[t] if (name == "ks" and b is not None) else None
            cells = []
            for a in ALPHAS:
                lo, hi = _interval(reps, a, level, boot)
                count = counts[name][a]
                ok = lo <= count <= hi
                cells.append(f"{count / reps:.4f} in [{lo / reps:.4f}, {hi / reps:.4f}]")
                if not ok:
                    failures.append(f"{kind} T={t} B={b} {name} alpha={a}: {count}/{reps}")
            lines.append(f"  {name:20} " + "   ".join(cells))
    cpu = sum(r[4] for r in results)
    print(
        "\n".join(lines) + f"\n{checks} checks at level {level:.2e} each; "
        f"{cpu:.1f} s CPU in the workers, {wall:.1f} s wall on 2 workers"
    )
    assert not failures, failures
