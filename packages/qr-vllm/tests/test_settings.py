"""Settings: defaults from qr_core, environment, per-request overrides and their errors."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from vllm import SamplingParams

from qr_core import SamplingConfig
from qr_vllm import QRParamsError, RecordSettings, SamplingSettings, resolve_request
from qr_vllm._batch import plan_for_params
from qr_vllm._record_router import show_records


def test_defaults_come_from_qr_core() -> None:
    core = SamplingConfig()
    settings = SamplingSettings()
    for field in dataclasses.fields(SamplingConfig):
        assert getattr(settings, field.name) == getattr(core, field.name), field.name
    assert settings.to_core() == core
    assert settings.log_level == "summary"
    assert settings.diagnostic_mode is False
    assert settings.enabled is True


def test_environment_sets_server_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_TOP_K", "7")
    monkeypatch.setenv("QR_TEMPERATURE_STRATEGY", "edt")
    monkeypatch.setenv("QR_DIAGNOSTIC_MODE", "true")
    monkeypatch.setenv("QR_RECORD_PATH", "/tmp/x.jsonl")
    settings = SamplingSettings()
    assert (settings.top_k, settings.temperature_strategy, settings.diagnostic_mode) == (
        7,
        "edt",
        True,
    )
    assert RecordSettings().record_path == "/tmp/x.jsonl"


def test_overrides_apply_and_other_keys_are_ignored() -> None:
    base = SamplingSettings()
    out = resolve_request(
        base,
        {"qr_top_k": 3, "qr_top_p": "0.5", "qr_log_level": "full", "other_plugin_key": [1, 2]},
    )
    assert (out.top_k, out.top_p, out.log_level) == (3, 0.5, "full")
    assert base.top_k == SamplingConfig().top_k
    assert resolve_request(base, {"unrelated": 1}) is base


def test_booleans_arrive_as_integers_over_http() -> None:
    # vLLM's HTTP layer turns JSON true into 1.
    out = resolve_request(SamplingSettings(), {"qr_diagnostic_mode": 1, "qr_enabled": 0})
    assert out.diagnostic_mode is True
    assert out.enabled is False


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("qr_top_p", 1.5, "qr_top_p"),
        ("qr_top_p", 1.5, "<= 1"),
        ("qr_sample_count", 0, ">= 1"),
        ("qr_log_level", "loud", "'none', 'summary', 'full'"),
        ("qr_fixed_temperature", -1.0, "> 0"),
        ("qr_no_such_key", 1, "allowed keys"),
    ],
)
def test_bad_values_name_the_key_and_allowed_values(key: str, value: object, expected: str) -> None:
    with pytest.raises(QRParamsError, match=None) as info:
        resolve_request(SamplingSettings(), {key: value})
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_an_unknown_key_lists_every_allowed_key_with_the_arm_key() -> None:
    with pytest.raises(QRParamsError) as info:
        resolve_request(SamplingSettings(), {"qr_entropy_sorce": "qrng"})
    allowed = str(info.value).split("allowed keys: ")[1].split(", ")
    assert "qr_entropy_source" in allowed
    assert "qr_top_k" in allowed
    # The arm key itself is the processor's to resolve, not a sampling setting.
    assert resolve_request(SamplingSettings(), {"qr_entropy_source": "qrng"}) == SamplingSettings()


@pytest.mark.parametrize(
    "key", ["qr_grpc_server_address", "qr_entropy_source_type", "qr_record_path"]
)
def test_infrastructure_keys_are_refused(key: str) -> None:
    with pytest.raises(QRParamsError, match="environment variable"):
        resolve_request(SamplingSettings(), {key: "x"})


def test_unknown_strategy_names_the_registered_ones() -> None:
    with pytest.raises(QRParamsError, match="fixed"):
        resolve_request(SamplingSettings(), {"qr_temperature_strategy": "nope"})


def test_inconsistent_edt_bounds_are_refused() -> None:
    with pytest.raises(QRParamsError, match="edt_min_temp"):
        resolve_request(SamplingSettings(), {"qr_edt_min_temp": 3.0, "qr_edt_max_temp": 2.0})


def test_temperature_zero_passes_through_to_greedy() -> None:
    assert plan_for_params(SamplingSettings(), SamplingParams(temperature=0.0)) is None


def test_temperature_zero_with_explicit_opt_in_is_refused() -> None:
    params = SamplingParams(temperature=0.0, extra_args={"qr_enabled": True})
    with pytest.raises(QRParamsError, match="temperature=0"):
        plan_for_params(SamplingSettings(), params)


def test_opt_out_and_default_requests() -> None:
    base = SamplingSettings()
    assert plan_for_params(base, SamplingParams(extra_args={"qr_enabled": False})) is None
    plan = plan_for_params(base, SamplingParams(extra_args={"qr_request_tag": "exp-1"}))
    assert plan is not None
    assert plan.request_tag == "exp-1"
    assert len(plan.config_hash) == 64
    other = plan_for_params(base, SamplingParams())
    assert other is not None
    assert other.request_tag is None
    # Same sampling settings, same hash; a different top_k, a different hash.
    assert other.config_hash == plan.config_hash
    changed = plan_for_params(base, SamplingParams(extra_args={"qr_top_k": 5}))
    assert changed is not None
    assert changed.config_hash != plan.config_hash
    assert changed.request_id != plan.request_id


def test_record_logger_gets_a_handler_when_nothing_would_show_its_records() -> None:
    # vLLM configures only its own "vllm" logger: an unconfigured record logger
    # must still print QR_LOG_LEVEL records, or the setting would do nothing.
    bare = logging.getLogger("qr-vllm-test.unconfigured-records")
    bare.propagate = False
    bare.handlers.clear()
    bare.setLevel(logging.NOTSET)
    show_records(bare)
    assert len(bare.handlers) == 1
    assert bare.isEnabledFor(logging.INFO)
    show_records(bare)  # idempotent
    assert len(bare.handlers) == 1

    configured = logging.getLogger("qr-vllm-test.configured-records")
    configured.propagate = False
    own = logging.NullHandler()
    configured.handlers[:] = [own]
    configured.setLevel(logging.WARNING)
    show_records(configured)  # a host's logging configuration is left alone
    assert configured.handlers == [own]
    assert not configured.isEnabledFor(logging.INFO)


@pytest.mark.parametrize(
    ("variable", "text", "allowed"),
    [
        ("QR_TOP_P", "1.5", "<= 1"),
        ("QR_FIXED_TEMPERATURE", "0", "> 0"),  # qr-core's bound, no longer >= 0 there
        ("QR_SAMPLE_COUNT", "16777217", "<= 16777216"),
        ("QR_RECORD_MAX_BYTES", "0", "> 0"),
    ],
)
def test_a_refused_environment_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, allowed: str
) -> None:
    """Issue 12: errors name the variable the user set, its value and what is allowed."""
    from qr_entropy import ConfigError

    monkeypatch.setenv(variable, text)
    settings_class = RecordSettings if "RECORD" in variable else SamplingSettings
    with pytest.raises(ConfigError) as info:
        settings_class()
    message = str(info.value)
    assert f"{variable}={text!r} (setting {variable[3:].lower()}) is invalid" in message
    assert allowed in message


def test_sampling_bounds_are_qr_cores() -> None:
    from qr_core import SAMPLING_BOUNDS

    for name, bounds in SAMPLING_BOUNDS.items():
        declared = SamplingSettings.model_fields[name].metadata
        kinds = {type(m).__name__.lower(): m for m in declared}
        for limit, value in bounds.as_field_kwargs().items():
            assert getattr(kinds[limit], limit) == value, (name, limit)
