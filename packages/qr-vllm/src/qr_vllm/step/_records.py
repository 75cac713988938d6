"""One :class:`~qr_core.records.TokenSamplingRecord` per row of a sampling step.

The step's arrays (:class:`~qr_vllm.step._outputs.Drawn`,
:class:`~qr_vllm.step._outputs.StepValues` and the metadata's top-k, top-p and
byte offsets) go to qr-core's one record builder,
:func:`qr_core.records.build_token_records`, with what only the adapter knows:
each row's request, arm and calibration, and the names of its group's
components. Built only when a sink receives them, after the tokens are forced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qr_core import Calibration
from qr_core.records import TokenSamplingRecord, build_token_records
from qr_vllm._errors import QRVllmError
from qr_vllm._preregistration import registered_hash
from qr_vllm._request_plan import calibrated_hash
from qr_vllm.step._groups import Group
from qr_vllm.step._metadata import StepMetadata
from qr_vllm.step._outputs import Drawn, StepValues

__all__ = ["step_records"]


def step_records(
    meta: StepMetadata,
    drawn: Drawn,
    values: StepValues,
    *,
    keep_raw: bool,
    writer_id: str | None = None,
    calibrations: Mapping[str | None, Calibration] | None = None,
    preregistration_sha256: str | None = None,
) -> list[TokenSamplingRecord]:
    """Build one record per row of the step.

    Args:
        meta: The step's rows, groups and per-row arrays.
        drawn: The step's entropy and amplification.
        values: The step's per-row temperatures and selections, in host memory.
        keep_raw: Put each row's raw bytes (hex) into its record.
        writer_id: The process that writes the records.
        calibrations: The calibration each arm's amplifier standardised against
            (``None``: the default source); an arm absent here is uncalibrated.
        preregistration_sha256: The pre-registered plan's hash: into every record,
            and folded into its config hash (``None``: not pre-registered).
    """
    if drawn.sample_mean is None:
        raise QRVllmError("internal: a recorded step was amplified without its byte means")
    slots = meta.slots
    plans = [s.plan for s in slots]
    if calibrations:
        calibration = [calibrations.get(s.arm) for s in slots]
        config_hash = [
            calibrated_hash(p.config_hash, c) for p, c in zip(plans, calibration, strict=True)
        ]
        # Each row's calibration: its hash and the figures the analysis needs.
        figures: list[Calibration | None] | None = calibration
    else:  # no calibrated arm: the sampling settings' hash alone
        config_hash = [p.config_hash for p in plans]
        figures = None
    if preregistration_sha256 is not None:
        config_hash = [registered_hash(h, preregistration_sha256) for h in config_hash]
    amplifier, strategy, u_transform = _component_names(meta.groups, len(slots))
    return build_token_records(
        drawn,
        values,
        values,
        request_id=[p.request_id for p in plans],
        token_index=[s.token_index for s in slots],
        logits_ready_ns=drawn.logits_ready_ns,
        fetch=drawn.fetched,
        raw=drawn.raw,
        offsets=meta.offsets,
        keep_raw=keep_raw,
        amplifier=amplifier,
        temperature_strategy=strategy,
        u_transform=u_transform,
        top_k=meta.top_k,
        top_p=meta.top_p,
        config_hash=config_hash,
        request_tag=[p.request_tag for p in plans],
        arm=[s.arm for s in slots],
        calibration=figures,
        writer_id=writer_id,
        preregistration_sha256=preregistration_sha256,
    )


def _component_names(
    groups: Sequence[Group], n: int
) -> tuple[str | list[str], str | list[str], str | list[str]]:
    """Amplifier, temperature strategy and u transform: one each, or one per row."""
    if len(groups) == 1:
        return _names(groups[0])
    amplifier, strategy, u_transform = [""] * n, [""] * n, [""] * n
    for group in groups:
        a, s, t = _names(group)
        for p in group.positions.tolist():
            amplifier[p], strategy[p], u_transform[p] = a, s, t
    return amplifier, strategy, u_transform


def _names(group: Group) -> tuple[str, str, str]:
    return str(group.amplifier.name), str(group.strategy.name), group.amplifier.u_transform
