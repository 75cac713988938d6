"""``qr-entropy check``: draw from a source, time it, and test its bytes.

Every p-value comes from qr-core's statistics (``qr_core.records``, SciPy always),
the same code ``qr-analyze`` runs, so a p-value never depends on what is installed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from qr_core import Calibration
from qr_core.records import chi_square_uniform, ks_uniform, normal_two_sided_p
from qr_entropy._config import EntropyConfig
from qr_entropy._exceptions import QREntropyError
from qr_entropy._registry import create_source

__all__ = [
    "CheckReport",
    "StatTest",
    "amplified_u",
    "bit_bias_test",
    "byte_chi_square_test",
    "ks_uniform_test",
    "run_check",
]

_BITS_PER_BYTE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


@dataclass(frozen=True, slots=True)
class StatTest:
    """Outcome of one statistical test."""

    name: str
    """Short name, e.g. ``"byte_chi_square"``."""
    statistic: float
    """The test statistic (chi-square, z, or KS D)."""
    p_value: float
    """Probability of a statistic at least this extreme under the null hypothesis."""
    n: int
    """Number of observations the test used (bytes, bits, or u values)."""
    detail: str
    """One line for humans, e.g. degrees of freedom or the fraction of ones."""

    def passed(self, alpha: float) -> bool:
        """Whether the null hypothesis survives at significance level ``alpha``."""
        return self.p_value >= alpha


def _as_bytes(data: bytes | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if isinstance(data, bytes | bytearray):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).ravel()


def byte_chi_square_test(data: bytes | npt.NDArray[np.uint8]) -> StatTest:
    """Chi-square goodness of fit of byte values to the uniform law on 0..255 (255 df)."""
    values = _as_bytes(data)
    result = chi_square_uniform(np.bincount(values, minlength=256))
    return StatTest(
        name="byte_chi_square",
        statistic=result.statistic,
        p_value=result.p_value,
        n=int(values.size),
        detail="256 bins, 255 degrees of freedom",
    )


def bit_bias_test(data: bytes | npt.NDArray[np.uint8]) -> StatTest:
    """Two-sided z test that each bit is 1 with probability 1/2."""
    values = _as_bytes(data)
    bits = 8 * values.size
    ones = int(_BITS_PER_BYTE[values].sum())
    z = (ones - bits / 2.0) / math.sqrt(bits / 4.0)
    return StatTest(
        name="bit_bias_z",
        statistic=z,
        p_value=normal_two_sided_p(z),
        n=bits,
        detail=f"fraction of ones {ones / bits:.6f}",
    )


def ks_uniform_test(u: npt.ArrayLike) -> StatTest:
    """Kolmogorov-Smirnov test of values against the uniform law on (0, 1).

    Raises:
        ValueError: No values.
    """
    values = np.asarray(u, dtype=np.float64).ravel()
    if values.size < 1:
        raise ValueError("ks_uniform_test needs at least one value")
    result = ks_uniform(values)
    return StatTest(
        name="ks_amplified_u",
        statistic=result.statistic,
        p_value=result.p_value,
        n=int(values.size),
        detail="one u per fetch (qr_core.ZScoreMeanAmplifier) against uniform(0, 1)",
    )


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
            "fetches": self.fetches,
            "total_bytes": self.total_bytes,
            "seconds": self.seconds,
            "throughput_bytes_per_s": self.throughput_bytes_per_s,
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


def amplified_u(matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """One amplified ``u`` per row, through qr-core's default z-score mean amplifier."""
    from qr_core import ZScoreMeanAmplifier

    return np.asarray(ZScoreMeanAmplifier().amplify_batch(matrix).u, dtype=np.float64)


def run_check(
    config: EntropyConfig,
    *,
    source_name: str | None = None,
    bytes_per_fetch: int = 20480,
    fetches: int = 100,
    alpha: float = 0.01,
    calibration: Calibration | None = None,
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

    Returns:
        The report.

    Raises:
        QREntropyError: The source cannot be built or a fetch fails.
    """
    if calibration is not None and bytes_per_fetch != calibration.sample_count:
        raise QREntropyError(
            f"bytes per fetch {bytes_per_fetch} does not match the calibration's "
            f"sample_count={calibration.sample_count}"
        )
    matrix = np.empty((fetches, bytes_per_fetch), dtype=np.uint8)
    latencies = np.empty(fetches, dtype=np.float64)
    with create_source(config, source_name) as source:
        for i in range(fetches):
            start = time.perf_counter_ns()
            result = source.fetch(bytes_per_fetch)
            latencies[i] = time.perf_counter_ns() - start
            matrix[i] = np.frombuffer(result.data, dtype=np.uint8)
        health = source.health_check()
        name, device_id = source.name, source.device_id
    if calibration is not None:
        # Imported here: _calibrate builds on this module's StatTest.
        from qr_entropy._calibrate import drift_tests

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
    )
