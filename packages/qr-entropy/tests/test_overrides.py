"""apply_overrides: per-request qr_* keys validated by the model's own declaration."""

from __future__ import annotations

from typing import Literal, Self

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qr_entropy import ConfigError, EntropyConfig, apply_overrides

INFRA = tuple(EntropyConfig.model_fields)


class Sampling(BaseModel):
    """Stands for qr-vllm's sampling settings: the same kinds of fields."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    temperature_strategy: Literal["fixed", "edt"] = Field(default="fixed")
    sample_count: int = Field(default=20480, ge=1)
    top_p: float = Field(default=0.9, gt=0, le=1)
    edt_min_temp: float = Field(default=0.1, ge=0)
    edt_max_temp: float = Field(default=2.0, ge=0)
    diagnostic_mode: bool = Field(default=False)
    log_level: Literal["none", "summary", "full"] = Field(default="summary")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.edt_min_temp > self.edt_max_temp:
            raise ValueError("edt_min_temp must not exceed edt_max_temp")
        return self


BASE = Sampling()


def test_no_applicable_keys_returns_base_itself() -> None:
    assert apply_overrides(BASE, {}) is BASE
    assert apply_overrides(BASE, {"temperature": 0.3, "QR_TOP_P": 0.5, "top_k": 3}) is BASE


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("qr_temperature_strategy", "edt", "temperature_strategy", "edt"),
        ("qr_sample_count", 1024, "sample_count", 1024),
        ("qr_sample_count", "1024", "sample_count", 1024),
        ("qr_sample_count", 1024.0, "sample_count", 1024),
        ("qr_top_p", 0.5, "top_p", 0.5),
        ("qr_top_p", "0.5", "top_p", 0.5),
        ("qr_top_p", 1, "top_p", 1.0),
        ("qr_diagnostic_mode", 1, "diagnostic_mode", True),
        ("qr_diagnostic_mode", 0, "diagnostic_mode", False),
        ("qr_diagnostic_mode", "true", "diagnostic_mode", True),
        ("qr_diagnostic_mode", "false", "diagnostic_mode", False),
        ("qr_log_level", "full", "log_level", "full"),
    ],
)
def test_accepted_values_as_vllm_delivers_them(
    key: str, value: object, field: str, expected: object
) -> None:
    result = apply_overrides(BASE, {key: value, "unrelated": [1, 2]})
    assert getattr(result, field) == expected
    assert type(getattr(result, field)) is type(expected)
    assert BASE.sample_count == 20480  # the base is never mutated
    untouched = {f for f in Sampling.model_fields if f != field}
    assert {f: getattr(result, f) for f in untouched} == {f: getattr(BASE, f) for f in untouched}


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("qr_temperature_strategy", "hot", "one of 'fixed', 'edt'"),
        ("qr_temperature_strategy", 1, "one of 'fixed', 'edt'"),
        ("qr_sample_count", 0, "an integer >= 1"),
        ("qr_sample_count", 10.5, "an integer >= 1"),
        ("qr_sample_count", "many", "an integer >= 1"),
        ("qr_top_p", 0, "a number > 0, <= 1"),
        ("qr_top_p", 1.5, "a number > 0, <= 1"),
        ("qr_top_p", "nan", "a number > 0, <= 1"),
        ("qr_diagnostic_mode", 2, "a boolean (true/false or 1/0)"),
        ("qr_diagnostic_mode", "perhaps", "a boolean (true/false or 1/0)"),
        ("qr_log_level", "debug", "one of 'none', 'summary', 'full'"),
    ],
)
def test_invalid_values_name_key_and_allowed_values(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, {key: value})
    message = str(info.value)
    assert f"{key}={value!r} is invalid" in message
    assert f"allowed: {allowed}" in message
    assert isinstance(info.value, ValueError)


def test_unknown_key_lists_allowed_keys_without_forbidden_ones() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, {"qr_top_q": 0.5}, forbidden=INFRA)
    message = str(info.value)
    assert "unknown per-request key 'qr_top_q'" in message
    assert "qr_temperature_strategy, qr_sample_count, qr_top_p" in message
    assert "qr_grpc" not in message


def test_keys_the_caller_handles_are_skipped_and_listed_as_allowed() -> None:
    extra = ("qr_entropy_source",)
    assert apply_overrides(BASE, {"qr_entropy_source": "qrng"}, also_allowed=extra) is BASE
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, {"qr_top_q": 0.5}, forbidden=INFRA, also_allowed=extra)
    assert str(info.value).endswith(", qr_entropy_source")


@pytest.mark.parametrize("field", INFRA)
def test_every_infrastructure_field_is_refused_per_request(field: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, {f"qr_{field}": "x"}, forbidden=INFRA)
    assert str(info.value) == (
        f"'qr_{field}' cannot be overridden per request: it is an infrastructure setting, "
        f"set only via the environment variable QR_{field.upper()}"
    )


def test_entropy_config_itself_refuses_its_own_fields() -> None:
    with pytest.raises(ConfigError, match="QR_FALLBACK_MODE"):
        apply_overrides(EntropyConfig(), {"qr_fallback_mode": "error"}, forbidden=INFRA)


def test_cross_field_rule_names_the_overridden_keys() -> None:
    with pytest.raises(ConfigError, match=r"qr_edt_min_temp are inconsistent: .*must not exceed"):
        apply_overrides(BASE, {"qr_edt_min_temp": 3.0})
    ok = apply_overrides(BASE, {"qr_edt_min_temp": 3.0, "qr_edt_max_temp": 4.0})
    assert (ok.edt_min_temp, ok.edt_max_temp) == (3.0, 4.0)


def test_custom_prefix() -> None:
    assert apply_overrides(BASE, {"x_top_p": 0.3}, prefix="x_").top_p == 0.3
    assert apply_overrides(BASE, {"qr_top_p": 0.3}, prefix="x_") is BASE


def test_several_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, {"qr_top_p": 5, "qr_sample_count": -1})
    assert "qr_top_p=5" in str(info.value)
    assert "qr_sample_count=-1" in str(info.value)


def test_long_values_are_truncated_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, {"qr_log_level": "x" * 500})
    assert "x" * 100 not in str(info.value)
    assert "..." in str(info.value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_top_p_never_silently_changed(value: float) -> None:
    try:
        result = apply_overrides(BASE, {"qr_top_p": value})
    except ConfigError:
        assert not 0 < value <= 1
    else:
        assert result.top_p == value


@given(st.integers(-(2**40), 2**40))
def test_sample_count_accepts_exactly_the_declared_range(value: int) -> None:
    try:
        result = apply_overrides(BASE, {"qr_sample_count": value})
    except ConfigError:
        assert value < 1
    else:
        assert result.sample_count == value
