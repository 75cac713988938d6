"""Chosen-token frequencies equal the renormalised probabilities (chi-square).

Each setting draws n = 100,000 values of u from numpy's generator (seed 70 + the
setting's index; 80 for the sort engine), selects
one token per u, and compares the counts with n times the probabilities of the
plain reference sampler (conftest.Reference). Cells with an expected count below
5 are pooled. alpha = 0.001 per setting; seeds are fixed, so a run is repeatable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from qr_core import select_tokens

N_DRAWS = 100_000
ALPHA = 0.001

_BASE = np.random.default_rng(61).normal(0, 1.5, size=12).astype(np.float32)
_TIES = np.array([2, 2, 2, 1, 1, 1, 0, 0, -1, -1], dtype=np.float32)
# float32 probabilities whose float32 sum is 1 - 1e-5 (a model's softmax output).
_SHORT = np.log(np.array([0.35, 0.25, 0.2, 0.1, 0.05, 0.04, 0.00999, 1e-5], dtype=np.float32))

SETTINGS = [
    ("plain", _BASE, 1.0, 0, 1.0),
    ("top-k", _BASE, 0.7, 5, 1.0),
    ("top-p", _BASE, 1.3, 0, 0.8),
    ("top-k+top-p", _BASE, 2.0, 8, 0.9),
    ("ties at the top-k cut", _TIES, 1.0, 4, 1.0),
    ("ties and top-p", _TIES, 0.8, 0, 0.7),
    ("float32 sum off by 1e-5", _SHORT, 1.0, 0, 1.0),
]


def _chi_square(tokens: np.ndarray, vocab: int, ref: Any) -> None:
    counts = np.bincount(tokens, minlength=vocab)
    outside = np.setdiff1d(np.arange(vocab), ref.candidates)
    assert counts[outside].sum() == 0, "a token outside the candidates was chosen"
    observed = counts[ref.candidates].astype(np.float64)
    expected = ref.probs * tokens.size
    small = expected < 5
    if small.any():
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    assert observed.size >= 3, "setting too peaked to test"
    result = stats.chisquare(observed, expected)
    assert result.pvalue > ALPHA, f"chi2={result.statistic:.1f}, p={result.pvalue:.2g}"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "row", "t", "k", "p"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_frequencies_match_probabilities(
    name: str, row: np.ndarray, t: float, k: int, p: float, reference: Any
) -> None:
    seed = 70 + [s[0] for s in SETTINGS].index(name)
    u = np.random.default_rng(seed).uniform(size=N_DRAWS)
    x = np.broadcast_to(row, (N_DRAWS, row.size))
    res = select_tokens(x, u, temperature=t, top_k=k, top_p=p)
    _chi_square(res.token_id, row.size, reference(row, t, k, p))


@pytest.mark.slow
def test_sort_engine_frequencies_match_probabilities(reference: Any, sort_engine: Any) -> None:
    """The engine CUDA tensors take, run on CPU torch: n = 100,000, seed 80."""
    u = np.random.default_rng(80).uniform(size=N_DRAWS)
    x = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(_BASE, (N_DRAWS, _BASE.size))))
    token = sort_engine(x, torch.from_numpy(u), 0.9, 6, 0.95)[0]
    _chi_square(token.numpy(), _BASE.size, reference(_BASE, 0.9, 6, 0.95))
