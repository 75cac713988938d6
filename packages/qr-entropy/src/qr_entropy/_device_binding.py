"""A calibration bound to its device, its settings, its file and its plan.

* :func:`refuse_other_device`: a calibration describes the device that reported its
  ``device_id`` (and the source type) while its blocks were drawn; ``qr-entropy check``
  and the engine refuse one whose device differs from the one the source reports now.
* :func:`refuse_conflicting_settings`: a calibration fixes the amplifier and the
  sample_count; an explicitly set ``QR_SAMPLE_COUNT`` or ``QR_SIGNAL_AMPLIFIER_TYPE``
  that differs is refused instead of quietly replaced.
* :func:`check_output` and :func:`write_calibration`: ``qr-entropy calibrate`` proves its
  output writable before drawing, never overwrites a file without ``--force``, and
  writes the file whole (a temporary file renamed over it).
* :func:`blocks_for_tokens` and :func:`drawing_estimate`: the blocks the plan asks for
  (``qr_core.analysis.blocks_for_power_loss``) and how long drawing them takes.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from qr_core import Calibration
from qr_core.analysis import blocks_for_power_loss
from qr_entropy._exceptions import ConfigError

__all__ = [
    "blocks_for_tokens",
    "check_output",
    "drawing_estimate",
    "refuse_conflicting_settings",
    "refuse_other_device",
    "write_calibration",
]


def refuse_other_device(
    calibration: Calibration, source_type: str, device_id: str, *, where: str
) -> None:
    """Refuse ``calibration`` for a source that now reports another device.

    Args:
        calibration: The calibration in use.
        source_type: The source's name (``source.name``).
        device_id: The device id the source reports now (after a fetch).
        where: Which setting named the calibration (for the message).

    Raises:
        ConfigError: The device or the source type differs; names both.
    """
    why = calibration.device_mismatch(device_id, source_type)
    if why is not None:
        raise ConfigError(f"{where}: {why}")


def refuse_conflicting_settings(
    calibration: Calibration,
    *,
    explicit: set[str],
    amplifier: str,
    sample_count: int,
    where: str,
) -> None:
    """Refuse explicitly set amplifier settings that differ from the calibration's.

    Args:
        calibration: The calibration in use.
        explicit: The settings given explicitly (``"signal_amplifier_type"``,
            ``"sample_count"``: from the environment or ``.env``).
        amplifier: ``QR_SIGNAL_AMPLIFIER_TYPE``'s value.
        sample_count: ``QR_SAMPLE_COUNT``'s value.
        where: Which setting named the calibration.

    Raises:
        ConfigError: Names the setting, its value and the calibration's.
    """
    if "sample_count" in explicit and sample_count != calibration.sample_count:
        raise ConfigError(
            f"QR_SAMPLE_COUNT={sample_count} conflicts with {where}, measured at "
            f"sample_count={calibration.sample_count}; unset one or calibrate at {sample_count}"
        )
    if "signal_amplifier_type" in explicit and amplifier != calibration.amplifier:
        raise ConfigError(
            f"QR_SIGNAL_AMPLIFIER_TYPE={amplifier!r} conflicts with {where}, measured for "
            f"amplifier {calibration.amplifier!r}; unset one or calibrate {amplifier!r}"
        )


def check_output(path: str | os.PathLike[str], *, force: bool) -> Path:
    """Prove that the calibration file can be written, before any block is drawn.

    Raises:
        ConfigError: The file exists and ``force`` is false, its folder is missing,
            or a file cannot be created there (the message names the path).
    """
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--output {str(target)!r} is a folder; give a file name")
    if target.exists() and not force:
        raise ConfigError(
            f"--output {str(target)!r} exists; refusing to overwrite a calibration "
            "(pass --force, or another file name: calibrate before and after a run into "
            "two files and compare them with qr-analyze drift)"
        )
    folder = target.parent
    if not folder.is_dir():
        raise ConfigError(f"--output {str(target)!r}: folder {str(folder)!r} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", delete=True):
            pass
    except OSError as exc:
        raise ConfigError(f"--output {str(target)!r} cannot be written: {exc}") from None
    return target


def write_calibration(calibration: Calibration, path: str | os.PathLike[str]) -> None:
    """Write the file whole: a temporary file in the same folder, renamed over ``path``."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(calibration.to_json())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def blocks_for_tokens(
    tokens: int,
    *,
    calibrated_arms: int = 1,
    max_power_loss: float = 0.02,
    alpha: float = 0.01,
    power: float = 0.8,
) -> int:
    """B per calibrated arm for an experiment of ``tokens`` per arm planned for ``power``
    at ``alpha``: the calibration costs at most ``max_power_loss`` of it (11.93 T for
    one calibrated arm at the defaults, 23.86 T for two).

    Raises:
        ConfigError: An argument is out of range (the message names it).
    """
    if tokens < 1:
        raise ConfigError(f"--for-tokens must be >= 1, got {tokens}")
    try:
        blocks = blocks_for_power_loss(
            tokens, alpha, power, max_power_loss, calibrated_arms=calibrated_arms
        )
    except ValueError as exc:
        raise ConfigError(f"calibration plan: {exc}") from None
    if not math.isfinite(blocks):
        raise ConfigError(f"--max-power-loss {max_power_loss} leaves no room for a calibration")
    return max(4, math.ceil(blocks))


def drawing_estimate(blocks: int, sample_count: int, bytes_per_second: float) -> str:
    """``"drawing 696,769 blocks x 20,480 bytes = 14.3 GB; at 96.3 MB/s about 2 min 28 s"``."""
    total = blocks * sample_count
    text = f"drawing {blocks:,} blocks x {sample_count:,} bytes = {_size(total)}"
    if not bytes_per_second > 0:
        return text
    return (
        f"{text}; at {bytes_per_second / 1e6:.3g} MB/s about {_duration(total / bytes_per_second)}"
    )


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} bytes"


def _duration(seconds: float) -> str:
    s = round(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{seconds:.1f} s"
