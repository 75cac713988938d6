"""``qr-entropy calibrate``: measure a device, and test fresh draws against the measurement.

:func:`run_calibration` draws blocks of ``sample_count`` bytes from the configured
source (one fetch per block, as a token's fetch) and hands them to qr-core's
:class:`~qr_core.CalibrationBuilder` for the amplifier's statistic.
:func:`drift_tests` is what ``qr-entropy check`` runs instead of its ideal-null
tests when ``QR_CALIBRATION_PATH`` is set: a biased device passes as long as it
stays the device it was calibrated as.
"""

from __future__ import annotations

import datetime
import importlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field
from pydantic_settings import BaseSettings

from qr_core import Calibration, SamplingConfig, SignalAmplifier, build_amplifier
from qr_core.analysis import ks_uniform, normal_two_sided_p
from qr_entropy._config import EntropyConfig
from qr_entropy._exceptions import QREntropyError
from qr_entropy._registry import create_source
from qr_entropy._uniformity import StatTest
from qr_entropy.settings import QR_SETTINGS_CONFIG

__all__ = ["AmplifierSettings", "drift_tests", "run_calibration"]

_DEFAULTS = SamplingConfig()
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)

Progress = Callable[[int, int], None]
Rate = Callable[[int, float], None]

RATE_AFTER_S = 2.0
"""Seconds of drawing after which ``run_calibration`` reports its measured rate."""


class AmplifierSettings(BaseSettings):
    """The two sampling settings a calibration depends on, read like qr-vllm reads them."""

    model_config = QR_SETTINGS_CONFIG

    signal_amplifier_type: str = Field(
        default=_DEFAULTS.signal_amplifier_type, description="QR_SIGNAL_AMPLIFIER_TYPE"
    )
    sample_count: int = Field(
        default=_DEFAULTS.sample_count, ge=1, le=1 << 30, description="QR_SAMPLE_COUNT"
    )


def _amplifier(name: str, sample_count: int) -> SignalAmplifier:
    return build_amplifier(SamplingConfig(signal_amplifier_type=name, sample_count=sample_count))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_calibration(
    config: EntropyConfig,
    *,
    blocks: int,
    amplifier: str,
    sample_count: int,
    source_name: str | None = None,
    progress: Progress | None = None,
    on_rate: Rate | None = None,
) -> Calibration:
    """Draw ``blocks`` blocks from the bare source and measure them.

    The calibration carries the device binding: the ``device_id`` the source reported
    in its responses, the source type, its address, sample_count and amplifier.

    Args:
        config: Source settings (``QR_*``).
        blocks: Number of blocks (>= 4).
        amplifier: Registry name of the amplifier to calibrate.
        sample_count: Bytes per block.
        source_name: Source to use; default ``config.entropy_source_type``.
        progress: Called as ``progress(done, blocks)`` after each block.
        on_rate: Called once as ``on_rate(done, seconds)`` after :data:`RATE_AFTER_S`
            seconds of drawing (or at the end, if sooner): the measured rate.

    Raises:
        QREntropyError: The source fails.
        QRCoreError: Bad amplifier name (or one that cannot be calibrated),
            sample_count or block count.
    """
    builder = _amplifier(amplifier, sample_count).calibration_builder()
    chunk = max(1, min(blocks, (1 << 22) // sample_count))
    buffer = np.empty((chunk, sample_count), dtype=np.uint8)
    started_at, t0 = _now(), time.monotonic()
    with create_source(config, source_name) as source:
        done = 0
        while done < blocks:
            rows = min(chunk, blocks - done)
            for i in range(rows):
                data = source.fetch(sample_count).data
                buffer[i] = np.frombuffer(data, dtype=np.uint8)
                if progress is not None:
                    progress(done + i + 1, blocks)
                elapsed = time.monotonic() - t0
                if on_rate is not None and (elapsed >= RATE_AFTER_S or done + i + 1 == blocks):
                    on_rate(done + i + 1, elapsed)
                    on_rate = None
            builder.add(buffer[:rows])
            done += rows
        name, device_id = source.name, source.device_id
    duration = time.monotonic() - t0
    address = config.grpc_server_address if "grpc" in name else ""
    return builder.finish(
        source_type=name,
        source_address=address,
        device_id=device_id,
        started_at=started_at,
        finished_at=_now(),
        duration_s=duration,
    )


def _chi2_sf(statistic: float, df: int) -> float:
    # Imported on first use, for start-up cost (only a calibrated check needs it; not a circle).
    stats: Any = importlib.import_module("scipy.stats")
    return float(stats.chi2.sf(statistic, df))


def drift_tests(calibration: Calibration, matrix: npt.NDArray[np.uint8]) -> tuple[StatTest, ...]:
    """Fresh blocks (rows of ``matrix``) against ``calibration``.

    * ``statistic_drift_z``: the mean of the amplifier's statistic against the
      calibrated mean, ``z = (mean - m) / sqrt(sd^2 / F + mean_se^2)`` for F blocks.
    * ``bit_bias_drift_z``: the fraction of ones against the calibration's (two
      proportions, pooled).
    * ``byte_histogram_drift``: chi-square test of homogeneity of the byte counts
      against the calibration's histogram (2 x 256 table, 255 df).
    * ``ks_calibrated_u``: KS of u from the calibrated amplifier against U(0, 1).

    Raises:
        QREntropyError: The rows are not ``calibration.sample_count`` bytes long.
    """
    fetches, width = matrix.shape
    if width != calibration.sample_count:
        raise QREntropyError(
            f"bytes per fetch {width} does not match the calibration's "
            f"sample_count={calibration.sample_count}"
        )
    amp = _amplifier(calibration.amplifier, calibration.sample_count).calibrated(calibration)
    s = amp.integer_statistic(matrix).astype(np.float64)
    spread = math.sqrt(calibration.std**2 / fetches + calibration.mean_se**2)
    z_stat = (float(s.mean()) - calibration.mean) / spread

    fresh = np.bincount(matrix.reshape(-1), minlength=256).astype(np.float64)
    old = np.asarray(calibration.byte_histogram, dtype=np.float64)
    bits_fresh, bits_old = 8.0 * fresh.sum(), 8.0 * old.sum()
    p_fresh = float(fresh @ _POPCOUNT) / bits_fresh
    p_old = calibration.bit_bias + 0.5
    pooled = (p_fresh * bits_fresh + p_old * bits_old) / (bits_fresh + bits_old)
    z_bits = (p_fresh - p_old) / math.sqrt(pooled * (1 - pooled) * (1 / bits_fresh + 1 / bits_old))

    table = np.vstack((fresh, old))
    used = table.sum(axis=0) > 0
    table = table[:, used]
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    df = int(used.sum()) - 1

    u = amp.amplify_batch(matrix).u
    ks = ks_uniform(u)
    sha = calibration.sha256[:12]
    return (
        StatTest(
            "statistic_drift_z",
            z_stat,
            normal_two_sided_p(z_stat),
            fetches,
            f"{calibration.statistic} mean {s.mean():.2f} vs calibrated {calibration.mean:.2f}",
        ),
        StatTest(
            "bit_bias_drift_z",
            z_bits,
            normal_two_sided_p(z_bits),
            int(bits_fresh),
            f"fraction of ones {p_fresh:.6f} vs calibrated {p_old:.6f}",
        ),
        StatTest(
            "byte_histogram_drift",
            chi2,
            _chi2_sf(chi2, df) if df > 0 else 1.0,
            int(fresh.sum()),
            f"2 x {df + 1} homogeneity table, {df} degrees of freedom",
        ),
        StatTest(
            "ks_calibrated_u",
            ks.statistic,
            ks.p_value,
            int(u.size),
            f"one u per fetch ({calibration.amplifier}, calibration {sha})",
        ),
    )
