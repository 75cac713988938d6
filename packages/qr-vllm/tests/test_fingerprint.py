"""One qr configuration in every process: the stamp, the check and its messages, without an engine.

The front end stamps ``additional_config["qr_sampler"]`` (``qr_vllm._stamp.stamp``)
and each process that builds the processor checks its own configuration against
it. Here both sides run in this process, the environment changed in between;
the real engines (mp backend, Ray) are in tests-integration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, Field
from vllm.config import VllmConfig

import qr_vllm._fingerprint as fingerprint_module
from qr_core import SamplingConfig, build_amplifier
from qr_entropy.settings import QR_SETTINGS_CONFIG, env_var_name, is_secret
from qr_vllm import AdapterConfig, ConfigurationMismatchError
from qr_vllm._fingerprint import differences, fingerprint
from qr_vllm._settings import RecordSettings
from qr_vllm._stamp import STAMP_KEY, check_fingerprint, stamp

from .engine_parts import built_processor

SECRET = "s3cr3t-Api_Key.42"
ARMS = {"sham": {"entropy_source_type": "system"}, "qrng": {"grpc_api_key": "arm-" + SECRET}}
COPY_FIX = "VLLM_RAY_EXTRA_ENV_VAR_PREFIXES_TO_COPY=QR_"


def _engine(additional_config: dict[str, Any]) -> Any:
    """An engine configuration as the processor reads it (a real one has a model)."""
    return SimpleNamespace(additional_config=additional_config, model_config=object())


def _check(stamped: dict[str, Any]) -> AdapterConfig:
    return check_fingerprint(_engine(stamped), AdapterConfig.from_env())


def _mismatch(stamped: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationMismatchError) as caught:
        _check(stamped)
    return str(caught.value)


def _calibration_file(path: Path, seed: int) -> Path:
    config = SamplingConfig(sample_count=256)
    builder = build_amplifier(config).calibration_builder()
    builder.add(np.random.default_rng(seed).integers(0, 256, size=(50, 256), dtype=np.uint8))
    builder.finish(
        source_type="test",
        source_address="",
        device_id="d",
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:00:01+00:00",
        duration_s=1.0,
    ).save(path)
    return path


# ------------------------------------------------------------------ equal


def test_the_same_environment_passes_and_the_stamp_is_deterministic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QR_TOP_K", "7")
    monkeypatch.setenv("QR_SOURCES", json.dumps(ARMS))
    monkeypatch.setenv("QR_GRPC_API_KEY", SECRET)
    stamped = stamp({"other_platform": {"knob": 1}})
    assert stamped["other_platform"] == {"knob": 1}, "the user's additional_config is kept"
    # vLLM hashes additional_config into its compile-cache key: one configuration, one stamp.
    assert stamp({"other_platform": {"knob": 1}}) == stamped
    json.dumps(stamped)  # vLLM's compute_hash() serialises it as JSON
    _check(stamped)


def test_a_qr_sources_file_equals_the_same_json_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QR_SOURCES", json.dumps(ARMS))
    stamped = stamp({})
    (tmp_path / "arms.json").write_text(json.dumps(ARMS, indent=2))
    monkeypatch.setenv("QR_SOURCES", str(tmp_path / "arms.json"))
    _check(stamped)  # the parsed arms are compared, not the variable's text


# ------------------------------------------------------------------ different


def test_a_different_setting_refuses_and_names_it_with_both_values_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QR_TOP_K", "7")
    stamped = stamp({})
    monkeypatch.setenv("QR_TOP_K", "9")
    message = _mismatch(stamped)
    assert "QR_TOP_K (front end 7, here 9)" in message
    assert COPY_FIX in message
    assert "ray_runtime_env" in message
    assert "ray start" in message
    assert "QR_TOP_P" not in message, "only the differing settings are named"


def test_settings_missing_in_a_worker_refuse_and_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QR_RECORD_PATH", str(tmp_path / "records.jsonl"))
    monkeypatch.setenv("QR_SOURCES", json.dumps(ARMS))
    monkeypatch.setenv("QR_LOG_LEVEL", "none")
    stamped = stamp({})
    for name in ("QR_RECORD_PATH", "QR_SOURCES", "QR_LOG_LEVEL"):
        monkeypatch.delenv(name)
    message = _mismatch(stamped)
    for name in ("QR_RECORD_PATH", "QR_SOURCES", "QR_LOG_LEVEL"):
        assert f"{name} (front end" in message, message
    assert "QR_SOURCES (front end ['qrng', 'sham'], here [])" in message
    assert COPY_FIX in message


def test_long_values_are_shown_whole_or_by_both_ends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A path as long as a test's: whole. Two long paths that differ only at the
    # end: each shows its start and its end, so the difference is seen.
    path = tmp_path / "test_settings_missing_in_the_workers_refuse" / "records.jsonl"
    monkeypatch.setenv("QR_RECORD_PATH", str(path))
    stamped = stamp({})
    monkeypatch.delenv("QR_RECORD_PATH")
    assert f"QR_RECORD_PATH (front end '{path}', here '')" in _mismatch(stamped)
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 12)
    monkeypatch.setenv("QR_RECORD_PATH", str(deep / "front.jsonl"))
    stamped = stamp({})
    monkeypatch.setenv("QR_RECORD_PATH", str(deep / "worker.jsonl"))
    message = _mismatch(stamped)
    assert str(deep) not in message, "shortened"
    assert f"front end '{tmp_path}" in message
    assert "front.jsonl'" in message
    assert "worker.jsonl'" in message
    assert " ... " in message


def test_an_arm_setting_that_differs_is_named_by_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_SOURCES", json.dumps(ARMS))
    stamped = stamp({})
    other = {**ARMS, "sham": {"entropy_source_type": "mock_uniform"}}
    monkeypatch.setenv("QR_SOURCES", json.dumps(other))
    message = _mismatch(stamped)
    assert "QR_SOURCES[sham].entropy_source_type" in message
    assert "QR_SOURCES (front end" not in message, "same arm names"


def test_calibration_files_are_compared_by_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QR_SAMPLE_COUNT", "256")
    path = _calibration_file(tmp_path / "cal.json", seed=1)
    monkeypatch.setenv("QR_CALIBRATION_PATH", str(path))
    stamped = stamp({})
    _calibration_file(path, seed=2)  # same path, another file on this "node"
    message = _mismatch(stamped)
    assert "QR_CALIBRATION_PATH (file content)" in message
    assert "same calibration, QR_SOURCES and plan files" in message


def test_an_amplifier_registered_only_in_the_front_end_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A request may name it (qr_signal_amplifier_type): the front end would accept
    # what this process cannot build.
    real = fingerprint_module.available_amplifiers
    monkeypatch.setattr(fingerprint_module, "available_amplifiers", lambda: [*real(), "plugin"])
    stamped = stamp({})
    monkeypatch.setattr(fingerprint_module, "available_amplifiers", real)
    message = _mismatch(stamped)
    assert "registered amplifiers" in message
    assert "plugins" in message


def test_a_stamp_is_required_from_a_real_engine() -> None:
    for extra in ({}, {"unrelated": 1}):
        with pytest.raises(ConfigurationMismatchError, match=r"no qr fingerprint.*VLLM_PLUGINS"):
            check_fingerprint(_engine(extra), AdapterConfig.from_env())
    # A configuration without a model is built by hand (unit tests), not by a front end.
    check_fingerprint(VllmConfig(), AdapterConfig.from_env())


def test_a_stamp_of_another_format_is_refused() -> None:
    stamped = stamp({})
    stamped[STAMP_KEY] = {**stamped[STAMP_KEY], "format": 99}
    assert "format 99" in _mismatch(stamped)


def test_a_non_dict_additional_config_cannot_carry_the_stamp() -> None:
    with pytest.raises(ConfigurationMismatchError, match="additional_config must be a dict"):
        stamp(SimpleNamespace(compute_hash=lambda: "x"))


# ------------------------------------------------------------------ secrets


def test_secrets_are_named_never_shown_nor_hashed_plainly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QR_GRPC_API_KEY", SECRET)
    monkeypatch.setenv("QR_SOURCES", json.dumps(ARMS))
    stamped = stamp({})
    text = json.dumps(stamped)
    arm_secret = "arm-" + SECRET
    for secret in (SECRET, arm_secret):
        assert secret not in text
        for algorithm in ("md5", "sha1", "sha256", "sha512", "blake2b"):
            plain = hashlib.new(algorithm, secret.encode()).hexdigest()
            assert plain[:16] not in text, algorithm
    monkeypatch.setenv("QR_GRPC_API_KEY", "another-key")
    monkeypatch.setenv("QR_SOURCES", json.dumps({**ARMS, "qrng": {"grpc_api_key": "x"}}))
    message = _mismatch(stamped)
    assert "QR_GRPC_API_KEY (a secret: values not shown)" in message
    assert "QR_SOURCES[qrng].grpc_api_key (a secret: values not shown)" in message
    for shown in (SECRET, arm_secret, "another-key"):
        assert shown not in message


def test_secret_digests_are_salted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_GRPC_API_KEY", SECRET)
    config = AdapterConfig.from_env()
    one = fingerprint(config, cwd="/a", salt="00" * 16).secrets["QR_GRPC_API_KEY"]
    two = fingerprint(config, cwd="/a", salt="11" * 16).secrets["QR_GRPC_API_KEY"]
    assert one != two
    # The front end's salt comes from the other entries: another setting, another salt.
    monkeypatch.setenv("QR_TOP_K", "3")
    assert (
        fingerprint(AdapterConfig.from_env(), cwd="/a").salt != fingerprint(config, cwd="/a").salt
    )


# ------------------------------------------------------------------ generic coverage


def test_every_declared_setting_is_in_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_SOURCES", json.dumps(ARMS))
    config = AdapterConfig.from_env()
    found = fingerprint(config, cwd=os.getcwd())
    models = [
        getattr(config, f.name)
        for f in dataclasses.fields(config)
        if isinstance(getattr(config, f.name), BaseModel)
    ]
    assert len(models) >= 3, "entropy, sampling and records settings at least"
    for model in models:
        for name, field in type(model).model_fields.items():
            where = found.secrets if is_secret(field) else found.values
            assert env_var_name(name) in where, name
    # Every other field of AdapterConfig has an entry too (arms, calibrations, plan).
    assert "QR_SOURCES" in found.values
    assert "QR_SOURCES[qrng].grpc_api_key" in found.secrets
    assert "QR_PREREGISTRATION_PATH (file content)" in found.values


def test_a_setting_added_to_a_settings_class_is_covered_without_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class MoreRecordSettings(RecordSettings):
        model_config = QR_SETTINGS_CONFIG
        record_new_knob: int = Field(default=3, description="A setting added later.")

    monkeypatch.setenv("QR_RECORD_NEW_KNOB", "4")
    config = dataclasses.replace(AdapterConfig.from_env(), records=MoreRecordSettings())
    theirs = fingerprint(config, cwd="/a")
    monkeypatch.setenv("QR_RECORD_NEW_KNOB", "5")
    mine = fingerprint(
        dataclasses.replace(config, records=MoreRecordSettings()), cwd="/a", salt=theirs.salt
    )
    assert differences(theirs, mine) == ["QR_RECORD_NEW_KNOB"]


# ------------------------------------------------------------------ relative record path


def test_a_relative_record_path_resolves_against_the_front_ends_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    front, worker = tmp_path / "front", tmp_path / "worker"
    front.mkdir()
    worker.mkdir()
    monkeypatch.setenv("QR_RECORD_PATH", "records.jsonl")
    monkeypatch.chdir(front)
    stamped = stamp({})
    assert _check(stamped).records.record_path == "records.jsonl", "same directory: unchanged"
    monkeypatch.chdir(worker)  # a Ray worker runs in Ray's own directory
    assert _check(stamped).records.record_path == str(front / "records.jsonl")
    monkeypatch.setenv("QR_RECORD_PATH", "other.jsonl")
    assert "QR_RECORD_PATH" in _mismatch(stamped)


# ------------------------------------------------------------------ in the processor


def test_the_processor_refuses_to_build_on_another_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QR_SOURCES", json.dumps(ARMS))
    monkeypatch.setenv("QR_LOG_LEVEL", "none")
    stamped = VllmConfig(additional_config=stamp({}))
    built_processor(stamped).close()
    # The arm case of issue 29: the front end knows arm "sham", this process does not.
    monkeypatch.delenv("QR_SOURCES")
    with pytest.raises(ConfigurationMismatchError, match=r"QR_SOURCES \(front end"):
        built_processor(stamped)
