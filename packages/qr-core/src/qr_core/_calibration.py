"""Device calibration: the measured law of an amplifier's statistic on one device.

Real hardware never has a byte mean of exactly 127.5. A :class:`Calibration` holds
the mean and standard deviation of the amplifier's integer statistic S measured on
the device (with their standard errors) and the byte-level figures behind them; an
amplifier built with it standardises S against them instead of the ideal null (see
:mod:`qr_core._pit` for the calibrated transform).

The file is JSON: every field of :class:`Calibration` except ``sha256`` is the
*content*; ``sha256`` is the SHA-256 of the content serialised canonically
(``json.dumps(content, sort_keys=True, separators=(",", ":"))``). Loading
recomputes it and refuses a file whose content does not match its hash.

Standard errors, for B blocks: ``mean_se = std / sqrt(B)``, i.e. ``1 / sqrt(B)`` in
units of z (B = 2,000: 0.022; 10,000: 0.010; 100,000: 0.0032), and
``std_se = sqrt(m4 - s^4 (B - 3) / (B - 1)) / (2 s sqrt(B))`` from the sample fourth
central moment m4 (``~ std / sqrt(2 B)`` for a normal S); their covariance
``mean_std_cov = m3 / (2 s B)`` from the third central moment m3 (0 for a symmetric S).
These are what ``qr_core.analysis`` needs to put the calibration's own error into
every statistic of a calibrated arm, and each record carries them.

Format 2 adds ``mean_std_cov``. A format-1 file still loads (its hash covers the
format-1 content, so it still verifies) and reads ``mean_std_cov = 0``.

The file is bound to its device: ``device_id`` is the id the source reported in its
responses while the blocks were drawn, beside the source type, address, sample_count
and amplifier. :meth:`Calibration.device_mismatch` says whether a device id reported
now is another device; ``qr-entropy check`` and the engine refuse such a calibration.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from qr_core._errors import QRCoreError

__all__ = [
    "CALIBRATION_FORMAT_VERSION",
    "READABLE_CALIBRATION_FORMATS",
    "Calibration",
    "CalibrationBuilder",
    "load_calibration",
]

CALIBRATION_FORMAT_VERSION: Final = 2
"""Layout version of the calibration files this code writes."""

READABLE_CALIBRATION_FORMATS: Final = (1, 2)
"""Layout versions :func:`load_calibration` reads (format 1 lacks ``mean_std_cov``)."""

_ADDED_IN_FORMAT_2: Final = ("mean_std_cov",)

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


@dataclass(frozen=True)
class Calibration:
    """The measured law of one amplifier's statistic on one device."""

    format_version: int
    """:data:`CALIBRATION_FORMAT_VERSION` of the file."""
    amplifier: str
    """Registry name of the amplifier whose statistic was measured."""
    sample_count: int
    """Entropy bytes per block (per token): the amplifier's ``sample_count``."""
    statistic: str
    """``one_count`` or ``byte_sum``."""
    statistic_bytes: int
    """Bytes of each block that form the statistic."""
    blocks: int
    """Number of blocks drawn (B)."""
    mean: float
    """Mean of the statistic over the blocks."""
    mean_se: float
    """Standard error of ``mean``: ``std / sqrt(B)``."""
    std: float
    """Sample standard deviation of the statistic (``ddof = 1``)."""
    std_se: float
    """Standard error of ``std`` (from the fourth central moment)."""
    mean_std_cov: float
    """Covariance of the estimates ``mean`` and ``std``: ``m3 / (2 std B)`` from the
    third central moment m3 (units of S squared; 0 in format-1 files)."""
    null_mean: float
    """Mean of the statistic under the ideal null, for comparison."""
    null_std: float
    """Standard deviation of the statistic under the ideal null."""
    lag1_autocorrelation: float
    """Correlation of the statistic of block i with that of block i + 1."""
    byte_histogram: tuple[int, ...]
    """Count of each byte value 0..255 over all bytes of all blocks."""
    bit_bias: float
    """Fraction of one bits over all bytes of all blocks, minus 1/2."""
    source_type: str
    """The entropy source's name (``QR_ENTROPY_SOURCE_TYPE``)."""
    source_address: str
    """The source's address (the gRPC server), empty where it has none."""
    device_id: str
    """The device id the source reported."""
    started_at: str
    """ISO 8601 UTC time of the first draw."""
    finished_at: str
    """ISO 8601 UTC time after the last draw."""
    duration_s: float
    """Seconds from the first draw to the end of the last."""
    sha256: str
    """SHA-256 of the content (every other field), see the module docstring."""

    def content(self) -> dict[str, object]:
        """Every field of its format except ``sha256``, as plain JSON values."""
        data = asdict(self)
        del data["sha256"]
        if self.format_version == 1:
            for name in _ADDED_IN_FORMAT_2:
                del data[name]
        data["byte_histogram"] = list(self.byte_histogram)
        return data

    def device_mismatch(self, device_id: str, source_type: str | None = None) -> str | None:
        """Why this calibration does not belong to the device that reports ``device_id``
        now (``None`` when it does).

        A calibration binds its device by the id the source reported in its responses
        while the blocks were drawn; another id is another device, whose mean and
        standard deviation this calibration does not describe. An empty ``device_id``
        (a source that reports none) matches only a calibration made without one.
        With ``source_type``, the source's name must match too (a calibration of a
        ``mock_uniform`` source is not one of ``system``).
        """
        if source_type is not None and source_type != self.source_type:
            return (
                f"the calibration {self.sha256[:12]} was made on source "
                f"{self.source_type!r} (device_id {self.device_id or '(none)'!r}), but this "
                f"source is {source_type!r} (device_id {device_id or '(none)'!r}): "
                "calibrate this device"
            )
        if device_id == self.device_id:
            return None
        return (
            f"the calibration {self.sha256[:12]} was made on device_id "
            f"{self.device_id or '(none)'!r} (source {self.source_type}), but the source "
            f"now reports device_id {device_id or '(none)'!r}: calibrate this device"
        )

    def to_json(self) -> str:
        """The file's text: the content plus its ``sha256``, indented."""
        data = self.content()
        data["sha256"] = self.sha256
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, origin: str = "calibration") -> Calibration:
        """Validate a parsed file.

        Raises:
            QRCoreError: Wrong format version, missing or unknown keys, a value of
                the wrong type, or content that does not match ``sha256``.
        """
        version = data.get("format_version")
        if version not in READABLE_CALIBRATION_FORMATS or type(version) is not int:
            raise QRCoreError(
                f"{origin}: format_version={version!r} is not supported; this qr-core "
                f"reads format_version in {list(READABLE_CALIBRATION_FORMATS)}"
            )
        names = {f.name for f in fields(cls)}
        if version == 1:
            names -= set(_ADDED_IN_FORMAT_2)
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise QRCoreError(f"{origin}: keys missing {missing}, unknown {unknown}")
        values: dict[str, object] = {}
        for f in fields(cls):
            value = data.get(f.name, 0.0)  # only format 2's mean_std_cov can be absent
            if f.name == "byte_histogram":
                counts = value if isinstance(value, list) else []
                if len(counts) != 256 or not all(type(c) is int and c >= 0 for c in counts):
                    raise QRCoreError(f"{origin}: byte_histogram must be 256 counts >= 0")
                value = tuple(counts)
            elif f.type == "int" and type(value) is not int:
                raise QRCoreError(f"{origin}: {f.name} must be an int, got {value!r}")
            elif f.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise QRCoreError(f"{origin}: {f.name} must be a number, got {value!r}")
                value = float(value)
            elif f.type == "str" and not isinstance(value, str):
                raise QRCoreError(f"{origin}: {f.name} must be a string, got {value!r}")
            values[f.name] = value
        calibration = cls(**values)  # type: ignore[arg-type]
        expected = content_sha256(calibration.content())
        if calibration.sha256 != expected:
            raise QRCoreError(
                f"{origin}: sha256 {calibration.sha256!r} does not match the content "
                f"({expected!r}); the file was edited or damaged"
            )
        if not (calibration.std > 0 and math.isfinite(calibration.mean)):
            raise QRCoreError(f"{origin}: std must be > 0, got {calibration.std!r}")
        return calibration


def content_sha256(content: Mapping[str, object]) -> str:
    """SHA-256 of the canonical JSON serialisation of ``content``."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file (``QR_CALIBRATION_PATH``).

    Raises:
        QRCoreError: The file cannot be read, is not JSON, or fails
            :meth:`Calibration.from_dict`; the message names the path.
    """
    origin = f"calibration file {str(path)!r}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise QRCoreError(f"{origin}: cannot be read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise QRCoreError(f"{origin}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise QRCoreError(f"{origin}: must hold a JSON object")
    return Calibration.from_dict(data, origin=origin)


StatisticFn = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.int64]]


class CalibrationBuilder:
    """Accumulates blocks drawn from a device into a :class:`Calibration`.

    Args:
        amplifier: The amplifier's registry name.
        sample_count: Bytes per block.
        statistic: ``one_count`` or ``byte_sum``.
        statistic_bytes: Bytes of each block the statistic uses.
        integer_statistic: The amplifier's statistic of a ``(B, sample_count)``
            uint8 array, int64 per row.
        null_mean: The statistic's ideal null mean.
        null_std: The statistic's ideal null standard deviation.
    """

    def __init__(
        self,
        *,
        amplifier: str,
        sample_count: int,
        statistic: str,
        statistic_bytes: int,
        integer_statistic: StatisticFn,
        null_mean: float,
        null_std: float,
    ) -> None:
        self._head = (amplifier, sample_count, statistic, statistic_bytes)
        self._null = (null_mean, null_std)
        self._statistic = integer_statistic
        self._values: list[npt.NDArray[np.int64]] = []
        self._histogram = np.zeros(256, dtype=np.int64)

    @property
    def blocks(self) -> int:
        """Blocks added so far."""
        return sum(v.size for v in self._values)

    def add(self, raw: npt.NDArray[np.uint8]) -> None:
        """Add a ``(B, sample_count)`` uint8 array of blocks, in drawing order."""
        if raw.ndim != 2 or raw.shape[1] != self._head[1] or raw.dtype != np.uint8:
            raise QRCoreError(
                f"blocks must be a (B, {self._head[1]}) uint8 array, got {raw.dtype} {raw.shape}"
            )
        self._values.append(np.asarray(self._statistic(raw), dtype=np.int64))
        self._histogram += np.bincount(raw.reshape(-1), minlength=256)

    def finish(
        self,
        *,
        source_type: str,
        source_address: str,
        device_id: str,
        started_at: str,
        finished_at: str,
        duration_s: float,
    ) -> Calibration:
        """The calibration of the blocks added, with its hash.

        Raises:
            QRCoreError: Fewer than 4 blocks (no standard error of the std), or a
                statistic that never varied.
        """
        x = np.concatenate(self._values).astype(np.float64) if self._values else np.empty(0)
        b = x.size
        if b < 4:
            raise QRCoreError(f"a calibration needs at least 4 blocks, got {b}")
        mean = float(x.mean())
        d = x - mean
        m2 = float(d @ d) / b
        if m2 <= 0:
            raise QRCoreError("the statistic took one value in every block: no calibration")
        std = math.sqrt(m2 * b / (b - 1))
        m3 = float(np.mean(d**3))
        m4 = float(np.mean(d**4))
        var_s2 = max(m4 - std**4 * (b - 3) / (b - 1), 0.0) / b
        lag1 = float(d[:-1] @ d[1:]) / float(d @ d)
        total_bytes = int(self._histogram.sum())
        ones = int(self._histogram @ _POPCOUNT)
        amplifier, sample_count, statistic, statistic_bytes = self._head
        content: dict[str, object] = {
            "format_version": CALIBRATION_FORMAT_VERSION,
            "amplifier": amplifier,
            "sample_count": sample_count,
            "statistic": statistic,
            "statistic_bytes": statistic_bytes,
            "blocks": b,
            "mean": mean,
            "mean_se": std / math.sqrt(b),
            "std": std,
            "std_se": math.sqrt(var_s2) / (2.0 * std),
            "mean_std_cov": m3 / (2.0 * std * b),
            "null_mean": float(self._null[0]),
            "null_std": float(self._null[1]),
            "lag1_autocorrelation": lag1,
            "byte_histogram": [int(c) for c in self._histogram],
            "bit_bias": ones / (8 * total_bytes) - 0.5,
            "source_type": source_type,
            "source_address": source_address,
            "device_id": device_id,
            "started_at": started_at,
            "finished_at": finished_at,
            "duration_s": float(duration_s),
        }
        return Calibration.from_dict({**content, "sha256": content_sha256(content)})
