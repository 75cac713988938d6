"""``qr-entropy check``: draw from a source, time it, and test its bytes.

The bytes are tested against the ideal uniform law (:mod:`qr_entropy._uniformity`)
or, with a device calibration, for drift from it (:func:`qr_entropy._calibrate.drift_tests`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from qr_core import Calibration
from qr_entropy._calibrate import drift_tests
from qr_entropy._config import EntropyConfig
from qr_entropy._device_binding import refuse_other_device
from qr_entropy._exceptions import QREntropyError
from qr_entropy._registry import create_source
from qr_entropy._uniformity import (
    StatTest,
    amplified_u,
    bit_bias_test,
    byte_chi_square_test,
    ks_uniform_test,
)

__all__ = ["CheckReport", "run_check"]


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Figures and test outcomes of one ``qr-entropy check`` run."""

    source: str
    device_id: str
    bytes_per_fetch: int
    fetches: int
    seconds: float
    """Total time spent inside ``fetch`` calls (monotonic clock)."""
    latency_ms: dict[str, float]
    """Per-fetch latency: ``p50``, ``p90``, ``p99``, ``max``."""
    tests: tuple[StatTest, ...]
    alpha: float
    health: dict[str, object] = field(default_factory=dict)
    device_bytes_per_second: int | None = None
    """The device's rate as its server last reported it; ``None`` when not reported."""
    sample_count: int = 20480
    """Bytes per token (``QR_SAMPLE_COUNT``) the token rates are given at."""
    amplifier: str = "zscore_mean"
    """The amplifier whose u (and, calibrated, whose statistic) the tests used."""
    calibration_sha256: str | None = None
    """The calibration the bytes were tested against for drift; ``None``: the ideal null."""

    @property
    def device_tokens_per_second(self) -> float | None:
        """Tokens per second the device supports at :attr:`sample_count`; ``None``: unknown."""
        rate = self.device_bytes_per_second
        return None if rate is None else rate / self.sample_count

    @property
    def total_bytes(self) -> int:
        """Bytes drawn in all."""
        return self.bytes_per_fetch * self.fetches

    @property
    def throughput_bytes_per_s(self) -> float:
        """Bytes per second of fetch time."""
        return self.total_bytes / self.seconds if self.seconds > 0 else float("inf")

    @property
    def passed(self) -> bool:
        """Whether every test passed at ``alpha``."""
        return all(t.passed(self.alpha) for t in self.tests)

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form for ``--json``."""
        return {
            "source": self.source,
            "device_id": self.device_id,
            "bytes_per_fetch": self.bytes_per_fetch,
            "amplifier": self.amplifier,
            "calibration_sha256": self.calibration_sha256,
            "fetches": self.fetches,
            "total_bytes": self.total_bytes,
            "seconds": self.seconds,
            "throughput_bytes_per_s": self.throughput_bytes_per_s,
            "device_bytes_per_second": self.device_bytes_per_second,
            "sample_count": self.sample_count,
            "device_tokens_per_second": self.device_tokens_per_second,
            "latency_ms": self.latency_ms,
            "alpha": self.alpha,
            "passed": self.passed,
            "tests": [
                {
                    "name": t.name,
                    "statistic": t.statistic,
                    "p_value": t.p_value,
                    "n": t.n,
                    "passed": t.passed(self.alpha),
                    "detail": t.detail,
                }
                for t in self.tests
            ],
            "health": self.health,
        }


def run_check(
    config: EntropyConfig,
    *,
    source_name: str | None = None,
    bytes_per_fetch: int = 20480,
    fetches: int = 100,
    alpha: float = 0.01,
    calibration: Calibration | None = None,
    sample_count: int = 20480,
    calibration_where: str = "QR_CALIBRATION_PATH",
) -> CheckReport:
    """Draw ``fetches`` x ``bytes_per_fetch`` bytes from a bare source and test them.

    The source is built without a fallback, so a failing device shows up as
    an error instead of being hidden behind fallback bytes. With a device
    ``calibration`` the bytes are tested for drift from it
    (:func:`qr_entropy._calibrate.drift_tests`) instead of against ideal bytes.

    Args:
        config: Settings for the source.
        source_name: Source to test; default ``config.entropy_source_type``.
        bytes_per_fetch: Bytes per fetch (one amplified ``u`` each).
        fetches: Number of fetches.
        alpha: Significance level of every test.
        calibration: The device calibration (``QR_CALIBRATION_PATH``), or None.
        sample_count: Bytes per token (``QR_SAMPLE_COUNT``), for the token rate
            the device supports.
        calibration_where: The setting that named ``calibration`` (for messages).

    Returns:
        The report.

    Raises:
        QREntropyError: The source cannot be built or a fetch fails.
        ConfigError: The calibration was made on another device or source type than
            the one the source reports after its first fetch (names both).
    """
    if calibration is not None and bytes_per_fetch != calibration.sample_count:
        raise QREntropyError(
            f"bytes per fetch {bytes_per_fetch} does not match the calibration's "
            f"sample_count={calibration.sample_count}"
        )
    matrix = np.empty((fetches, bytes_per_fetch), dtype=np.uint8)
    latencies = np.empty(fetches, dtype=np.float64)
    rate: int | None = None
    with create_source(config, source_name) as source:
        for i in range(fetches):
            start = time.perf_counter_ns()
            result = source.fetch(bytes_per_fetch)
            latencies[i] = time.perf_counter_ns() - start
            matrix[i] = np.frombuffer(result.data, dtype=np.uint8)
            rate = result.device_bytes_per_second or rate
            if i == 0 and calibration is not None:  # the device_id is known after a reply
                refuse_other_device(
                    calibration, source.name, source.device_id, where=calibration_where
                )
        health = source.health_check()
        name, device_id = source.name, source.device_id
    if calibration is not None:
        tests = drift_tests(calibration, matrix)
    else:
        tests = (
            byte_chi_square_test(matrix),
            bit_bias_test(matrix),
            ks_uniform_test(amplified_u(matrix)),
        )
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) / 1e6
    return CheckReport(
        source=name,
        device_id=device_id,
        bytes_per_fetch=bytes_per_fetch,
        fetches=fetches,
        seconds=float(latencies.sum()) / 1e9,
        latency_ms={
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "max": float(latencies.max()) / 1e6,
        },
        tests=tests,
        alpha=alpha,
        health=health,
        device_bytes_per_second=rate,
        sample_count=sample_count,
        amplifier="zscore_mean" if calibration is None else calibration.amplifier,
        calibration_sha256=None if calibration is None else calibration.sha256,
    )
