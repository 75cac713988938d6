"""Per-request resolution: a request's ``qr_*`` keys become its :class:`RequestPlan`.

:func:`resolve_request` applies one request's ``extra_args`` to the server-wide
:class:`~qr_vllm.SamplingSettings`, validated against the same declarations;
:func:`make_plan` turns the result into the plan the step reads (settings, their
:class:`qr_core.SamplingConfig`, the records' hash, a request id and the key
that groups rows). :func:`calibrated_hash` is the records' ``config_hash`` of a
row whose amplifier standardised against a device calibration.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from qr_core import Calibration, SamplingConfig
from qr_core.records import config_hash
from qr_entropy import ConfigError, EntropyConfig, SourcesSettings
from qr_entropy.settings import apply_overrides
from qr_vllm._errors import QRParamsError
from qr_vllm._settings import CORE_FIELDS, EngineSettings, RecordSettings, SamplingSettings

__all__ = [
    "ARM_KEY",
    "RequestPlan",
    "calibrated_hash",
    "make_plan",
    "new_request_id",
    "resolve_request",
]

ARM_KEY = "qr_entropy_source"
"""Per-request key naming the experiment arm (a ``QR_SOURCES`` name) of a request.

Resolved apart from the sampling settings (see ``qr_vllm._batch.arm_for_params``),
but one of the allowed keys an unknown key's error lists."""

# Keys that only the environment may set; a request naming one gets a 400.
_FORBIDDEN: frozenset[str] = (
    frozenset(EntropyConfig.model_fields)
    | frozenset(RecordSettings.model_fields)
    | frozenset(SourcesSettings.model_fields)
    | frozenset(EngineSettings.model_fields)
)


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
            :class:`~qr_vllm.step.StepSampler`) share an amplifier and a
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

    Keys without the ``qr_`` prefix belong to other processors and are ignored,
    and so is the arm key ``qr_entropy_source`` (:data:`ARM_KEY`), which the
    processor resolves against ``QR_SOURCES`` itself.

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
        return apply_overrides(
            base, extra_args, prefix="qr_", forbidden=_FORBIDDEN, also_allowed=(ARM_KEY,)
        )
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
