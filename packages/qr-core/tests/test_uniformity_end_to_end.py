"""os.urandom -> amplifier -> select_tokens: token frequencies over 100,000 draws.

Rows: a uniform row of V = 1,000 tokens and a nearly flat row of V = 151,936
(N(0, 0.5^2) logits, seed 0), temperature 1, no top-k / top-p, where ``Phi(z)``
of the old mapping left most tokens unreachable. N = 1,024 bytes per draw (1,016
form S): the lattice of S is coarser than at the default 20,480, so this is the
harder case, and the draws cost 100 MB of os.urandom per amplifier instead of 2 GB.

Tokens: select_tokens draws the first rows itself (1,000 of the V = 1,000 row, 32
of the V = 151,936 row, whose flat rows cost select_tokens tens of ms each on this
machine); the test asserts that they equal the reference mapping (the first token
in select_tokens' order whose float64 cumulative weight over the total exceeds u,
its documented rule), which then maps all 100,000 draws.

Statistics: chi-square over bins of consecutive tokens in selection order pooled
to expected >= 5, p > 0.001; every token with expected count >= 5 drawn at least
once (for a correct implementation the chance of missing one is below e^-5 per
token; with V = 1,000 every token expects 100, e^-100). os.urandom cannot be
seeded: a sample failing the chi-square is redrawn once and the test fails only
if both fail, so a correct implementation fails with probability 0.001^2 = 1e-6.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import stats

from qr_core import (
    PhiZScoreBitsAmplifier,
    PhiZScoreMeanAmplifier,
    SignalAmplifier,
    ZScoreBitsAmplifier,
    ZScoreMeanAmplifier,
    normal_cdf,
    select_tokens,
)

N = 1024
DRAWS = 100_000
ALPHA = 0.001


def _row(v: int) -> np.ndarray:
    if v == 1000:
        return np.zeros(v, dtype=np.float32)
    return np.random.default_rng(0).normal(0.0, 0.5, v).astype(np.float32)


def _order_and_cdf(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """select_tokens' order (weight descending, id ascending) and its normalised CDF."""
    w = np.exp((logits - logits.max()) / np.float32(1.0))
    order = np.lexsort((np.arange(w.size), -w))
    cdf = np.cumsum(w[order].astype(np.float64))
    return order, cdf / cdf[-1]


def _tokens(logits: np.ndarray, u: np.ndarray, checked: int) -> np.ndarray:
    order, cdf = _order_and_cdf(logits)
    tokens = order[np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)]
    sel = select_tokens(
        np.broadcast_to(logits, (checked, logits.size)).copy(),
        u[:checked],
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )
    assert np.array_equal(np.asarray(sel.token_id), tokens[:checked])
    return np.asarray(tokens, dtype=np.int64)


def _chi_square(logits: np.ndarray, tokens: np.ndarray) -> tuple[float, int]:
    order, cdf = _order_and_cdf(logits)
    expected = np.diff(np.concatenate(([0.0], cdf))) * tokens.size
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    observed = np.bincount(rank[tokens], minlength=order.size).astype(np.float64)
    # Pool consecutive ranks until each bin expects >= 5; the remainder joins the last.
    edges = [0]
    acc = 0.0
    for i, e in enumerate(expected):
        acc += e
        if acc >= 5.0:
            edges.append(i + 1)
            acc = 0.0
    edges[-1] = expected.size
    exp_b = np.add.reduceat(expected, edges[:-1])
    obs_b = np.add.reduceat(observed, edges[:-1])
    never = int(np.sum((expected >= 5) & (observed == 0)))
    stat = float(((obs_b - exp_b) ** 2 / exp_b).sum())
    return float(stats.chi2.sf(stat, exp_b.size - 1)), never


@pytest.mark.slow
@pytest.mark.parametrize("cls", [ZScoreMeanAmplifier, ZScoreBitsAmplifier])
def test_token_frequencies_match_the_row(cls: type[SignalAmplifier]) -> None:
    amp = cls(sample_count=N)
    rows = {v: _row(v) for v in (1000, 151_936)}
    results: dict[int, list[tuple[float, int]]] = {v: [] for v in rows}
    for _attempt in range(2):
        raw = np.frombuffer(os.urandom(DRAWS * N), dtype=np.uint8).reshape(DRAWS, N)
        u = amp.amplify_batch(raw).u
        for v, logits in rows.items():
            if results[v] and results[v][-1][0] > ALPHA:
                continue
            tokens = _tokens(logits, u, checked=1000 if v == 1000 else 32)
            results[v].append(_chi_square(logits, tokens))
    for v, outcomes in results.items():
        assert outcomes[-1][0] > ALPHA, (v, outcomes)
        assert all(never == 0 for _, never in outcomes), (v, outcomes)


@pytest.mark.parametrize(
    ("cls", "v", "stat_range"),
    [
        (PhiZScoreBitsAmplifier, 1000, (0, 8 * N)),
        (PhiZScoreMeanAmplifier, 151_936, (0, 255 * N)),
    ],
)
def test_the_old_phi_mapping_leaves_tokens_unreachable(
    cls: type[SignalAmplifier], v: int, stat_range: tuple[int, int]
) -> None:
    """Exact, no sampling: every value of S gives one u; tokens no u reaches are lost."""
    s = np.arange(stat_range[0], stat_range[1] + 1, dtype=np.float64)
    if cls is PhiZScoreBitsAmplifier:
        z = (s - 4 * N) / np.sqrt(2 * N)
    else:
        z = (s / N - 127.5) / (73.90027063549903 / np.sqrt(N))
    u = np.clip(normal_cdf(z), 1e-10, 1 - 1e-10)
    logits = _row(v)
    order, cdf = _order_and_cdf(logits)
    reachable = np.unique(order[np.searchsorted(cdf, u, side="right")])
    expected = np.diff(np.concatenate(([0.0], cdf))) * DRAWS
    lost_mass = 1.0 - float(np.diff(np.concatenate(([0.0], cdf)))[np.isin(order, reachable)].sum())
    # The randomised transform reaches every token; the lattice misses these.
    assert lost_mass > 0.2, lost_mass
    if v == 1000:
        assert int(np.sum(expected >= 5)) - reachable.size > 100
