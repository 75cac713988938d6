"""The adapter's whole configuration, read once from the environment.

:class:`AdapterConfig` composes the entropy settings (owned by qr-entropy),
the sampling settings, the record settings and the experiment arms
(``QR_SOURCES``), all read from ``QR_*`` variables, and loads the device
calibrations they name, checked against the sampling defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from qr_core import Calibration, QRCoreError, build_amplifier, load_calibration
from qr_core.records import Preregistration
from qr_entropy import EntropyConfig, load_sources
from qr_vllm._errors import QRParamsError
from qr_vllm._preregistration import load_plan
from qr_vllm._settings import EngineSettings, RecordSettings, SamplingSettings

__all__ = ["AdapterConfig"]


@dataclass(frozen=True)
class AdapterConfig:
    """Everything the adapter reads from the environment.

    Attributes:
        entropy: Entropy source and transport (``QR_ENTROPY_SOURCE_TYPE``, ``QR_GRPC_*``...).
        sampling: Server-wide sampling defaults (``QR_TOP_K``, ``QR_LOG_LEVEL``...).
        records: Record sinks (``QR_RECORD_PATH``, ``QR_DIAGNOSTIC_BUFFER_SIZE``...).
        sources: Experiment arms by name (``QR_SOURCES``), each a complete
            entropy configuration; empty when the engine has one source.
        calibration: The device calibration of ``QR_CALIBRATION_PATH``, or
            ``None``; checked at start against the sampling defaults. Never
            set together with arms: each arm has its own.
        arm_calibrations: The calibration of each arm that sets
            ``calibration_path`` in ``QR_SOURCES`` (an arm absent here is
            uncalibrated), checked at start like ``calibration``.
        preregistration: The pre-registered plan of ``QR_PREREGISTRATION_PATH``, or
            ``None``; loaded and checked at start.
        engine: The metrics endpoint and start-up checks (``QR_METRICS_PORT``...).
    """

    entropy: EntropyConfig
    sampling: SamplingSettings
    records: RecordSettings
    sources: Mapping[str, EntropyConfig] = field(default_factory=dict)
    calibration: Calibration | None = None
    arm_calibrations: Mapping[str, Calibration] = field(default_factory=dict)
    preregistration: Preregistration | None = None
    engine: EngineSettings = field(default_factory=EngineSettings)

    @property
    def calibrations(self) -> dict[str | None, Calibration]:
        """Every calibration by the arm whose rows it standardises (``None``: the
        default source); an uncalibrated arm is absent."""
        found: dict[str | None, Calibration] = dict(self.arm_calibrations.items())
        if self.calibration is not None:
            found[None] = self.calibration
        return found

    @classmethod
    def from_env(cls) -> AdapterConfig:
        """Read every group from ``QR_*`` environment variables and ``.env``.

        Raises:
            QRParamsError: A variable holds a value its field does not accept, a
                calibration is refused (see :func:`_load_calibration`), or the plan of
                ``QR_PREREGISTRATION_PATH`` is missing or invalid.
        """
        try:
            entropy = EntropyConfig()
            config = cls(
                entropy,
                SamplingSettings(),
                RecordSettings(),
                load_sources(entropy),
                engine=EngineSettings(),
            )
        except ValueError as exc:
            raise QRParamsError(f"invalid QR_* environment setting: {exc}") from exc
        path = entropy.calibration_path
        if path and config.sources:
            raise QRParamsError(
                f"QR_CALIBRATION_PATH={path!r} cannot be combined with QR_SOURCES arms "
                f"({', '.join(config.sources)}): a calibration describes one device; put "
                '"calibration_path" into the QR_SOURCES entry of the arm(s) it was measured for'
            )
        arm_calibrations = {
            name: _load_calibration(arm.calibration_path, config, f"QR_SOURCES: arm {name!r}: ")
            for name, arm in config.sources.items()
            if arm.calibration_path
        }
        calibration = _load_calibration(path, config, "") if path else None
        return dataclasses.replace(
            config,
            calibration=calibration,
            arm_calibrations=arm_calibrations,
            preregistration=load_plan(config.records),
        )


def _load_calibration(path: str, config: AdapterConfig, where: str) -> Calibration:
    """Load one calibration file and check it against the sampling defaults.

    Args:
        path: The file.
        config: The adapter configuration (its sampling defaults).
        where: Prefix naming the arm in messages (empty: the top-level source).

    Raises:
        QRParamsError: The file is unreadable or damaged (the message names the
            path), or was measured for another format version, amplifier or sample
            count (the message names both values); it names the variable and arm.
    """
    variable = "calibration_path" if where else "QR_CALIBRATION_PATH"
    try:
        calibration = load_calibration(path)
        build_amplifier(config.sampling.to_core(), calibration)
    except QRCoreError as exc:
        raise QRParamsError(f"{where}{variable}: {exc}") from exc
    return calibration
