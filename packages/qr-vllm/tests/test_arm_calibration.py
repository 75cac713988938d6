"""Per-arm device calibration: ``calibration_path`` inside a ``QR_SOURCES`` arm.

Loading and refusals at start (:meth:`AdapterConfig.from_env`), per-request
overrides (:meth:`QRSamplingLogitsProcessor.validate_params`), and the step: a
calibrated and an uncalibrated arm in one batch are amplified separately, each
row against its own arm's calibration, on the host and the device path.

The calibration is built here from known bytes (seeded, byte values 2..255:
its mean lies about 1.5 bytes above the ideal null, so calibrated and
uncalibrated u differ), and the step's bytes are seeded per arm: the tests
compare two computations on the same bytes, randomness is not what they check.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from qr_core import Calibration, SamplingConfig, build_amplifier
from qr_core.records import TokenSamplingRecord
from qr_core.testing import OpCount, count_ops
from qr_entropy import EntropyFetch, ProbeResult
from qr_vllm import (
    AdapterConfig,
    QRParamsError,
    QRSamplingLogitsProcessor,
    SamplingSettings,
    calibrated_hash,
)
from qr_vllm._batch import plan_for_params
from qr_vllm._device_check import FirstFetchCheck, refuse_other_devices
from qr_vllm.step import Slot, StepSampler

from .engine_parts import built_processor

SAMPLE_COUNT = 256
VOCAB = 512
CALIBRATED, PLAIN = "qrng", "control"


def _calibration(
    sample_count: int = SAMPLE_COUNT,
    amplifier: str = "zscore_mean",
    blocks: int = 200,
    device: tuple[str, str] = ("test", "known-bytes"),
) -> Calibration:
    """A calibration of known bytes: uniform on 2..255 (mean 128.5), seeded, labelled as
    made on ``device`` (source type, device id)."""
    config = SamplingConfig(signal_amplifier_type=amplifier, sample_count=sample_count)
    builder = build_amplifier(config).calibration_builder()
    rng = np.random.default_rng(7)
    builder.add(rng.integers(2, 256, size=(blocks, sample_count), dtype=np.uint8))
    return builder.finish(
        source_type=device[0],
        source_address="",
        device_id=device[1],
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:00:01+00:00",
        duration_s=1.0,
    )


def _saved(tmp_path: Path, calibration: Calibration, name: str = "cal.json") -> Path:
    path = tmp_path / name
    calibration.save(path)
    return path


@pytest.fixture
def env(seeded_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return seeded_env


def _set_arms(env: pytest.MonkeyPatch, calibration_path: object) -> None:
    table = {
        CALIBRATED: {
            "entropy_source_type": "mock_uniform",
            "mock_uniform_seed": 1,
            "calibration_path": str(calibration_path),
        },
        PLAIN: {"entropy_source_type": "mock_uniform", "mock_uniform_seed": 2},
    }
    env.setenv("QR_SOURCES", json.dumps(table))


# ---------------------------------------------------------------- loading and refusals


def test_each_arm_loads_its_own_calibration(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cal = _calibration()
    _set_arms(env, _saved(tmp_path, cal))
    config = AdapterConfig.from_env()
    assert config.calibration is None
    assert dict(config.arm_calibrations) == {CALIBRATED: cal}
    assert config.calibrations == {CALIBRATED: cal}


def test_the_top_level_calibration_is_refused_with_arms(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _saved(tmp_path, _calibration())
    _set_arms(env, path)
    env.setenv("QR_CALIBRATION_PATH", str(path))
    with pytest.raises(QRParamsError) as info:
        AdapterConfig.from_env()
    message = str(info.value)
    assert f"QR_CALIBRATION_PATH={str(path)!r} cannot be combined with QR_SOURCES arms" in message
    assert '"calibration_path" into the QR_SOURCES entry of the arm(s)' in message


@pytest.mark.parametrize(
    ("calibration", "expected"),
    [
        (
            _calibration(sample_count=512),
            "QR_SOURCES: arm 'qrng': calibration_path: calibration sample_count=512 does not "
            "match sample_count=256",
        ),
        (
            _calibration(amplifier="zscore_bits"),
            "QR_SOURCES: arm 'qrng': calibration_path: calibration amplifier 'zscore_bits' "
            "does not match signal_amplifier_type 'zscore_mean'",
        ),
    ],
    ids=["sample_count", "amplifier"],
)
def test_an_arm_calibration_that_does_not_match_is_refused_at_start(
    env: pytest.MonkeyPatch, tmp_path: Path, calibration: Calibration, expected: str
) -> None:
    _set_arms(env, _saved(tmp_path, calibration))
    with pytest.raises(QRParamsError, match=expected):
        AdapterConfig.from_env()


def test_an_arm_calibration_of_another_format_version_is_refused(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _saved(tmp_path, _calibration())
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    _set_arms(env, path)
    with pytest.raises(QRParamsError) as info:
        AdapterConfig.from_env()
    assert str(info.value).startswith(
        f"QR_SOURCES: arm 'qrng': calibration_path: calibration file {str(path)!r}: "
        "format_version=99 is not supported"
    )


def test_a_missing_arm_calibration_names_the_arm_and_the_path(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.json"
    _set_arms(env, missing)
    with pytest.raises(QRParamsError) as info:
        built_processor()
    assert str(info.value).startswith(
        f"QR_SOURCES: arm 'qrng': calibration_path: calibration file {str(missing)!r}: "
        "cannot be read"
    )


# ---------------------------------------------------------------- the processor


def _params(arm: str | None, **extra: object) -> SamplingParams:
    args: dict[str, object] = dict(extra)
    if arm is not None:
        args["qr_entropy_source"] = arm
    return SamplingParams(extra_args=args)


def test_a_request_may_not_leave_its_calibrated_arms_settings(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _set_arms(env, _saved(tmp_path, _calibration()))
    validate = QRSamplingLogitsProcessor.validate_params
    with pytest.raises(QRParamsError) as info:
        validate(_params(CALIBRATED, qr_sample_count=512))
    assert str(info.value) == (
        "qr_entropy_source='qrng' is calibrated (calibration_path in QR_SOURCES): "
        "calibration sample_count=256 does not match sample_count=512"
    )
    with pytest.raises(QRParamsError, match="calibration amplifier 'zscore_mean'"):
        validate(_params(CALIBRATED, qr_signal_amplifier_type="zscore_bits"))
    # What does not touch the calibration, and every override of an uncalibrated arm
    # or of the (uncalibrated) default source, is allowed.
    validate(_params(CALIBRATED, qr_top_k=5))
    validate(_params(PLAIN, qr_sample_count=512, qr_signal_amplifier_type="zscore_bits"))
    validate(_params(None, qr_sample_count=512))


def test_processor_records_carry_their_arms_calibration_hash(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Labelled as the arm's device (the start-up probe compares the device ids).
    cal = _calibration(device=("mock_uniform", "pcg64(seed=1,bias=0.0)"))
    _set_arms(env, _saved(tmp_path, cal))
    proc = built_processor()
    added = [
        (i, _params(arm, qr_request_tag=str(arm)), [1], [])
        for i, arm in enumerate([CALIBRATED, PLAIN, None])
    ]
    proc.update_state(BatchUpdate(batch_size=3, removed=[], added=added, moved=[]))
    proc.apply(torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0)))
    by_tag = {r.request_tag: r for r in proc.diagnostic_records()}
    proc.close()
    plain_hash = by_tag[PLAIN].config_hash
    assert by_tag[CALIBRATED].calibration_sha256 == cal.sha256
    assert by_tag[CALIBRATED].config_hash == calibrated_hash(plain_hash, cal) != plain_hash
    assert by_tag[CALIBRATED].calibration_blocks == 200
    assert by_tag[PLAIN].calibration_sha256 is None
    assert by_tag[PLAIN].calibration_blocks is None
    assert by_tag["None"].calibration_sha256 is None
    assert by_tag["None"].config_hash == plain_hash
    # The calibrated row's u is the calibrated amplifier's on that row's bytes.
    _assert_u_of_own_calibration([by_tag[CALIBRATED], by_tag[PLAIN]], cal)


def test_an_arm_calibration_of_another_device_is_refused_at_start(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The start-up probe reads the arm's device id: "known-bytes" is another device.
    _set_arms(env, _saved(tmp_path, _calibration()))
    with pytest.raises(
        QRParamsError,
        match=r"QR_SOURCES: arm 'qrng': calibration_path: .* made on source 'test' "
        r"\(device_id 'known-bytes'\), but this source is 'mock_uniform' "
        r"\(device_id 'pcg64\(seed=1,bias=0.0\)'\)",
    ):
        built_processor()


def test_an_arm_unreachable_at_start_is_checked_on_its_first_fetch() -> None:
    cal = _calibration(device=("mock_uniform", "pcg64(seed=1,bias=0.0)"))
    down = ProbeResult("mock_uniform", False, detail="down")
    unchecked = refuse_other_devices({CALIBRATED: cal}, {CALIBRATED: down})
    assert unchecked == (CALIBRATED,)
    check = FirstFetchCheck({CALIBRATED: cal}, unchecked)
    other = EntropyFetch(
        data=b"\0",
        source="mock_uniform",
        device_id="pcg64(seed=3,bias=0.0)",
        sequence_id=None,
        requested_ns=0,
        generated_ns=None,
        received_ns=1,
    )
    check.check(CALIBRATED, dataclasses.replace(other, fallback=True))  # not the device
    assert check.pending
    with pytest.raises(QRParamsError, match="reports device_id 'pcg64\\(seed=3"):
        check.check(CALIBRATED, other)
    assert not check.pending


# ---------------------------------------------------------------- the step


class ArmBytes:
    """Seeded bytes per arm and step: the same for every sampler at a given step."""

    def __init__(self) -> None:
        self.step = 0

    def fetch(self, n: int) -> EntropyFetch:
        return self.fetch_many({None: n})[None]

    def fetch_many(self, counts: Mapping[str | None, int]) -> dict[str | None, EntropyFetch]:
        now = time.time_ns()
        out: dict[str | None, EntropyFetch] = {}
        for arm, n in counts.items():
            seed = (self.step, sum(map(ord, arm or "")))
            data = np.random.default_rng(seed).bytes(n)
            out[arm] = EntropyFetch(data, f"bytes-{arm}", "test", None, now, now, now)
        return out


def _slots(arms: Sequence[str | None], settings: Sequence[dict[str, Any]] = ({},)) -> list[Slot]:
    base = SamplingSettings(sample_count=SAMPLE_COUNT)
    out = []
    for i, arm in enumerate(arms):
        extra = {"qr_request_tag": f"row{i}", **settings[i % len(settings)]}
        plan = plan_for_params(base, SamplingParams(extra_args=extra))
        assert plan is not None
        out.append(Slot(plan=plan, output_ids=[0] * i, arm=arm))
    return out


def _sampler(
    engine: str, entropy: ArmBytes, cal: Calibration, records: list[TokenSamplingRecord] | None
) -> StepSampler:
    def emit(recs: Sequence[TokenSamplingRecord], _slots: Sequence[Slot]) -> None:
        if records is not None:
            records.extend(recs)

    return StepSampler(
        entropy.fetch,
        emit,
        fetch_many=entropy.fetch_many,
        wants_records=None if records is not None else (lambda _slots: False),
        record_raw_bytes=True,
        calibrations={CALIBRATED: cal},
        engine=engine,  # type: ignore[arg-type]
    )


def _assert_u_of_own_calibration(records: Sequence[TokenSamplingRecord], cal: Calibration) -> None:
    config = SamplingConfig(sample_count=SAMPLE_COUNT)
    amplifiers = {CALIBRATED: build_amplifier(config, cal), PLAIN: build_amplifier(config)}
    other = {CALIBRATED: amplifiers[PLAIN], PLAIN: amplifiers[CALIBRATED]}
    for r in records:
        assert r.arm is not None
        assert r.raw_bytes_hex is not None
        raw = np.frombuffer(bytes.fromhex(r.raw_bytes_hex), dtype=np.uint8).reshape(1, -1)
        amp = amplifiers[r.arm].amplify_batch(raw)
        assert (r.u, r.z_score) == (float(amp.u[0]), float(amp.z_score[0])), r.arm
        # The other arm's calibration would have given another u: the check can fail.
        assert r.u != float(other[r.arm].amplify_batch(raw).u[0])


@pytest.mark.parametrize("engine", ["host", "device"])
def test_each_row_is_standardised_against_its_arms_calibration(engine: str) -> None:
    cal = _calibration()
    entropy = ArmBytes()
    records: list[TokenSamplingRecord] = []
    sampler = _sampler(engine, entropy, cal, records)
    arms = [CALIBRATED, PLAIN, PLAIN, CALIBRATED, CALIBRATED, PLAIN]
    slots = _slots(arms)
    logits = torch.randn(len(arms), VOCAB, generator=torch.Generator().manual_seed(1)) * 3
    sampler.sample(logits, list(range(len(arms))), slots)
    assert [r.arm for r in records] == arms
    plain_hash = slots[0].plan.config_hash  # every row has the same sampling settings
    for r in records:
        if r.arm == CALIBRATED:
            assert (r.calibration_sha256, r.config_hash) == (
                cal.sha256,
                calibrated_hash(plain_hash, cal),
            )
        else:
            assert (r.calibration_sha256, r.config_hash) == (None, plain_hash)
    _assert_u_of_own_calibration(records, cal)
    # The forced token of each row is the one its record names.
    assert logits.argmax(dim=1).tolist() == [r.token_id for r in records]


def test_host_and_device_paths_agree_with_calibrated_arms() -> None:
    cal = _calibration()
    records: dict[str, list[TokenSamplingRecord]] = {"host": [], "device": []}
    entropy = ArmBytes()
    arms = [PLAIN, CALIBRATED, None, CALIBRATED]
    for engine in records:
        sampler = _sampler(engine, entropy, cal, records[engine])
        logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(2)) * 3
        sampler.sample(logits, [0, 1, 2, 3], _slots(arms, [{}, {"qr_top_k": 20}]))
    fields = ("arm", "u", "z_score", "token_id", "calibration_sha256", "config_hash")
    host, device = (
        [tuple(getattr(r, f) for f in fields) for r in records[e]] for e in ("host", "device")
    )
    assert host == device
    assert [h[4] for h in host] == [None, cal.sha256, None, cal.sha256]


def _count_step(rows: int, arms: Sequence[str | None]) -> OpCount:
    entropy = ArmBytes()
    sampler = _sampler("device", entropy, _calibration(), [])
    slots = _slots([arms[i % len(arms)] for i in range(rows)], [{}, {"qr_top_k": 20}])
    logits = torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(0))
    sampler.sample(logits, list(range(rows)), slots)  # first-call costs
    counts, _ = count_ops(lambda: sampler.sample(logits.clone(), list(range(rows)), slots))
    return counts


def test_calibrated_arms_do_not_add_device_operations() -> None:
    # One uncalibrated arm against a calibrated and an uncalibrated arm (two
    # amplifier groups), at B = 8 and 64: the same aten operations.
    by_case = {
        (rows, tuple(arms)): _count_step(rows, arms)
        for rows in (8, 64)
        for arms in ([PLAIN], [CALIBRATED, PLAIN])
    }
    first = next(iter(by_case.values()))
    assert first.ops > 0
    for case, counts in by_case.items():
        assert counts.syncs == 0, (case, counts.sync_sites)
        assert counts.by_op == first.by_op, case
