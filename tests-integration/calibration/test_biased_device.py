"""Acceptance of device calibration against a real biased device.

A real ``qr-entropy-server --backend biased_backend:BiasedBitsBackend`` process
serves bits that are 1 with probability 0.502; the client is qr-entropy's
``quantum_grpc`` source and the real ``qr-entropy`` command. Amplifier
``zscore_bits``, ``sample_count`` N = 1,024 (1,016 bytes form S): the issue's
statistics hold at this N and the whole module moves about 35 MB instead of
700 MB. Expected z shift of the uncalibrated bit count: ``sqrt(32 * 1016) * 0.002
= 0.36``, a KS distance of about 0.14.

Sizes and levels (the device is seeded, ``QR_TEST_BIASED_SEED = 11``: the bias is
under test, not the randomness, so every run is the same run):

* uncalibrated, 20,000 tokens: KS p < 1e-6 (the expected p is below 1e-300);
* calibrated from 2,000 blocks (``qr-entropy calibrate``), 5 runs of 1,000 fresh
  tokens each: KS p > 0.001 in every run. Not 20,000 tokens per run: the
  calibration's own standard error, 1/sqrt(2,000) = 0.022 in z, is then larger
  than the KS resolution, and a perfectly calibrated device fails one such run with
  probability 0.32 (simulated, 400 repeats). With 1,000 tokens an unseeded repeat
  of all 5 runs fails with probability about 0.03 (simulated, 1,000 repeats; 0.005
  of it is the level itself);
* ``qr-entropy check --samples 200 --alpha 0.001``: passes with
  ``QR_CALIBRATION_PATH`` (4 drift tests), fails without (bit bias z ~ 5.1 over
  1.6M bits, p ~ 3e-7).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qr_core import ZScoreBitsAmplifier, load_calibration
from qr_core.analysis import ks_uniform
from qr_entropy import EntropyConfig, build_source
from qr_entropy_server.server_process import start_server_process

HERE = Path(__file__).resolve().parent
N = 1024
SEED = "11"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def device() -> Iterator[dict[str, str]]:
    """The biased server; yields the QR_* environment that points at it."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "QR_TEST_BIASED_SEED": SEED,
    }
    flags = ("--backend", "biased_backend:BiasedBitsBackend", "--address", "127.0.0.1:0")
    with start_server_process(*flags, env=env) as server:
        qr_env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
        qr_env.update(
            {
                "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
                "QR_GRPC_SERVER_ADDRESS": server.address,
                "QR_FALLBACK_MODE": "error",
                "QR_SAMPLE_COUNT": str(N),
                "QR_SIGNAL_AMPLIFIER_TYPE": "zscore_bits",
            }
        )
        yield qr_env


def _tokens(env: dict[str, str], count: int) -> np.ndarray:
    """``count`` rows of N bytes from the device, 1,000 rows per fetch."""
    config = EntropyConfig(
        entropy_source_type="quantum_grpc",
        grpc_server_address=env["QR_GRPC_SERVER_ADDRESS"],
        fallback_mode="error",
    )
    rows = []
    with build_source(config) as source:
        for start in range(0, count, 1000):
            k = min(1000, count - start)
            rows.append(np.frombuffer(source.fetch(k * N).data, np.uint8).reshape(k, N))
    return np.concatenate(rows)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qr_entropy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def calibration_file(device: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cal") / "device.json"
    done = _run(device, "calibrate", "--blocks", "2000", "--output", str(path))
    assert done.returncode == 0, done.stderr
    assert "sha256" in done.stdout
    return path


def test_uncalibrated_u_is_rejected(device: dict[str, str]) -> None:
    u = ZScoreBitsAmplifier(sample_count=N).amplify_batch(_tokens(device, 20_000)).u
    assert ks_uniform(u).p_value < 1e-6


def test_the_calibration_file_describes_the_device(calibration_file: Path) -> None:
    cal = load_calibration(calibration_file)
    data = json.loads(calibration_file.read_text())
    assert data["sha256"] == cal.sha256
    assert (cal.amplifier, cal.sample_count, cal.blocks) == ("zscore_bits", N, 2000)
    assert cal.source_type == "quantum_grpc"
    assert cal.device_id == "biased-bits-0.502"
    assert cal.source_address.startswith("127.0.0.1:")
    # 2000 x 1024 x 8 bits: the bit bias is 0.002 +- 0.00025 (4 standard errors).
    assert abs(cal.bit_bias - 0.002) < 4 * 0.5 / np.sqrt(2000 * N * 8)
    # The statistic's offset is about 0.36 null standard deviations.
    assert 0.25 < (cal.mean - cal.null_mean) / cal.null_std < 0.47
    assert abs(cal.lag1_autocorrelation) < 4 / np.sqrt(2000)


def test_calibrated_u_passes_in_five_runs(device: dict[str, str], calibration_file: Path) -> None:
    amp = ZScoreBitsAmplifier(sample_count=N).calibrated(load_calibration(calibration_file))
    p_values = [ks_uniform(amp.amplify_batch(_tokens(device, 1000)).u).p_value for _ in range(5)]
    assert min(p_values) > 0.001, p_values


def test_check_passes_with_the_calibration_and_fails_without(
    device: dict[str, str], calibration_file: Path
) -> None:
    calibrated = _run(
        {**device, "QR_CALIBRATION_PATH": str(calibration_file)},
        "check",
        "--samples",
        "200",
        "--alpha",
        "0.001",
        "--json",
    )
    assert calibrated.returncode == 0, calibrated.stdout + calibrated.stderr
    names = [t["name"] for t in json.loads(calibrated.stdout)["tests"]]
    assert names == [
        "statistic_drift_z",
        "bit_bias_drift_z",
        "byte_histogram_drift",
        "ks_calibrated_u",
    ]
    bare = _run(device, "check", "--samples", "200", "--alpha", "0.001", "--bytes", str(N))
    assert bare.returncode == 1, bare.stdout + bare.stderr
    assert "FAIL  bit_bias_z" in bare.stdout
