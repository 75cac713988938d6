"""Temperature strategies and the Shannon entropy they report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from qr_core import (
    EDTTemperature,
    FixedTemperature,
    QRCoreError,
    SamplingConfig,
    build_temperature_strategy,
    shannon_entropy,
)


def _entropy_bound(x: np.ndarray) -> np.ndarray:
    """The documented error bound of float32 entropies: 2**-24 * (4 + 9 H + E_p[s^2])."""
    s = x.astype(np.float64) - x.astype(np.float64).max(axis=1, keepdims=True)
    p = special.softmax(s, axis=1)
    h = stats.entropy(p, axis=1)
    s2 = np.where(p > 0, s * s, 0.0)  # -inf logits: weight 0, no contribution
    return np.asarray(2.0**-24 * (4 + 9 * h + (p * s2).sum(axis=1)))


def test_entropy_matches_scipy_and_the_extremes() -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 300)) * 3).astype(np.float32)
    ref = stats.entropy(special.softmax(x.astype(np.float64), axis=1), axis=1)
    # float32 weights: within the documented bound, not float64 digits.
    assert np.all(np.abs(shannon_entropy(x) - ref) <= _entropy_bound(x))
    # float64 logits keep float64 weights and digits.
    np.testing.assert_allclose(shannon_entropy(x.astype(np.float64)), ref, rtol=1e-12)
    assert shannon_entropy(np.zeros((1, 1000)))[0] == pytest.approx(math.log(1000), rel=1e-14)
    one_hot = np.full((1, 10), -np.inf)
    one_hot[0, 4] = 2.0
    assert shannon_entropy(one_hot)[0] == 0.0
    one_hot32 = one_hot.astype(np.float32)
    assert shannon_entropy(one_hot32)[0] == 0.0


@pytest.mark.parametrize(("vocab", "scale"), [(32_000, 1.0), (32_000, 3.0), (151_936, 2.0)])
def test_float32_entropy_error_stays_within_the_documented_bound(vocab: int, scale: float) -> None:
    """Vocabulary-sized rows (8 rows, seed 11, some -inf logits) against float64."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((8, vocab)) * scale).astype(np.float32)
    x[:, ::97] = -np.inf
    ref = shannon_entropy(x.astype(np.float64))
    err = np.abs(shannon_entropy(x) - ref)
    assert np.all(err <= _entropy_bound(x))
    torch_err = np.abs(shannon_entropy(torch.from_numpy(x)).numpy() - ref)
    assert np.all(torch_err <= _entropy_bound(x))


def test_fixed_returns_its_temperature_and_the_entropy() -> None:
    res = FixedTemperature(0.3).compute(np.zeros(8, dtype=np.float32))
    assert res.temperature == 0.3
    assert res.shannon_entropy == pytest.approx(math.log(8))


def test_entropy_is_skipped_only_when_neither_caller_nor_strategy_needs_it() -> None:
    x = np.log(np.array([[0.5, 0.25, 0.25], [1.0, 1.0, 1.0]], dtype=np.float32))
    fixed = FixedTemperature(0.3).compute_batch(x, entropy=False)
    assert np.all(np.isnan(fixed.shannon_entropy))
    assert np.all(fixed.temperature == 0.3)
    edt = EDTTemperature(min_temp=0.0).compute_batch(x, entropy=False)
    assert edt.shannon_entropy == pytest.approx([1.5 * math.log(2), math.log(3)], rel=1e-6)
    assert np.all(edt.temperature == EDTTemperature(min_temp=0.0).compute_batch(x).temperature)
    skipped_torch = FixedTemperature().compute_batch(torch.from_numpy(x), entropy=False)
    assert torch.isnan(skipped_torch.shannon_entropy).all()


def test_edt_formula_and_clamps() -> None:
    x = np.log(np.array([[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30], [1.0, 1.0, 1.0]]))
    strategy = EDTTemperature(base_temp=0.8, exponent=0.5, min_temp=0.1, max_temp=0.79)
    res = strategy.compute_batch(x)
    h = res.shannon_entropy
    assert h[0] == pytest.approx(1.5 * math.log(2), rel=1e-14)
    assert res.temperature[0] == pytest.approx(0.8 * (h[0] / math.log(3)) ** 0.5, rel=1e-14)
    assert res.temperature[1] == 0.1  # near one-hot: clamped at min_temp
    assert res.temperature[2] == 0.79  # uniform: 0.8 * 1 ** 0.5 clamped at max_temp


def test_edt_temperature_rises_with_entropy() -> None:
    base = np.random.default_rng(4).standard_normal(500)
    x = np.stack([base / tau for tau in (0.1, 0.3, 0.6, 1.0, 2.0, 5.0, 20.0)])
    res = EDTTemperature(min_temp=0.0, max_temp=10.0).compute_batch(x)
    assert np.all(np.diff(res.shannon_entropy) > 0)
    assert np.all(np.diff(res.temperature) > 0)


def test_single_token_vocabulary_is_fine() -> None:
    res = EDTTemperature().compute(np.array([3.0]))
    assert (res.shannon_entropy, res.temperature) == (0.0, 0.1)


def test_torch_input_stays_torch_and_agrees_with_numpy() -> None:
    x = torch.randn(4, 200, generator=torch.Generator().manual_seed(5))
    res = EDTTemperature().compute_batch(x)
    assert isinstance(res.temperature, torch.Tensor)
    assert res.temperature.dtype == torch.float64
    assert res.temperature.device == x.device
    ref = EDTTemperature().compute_batch(x.numpy())
    # Both compute float32 weights; their exp differ by a few ulp (module docstring).
    bound = _entropy_bound(x.numpy())
    assert np.all(np.abs(res.shannon_entropy.numpy() - ref.shannon_entropy) <= bound)
    # EDT scales by sqrt(H / ln V): the temperatures agree to about 1e-7 relative.
    np.testing.assert_allclose(res.temperature.numpy(), ref.temperature, rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_stays_on_the_device() -> None:
    x = torch.randn(3, 100, device="cuda")
    res = FixedTemperature().compute_batch(x)
    assert res.temperature.device == x.device
    assert res.shannon_entropy.device == x.device


def test_build_from_config() -> None:
    fixed = build_temperature_strategy(SamplingConfig(fixed_temperature=1.25))
    assert isinstance(fixed, FixedTemperature)
    assert fixed.temperature == 1.25
    edt = build_temperature_strategy(
        SamplingConfig(
            temperature_strategy="edt",
            edt_base_temp=1.0,
            edt_exponent=2.0,
            edt_min_temp=0.2,
            edt_max_temp=3.0,
        )
    )
    assert isinstance(edt, EDTTemperature)
    assert (edt.base_temp, edt.exponent, edt.min_temp, edt.max_temp) == (1.0, 2.0, 0.2, 3.0)


def _row(*values: float) -> np.ndarray:
    return np.array([values], dtype=np.float32)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (
            lambda: FixedTemperature().compute_batch(_row(0.0, math.nan)),
            "logits row 0 contains NaN",
        ),
        (
            lambda: FixedTemperature().compute_batch(_row(-math.inf, -math.inf)),
            "logits row 0 is all -inf",
        ),
        (
            lambda: FixedTemperature().compute_batch(_row(math.inf, 0.0)),
            "logits row 0 contains +inf",
        ),
        (lambda: FixedTemperature().compute(_row(1.0, 2.0)), "logits must have shape (V,)"),
        (lambda: FixedTemperature().compute_batch(np.zeros(3)), "logits must have shape (B, V)"),
        (
            lambda: FixedTemperature().compute(np.zeros(3, dtype=np.int64)),
            "logits must have a real floating dtype",
        ),
        (
            lambda: FixedTemperature().compute([1.0, 2.0]),
            "logits must be a numpy array or torch tensor",
        ),
        (lambda: FixedTemperature(-0.5), "temperature must be finite and >= 0"),
        (lambda: EDTTemperature(base_temp=0.0), "base_temp must be > 0"),
        (lambda: EDTTemperature(exponent=math.inf), "exponent must be finite"),
        (lambda: EDTTemperature(min_temp=1.0, max_temp=0.5), "max_temp must be >= min_temp"),
    ],
)
def test_errors_name_the_argument(call: object, needle: str) -> None:
    with pytest.raises(QRCoreError) as info:
        call()  # type: ignore[operator]
    assert needle in str(info.value)
