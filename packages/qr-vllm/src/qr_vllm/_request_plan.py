"""One configuration object for the adapter and per-request resolution.

:class:`AdapterConfig` composes the entropy settings (owned by qr-entropy),
the sampling settings and the record settings, all read from ``QR_*``
variables. :func:`resolve_request` turns one request's ``extra_args`` into
its effective :class:`RequestPlan`, validated against the same declarations.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from qr_core import Calibration, QRCoreError, SamplingConfig, build_amplifier, load_calibration
from qr_core.records import config_hash
from qr_entropy import ConfigError, EntropyConfig, SourcesSettings, load_sources
from qr_entropy.settings import apply_overrides
from qr_vllm._errors import QRParamsError
from qr_vllm._settings import CORE_FIELDS, RecordSettings, SamplingSettings

__all__ = ["AdapterConfig", "RequestPlan", "resolve_request"]

# Keys that only the environment may set; a request naming one gets a 400.
_FORBIDDEN: frozenset[str] = (
    frozenset(EntropyConfig.model_fields)
    | frozenset(RecordSettings.model_fields)
    | frozenset(SourcesSettings.model_fields)
)


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
    """

    entropy: EntropyConfig
    sampling: SamplingSettings
    records: RecordSettings
    sources: Mapping[str, EntropyConfig] = field(default_factory=dict)
    calibration: Calibration | None = None
    arm_calibrations: Mapping[str, Calibration] = field(default_factory=dict)

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
        """Read all three groups from ``QR_*`` environment variables and ``.env``.

        Raises:
            QRParamsError: A variable holds a value its field does not accept, or
                a calibration is refused (see :func:`_load_calibration`).
        """
        try:
            entropy = EntropyConfig()
            config = cls(entropy, SamplingSettings(), RecordSettings(), load_sources(entropy))
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
            config, calibration=calibration, arm_calibrations=arm_calibrations
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


def calibrated_hash(digest: str, calibration: Calibration | None) -> str:
    """The records' ``config_hash``: the sampling settings' hash, and the calibration's.

    Uncalibrated, this is ``digest`` unchanged; calibrated, a hash of both, so
    that records standardised against different calibrations never share a hash.
    """
    if calibration is None:
        return digest
    return config_hash({"sampling": digest, "calibration_sha256": calibration.sha256})


@dataclass(frozen=True)
class RequestPlan:
    """The effective settings of one request, resolved once at admission.

    Attributes:
        settings: Environment defaults with the request's ``qr_*`` overrides.
        core: The same as a :class:`qr_core.SamplingConfig`.
        config_hash: Hash of ``core`` written into every record.
        request_id: Id of the request in the records (see :func:`new_request_id`).
        group_key: Rows with equal keys (and arms of the same calibration, see
            :class:`~qr_vllm._step.StepSampler`) share an amplifier and a
            temperature strategy, so they are processed as one block.
    """

    settings: SamplingSettings
    core: SamplingConfig
    config_hash: str
    request_id: str
    group_key: tuple[object, ...]

    @property
    def request_tag(self) -> str | None:
        """The request's ``qr_request_tag``, or ``None`` when it gave none."""
        return self.settings.request_tag or None


def resolve_request(
    base: SamplingSettings, extra_args: Mapping[str, object] | None
) -> SamplingSettings:
    """Apply a request's ``qr_*`` keys to ``base`` and validate them.

    Keys without the ``qr_`` prefix belong to other processors and are ignored.

    Args:
        base: The server-wide defaults.
        extra_args: ``SamplingParams.extra_args`` (``"vllm_xargs"`` over HTTP).

    Returns:
        The effective settings (``base`` itself when no ``qr_*`` key is present).

    Raises:
        QRParamsError: A key is unknown or infrastructure-only, or a value is out
            of range; the message names the key and the allowed values.
    """
    if not extra_args:
        return base
    try:
        frozen = tuple(sorted((k, v) for k, v in extra_args.items() if k.startswith("qr_")))
        return _resolve_cached(base, frozen)
    except TypeError:
        # Unhashable values (lists) cannot be cached; validation still runs.
        return _resolve(base, extra_args)


@functools.lru_cache(maxsize=256)
def _resolve_cached(
    base: SamplingSettings, items: tuple[tuple[str, object], ...]
) -> SamplingSettings:
    return _resolve(base, dict(items))


def _resolve(base: SamplingSettings, extra_args: Mapping[str, object]) -> SamplingSettings:
    try:
        return apply_overrides(base, extra_args, prefix="qr_", forbidden=_FORBIDDEN)
    except ConfigError as exc:
        raise QRParamsError(str(exc)) from None


def make_plan(settings: SamplingSettings) -> RequestPlan:
    """Build the :class:`RequestPlan` of a newly admitted request.

    Args:
        settings: The request's effective settings.

    Returns:
        A plan with a fresh request id.
    """
    core, digest, key = _derived(settings)
    return RequestPlan(
        settings=settings,
        core=core,
        config_hash=digest,
        request_id=new_request_id(),
        group_key=key,
    )


@functools.lru_cache(maxsize=256)
def _derived(settings: SamplingSettings) -> tuple[SamplingConfig, str, tuple[object, ...]]:
    core = settings.to_core()
    digest = config_hash(settings.model_dump(include=set(_HASHED)))
    # top_k / top_p are per-row arrays in qr_core.select_tokens, so they do not
    # split groups; everything that shapes the amplifier or the strategy does.
    key = tuple(getattr(core, name) for name in _GROUPED)
    return core, digest, key


# The hash covers exactly the sampling mathematics (qr_core.SamplingConfig).
_HASHED = CORE_FIELDS
_GROUPED = tuple(name for name in _HASHED if name not in ("top_k", "top_p"))


def new_request_id() -> str:
    """Return a fresh id for a request entering the batch.

    vLLM does not hand its own request id to logits processors, so the
    adapter numbers admissions itself; ``qr_request_tag`` lets a client
    find its request in the records.
    """
    return uuid.uuid4().hex[:16]
