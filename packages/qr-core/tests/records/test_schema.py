"""TokenSamplingRecord JSON round trip, strict decoding, and config_hash stability."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qr_core.analysis import simulate_records
from qr_core.records import SCHEMA_VERSION, RecordError, TokenSamplingRecord, config_hash

_text = st.text(max_size=20)
_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_float = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def records(draw: st.DrawFn) -> TokenSamplingRecord:
    return TokenSamplingRecord(
        request_id=draw(_text),
        request_tag=draw(st.none() | _text),
        token_index=draw(_int),
        logits_ready_ns=draw(_int),
        entropy_requested_ns=draw(_int),
        entropy_generated_ns=draw(st.none() | _int),
        entropy_received_ns=draw(_int),
        entropy_source=draw(_text),
        device_id=draw(_text),
        sequence_id=draw(st.none() | _int),
        fallback=draw(st.booleans()),
        fallback_reason=draw(st.none() | _text),
        sample_count=draw(_int),
        raw_sha256=draw(_text),
        raw_bytes_hex=draw(st.none() | _text),
        amplifier=draw(_text),
        sample_mean=draw(_float),
        z_score=draw(_float),
        u=draw(_float),
        temperature_strategy=draw(_text),
        temperature=draw(_float),
        shannon_entropy=draw(_float),
        token_id=draw(_int),
        token_rank=draw(_int),
        token_prob=draw(_float),
        num_candidates=draw(_int),
        top_k=draw(_int),
        top_p=draw(_float),
        config_hash=draw(_text),
        arm=draw(st.none() | _text),
        calibration_sha256=draw(st.none() | _text),
        u_transform=draw(st.sampled_from(["randomized_pit", "phi"])),
        writer_id=draw(st.none() | _text),
        discarded=draw(st.booleans()),
    )


@given(records())
def test_json_round_trip_is_exact(record: TokenSamplingRecord) -> None:
    text = json.dumps(record.to_json_dict())
    assert TokenSamplingRecord.from_json_dict(json.loads(text)) == record


def _record() -> TokenSamplingRecord:
    return simulate_records(1, seed=0)[0]


def test_to_json_dict_has_every_field_in_order_with_version() -> None:
    d = _record().to_json_dict()
    assert list(d) == [f.name for f in dataclasses.fields(TokenSamplingRecord)]
    assert d["schema_version"] == SCHEMA_VERSION == 3


def test_record_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _record().u = 0.5  # type: ignore[misc]


def test_unknown_and_missing_keys_are_named() -> None:
    d = _record().to_json_dict()
    d["colour"] = "blue"
    del d["z_score"]
    with pytest.raises(RecordError, match=r"unknown=\['colour'\], missing=\['z_score'\]"):
        TokenSamplingRecord.from_json_dict(d)


@pytest.mark.parametrize("version", [0, 4, "1", "2", True, 2.0, 3.0])
def test_other_schema_versions_are_refused(version: object) -> None:
    d = _record().to_json_dict()
    d["schema_version"] = version
    with pytest.raises(RecordError, match="schema_version"):
        TokenSamplingRecord.from_json_dict(d)


_V2_FIELDS = ("arm", "calibration_sha256", "u_transform", "writer_id", "discarded")
_V3_FIELDS = (
    "calibration_blocks",
    "calibration_mean",
    "calibration_std",
    "calibration_mean_se_z",
    "calibration_std_se_z",
    "calibration_cov_z",
    "preregistration_sha256",
    "entropy_read_started_ns",
)


def test_version_1_records_still_read_with_their_meaning() -> None:
    d = _record().to_json_dict()
    for name in _V2_FIELDS + _V3_FIELDS:
        del d[name]
    d["schema_version"] = 1
    record = TokenSamplingRecord.from_json_dict(d)
    assert record.schema_version == 1
    assert (record.arm, record.calibration_sha256, record.writer_id) == (None, None, None)
    assert record.u_transform == "phi"
    assert record.discarded is False
    assert record.z_score == d["z_score"]


def test_version_1_records_may_not_carry_version_2_fields() -> None:
    d = _record().to_json_dict()
    d["schema_version"] = 1
    with pytest.raises(RecordError, match=r"schema version 1: unknown=\['arm'"):
        TokenSamplingRecord.from_json_dict(d)


def test_version_2_records_read_without_the_version_3_fields() -> None:
    d = _record().to_json_dict()
    for name in _V3_FIELDS:
        del d[name]
    d["schema_version"] = 2
    record = TokenSamplingRecord.from_json_dict(d)
    assert (record.schema_version, record.preregistration_sha256) == (2, None)
    d["preregistration_sha256"] = None
    with pytest.raises(RecordError, match=r"schema version 2: unknown=\['preregistration_sha256'"):
        TokenSamplingRecord.from_json_dict(d)


def test_version_2_records_need_every_field() -> None:
    d = _record().to_json_dict()
    for name in _V3_FIELDS:
        del d[name]
    d["schema_version"] = 2
    del d["writer_id"]
    with pytest.raises(RecordError, match=r"missing=\['writer_id'\]"):
        TokenSamplingRecord.from_json_dict(d)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("token_id", "5", "token_id' must be int"),
        ("token_id", 5.0, "token_id' must be int"),
        ("token_id", True, "token_id' must be int"),
        ("fallback", 1, "fallback' must be bool"),
        ("request_id", None, "request_id' must be str,"),
        ("z_score", None, "z_score' must be float,"),
        ("request_tag", 3, "request_tag' must be str or null"),
    ],
)
def test_wrong_types_are_refused(field: str, value: object, expected: str) -> None:
    d = _record().to_json_dict()
    d[field] = value
    with pytest.raises(RecordError, match=expected):
        TokenSamplingRecord.from_json_dict(d)


def test_integral_floats_decode_as_float() -> None:
    d = _record().to_json_dict()
    d["temperature"] = 1
    record = TokenSamplingRecord.from_json_dict(d)
    assert type(record.temperature) is float
    assert record.temperature == 1.0


def test_config_hash_ignores_key_order_and_sees_values() -> None:
    a = config_hash({"qr_top_k": 50, "qr_top_p": 0.9, "nested": {"b": 1, "a": [1, 2]}})
    b = config_hash({"nested": {"a": [1, 2], "b": 1}, "qr_top_p": 0.9, "qr_top_k": 50})
    assert a == b
    assert len(a) == 64
    assert int(a, 16) >= 0
    assert config_hash({"qr_top_k": 51, "qr_top_p": 0.9, "nested": {"b": 1, "a": [1, 2]}}) != a
    assert config_hash({"x": 1}) != config_hash({"x": True})


def test_config_hash_is_stable_across_processes() -> None:
    settings = {"qr_temperature_strategy": "edt", "qr_edt_base_temp": 0.8, "qr_top_k": 50}
    code = (
        "from qr_core.records import config_hash;"
        "print(config_hash({'qr_top_k': 50, 'qr_edt_base_temp': 0.8,"
        " 'qr_temperature_strategy': 'edt'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == config_hash(settings)


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": object()}])
def test_config_hash_refuses_unhashable_settings(bad: dict[str, object]) -> None:
    with pytest.raises(RecordError, match="canonical JSON"):
        config_hash(bad)
