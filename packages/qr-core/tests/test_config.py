"""SamplingConfig declares the spec's defaults once."""

from __future__ import annotations

import dataclasses
import math

import pytest

from qr_core import POPULATION_STD, QRCoreError, SamplingConfig


def test_population_std_is_the_discrete_uniform_value() -> None:
    assert math.sqrt((256**2 - 1) / 12) == POPULATION_STD
    assert abs(POPULATION_STD - 73.90027) < 1e-5


def test_defaults_match_the_specification() -> None:
    c = SamplingConfig()
    assert (c.signal_amplifier_type, c.sample_count, c.population_mean) == (
        "zscore_mean",
        20480,
        127.5,
    )
    assert (c.population_std, c.uniform_clamp_epsilon) == (POPULATION_STD, 1e-10)
    assert (c.temperature_strategy, c.fixed_temperature) == ("fixed", 0.7)
    assert (c.edt_base_temp, c.edt_exponent, c.edt_min_temp, c.edt_max_temp) == (0.8, 0.5, 0.1, 2.0)
    assert (c.top_k, c.top_p) == (50, 0.9)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SamplingConfig().top_k = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"sample_count": 0}, "sample_count must be >= 1, <= 16777216"),
        ({"sample_count": 2.5}, "sample_count must be an int"),
        ({"population_std": 0.0}, "population_std must be > 0"),
        ({"population_mean": float("nan")}, "population_mean must be finite"),
        ({"uniform_clamp_epsilon": 0.5}, "uniform_clamp_epsilon must be > 0, < 0.5"),
        ({"fixed_temperature": 0.0}, "fixed_temperature must be > 0"),
        ({"edt_base_temp": 0.0}, "edt_base_temp must be > 0"),
        ({"edt_exponent": 0.0}, "edt_exponent must be > 0"),
        ({"edt_min_temp": 0.0}, "edt_min_temp must be > 0"),
        ({"population_mean": 255.5}, "population_mean must be >= 0, <= 255"),
        ({"sample_count": 16_777_217}, "sample_count must be >= 1"),
        ({"edt_min_temp": 3.0}, "edt_max_temp must be >= edt_min_temp"),
        ({"top_k": 1.5}, "top_k must be an int"),
        ({"top_p": 0.0}, "top_p must be > 0, <= 1"),
        ({"top_p": 1.1}, "top_p must be > 0, <= 1"),
        ({"top_p": True}, "top_p must be a number"),
        ({"signal_amplifier_type": ""}, "signal_amplifier_type must be a non-empty string"),
    ],
)
def test_invalid_fields_are_named(override: dict[str, object], needle: str) -> None:
    with pytest.raises(QRCoreError) as info:
        SamplingConfig(**override)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_every_bound_is_declared_once_for_a_field_of_the_config() -> None:
    from qr_core import SAMPLING_BOUNDS

    names = {f.name for f in dataclasses.fields(SamplingConfig)}
    assert set(SAMPLING_BOUNDS) <= names
    for name, bounds in SAMPLING_BOUNDS.items():
        assert bounds.contains(getattr(SamplingConfig(), name)), name  # defaults lie inside
