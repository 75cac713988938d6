"""One :class:`~qr_core.records.TokenSamplingRecord` per row of a sampling step.

:class:`Drawn` (entropy and amplification) and :class:`Selected` (the
tokens, and the per-row values in host memory or on their way back) are what
a step computed; :meth:`Selected.values` gives the :class:`StepValues` that
:func:`build_records` turns into records. Kept apart from the hot path
(:mod:`qr_vllm._step`): records are built only when a sink receives them, after
the tokens are forced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qr_core import Calibration
from qr_core.records import TokenSamplingRecord
from qr_entropy import EntropyFetch
from qr_vllm._batch import Slot
from qr_vllm._config import calibrated_hash
from qr_vllm._errors import QRVllmError
from qr_vllm._step_transfer import INVALID, Readback

__all__ = ["Drawn", "Selected", "StepValues", "build_records"]


@dataclass(frozen=True)
class StepValues:
    """The per-row values of one step, in host memory, row ``i`` for slot ``i``."""

    drawn: Drawn
    """The step's entropy and amplification."""
    temperature: np.ndarray
    """Temperature of each row."""
    shannon: np.ndarray
    """Shannon entropy of each row (NaN where it was not computed)."""
    token: np.ndarray
    """Chosen token id of each row."""
    rank: np.ndarray
    """Rank of the token (probability descending, id ascending)."""
    prob: np.ndarray
    """Renormalised probability of the token."""
    candidates: np.ndarray
    """Tokens left after top-k and top-p."""


def build_records(
    values: StepValues,
    slots: Sequence[Slot],
    keep_raw: bool,
    writer_id: str | None = None,
    calibrations: Mapping[str | None, Calibration] | None = None,
) -> list[TokenSamplingRecord]:
    """Build one record per row of the step.

    Args:
        values: The step's per-row values.
        slots: The slot of each row.
        keep_raw: Put each row's raw bytes (hex) into its record.
        writer_id: The process that writes the records.
        calibrations: The calibration each arm's amplifier standardised against
            (``None``: the default source); an arm absent here is uncalibrated.
    """
    cals = calibrations or {}
    bounds = values.drawn.offsets.tolist()
    # Python lists: one conversion per field instead of a numpy scalar per value.
    temperature = values.temperature.tolist()
    shannon = values.shannon.tolist()
    token = values.token.tolist()
    rank = values.rank.tolist()
    prob = values.prob.tolist()
    candidates = values.candidates.tolist()
    if values.drawn.mean is None:
        raise QRVllmError("internal: a recorded step was amplified without its byte means")
    mean = values.drawn.mean.tolist()
    z = values.drawn.z.tolist()
    u = values.drawn.u.tolist()
    records: list[TokenSamplingRecord] = []
    for i, slot in enumerate(slots):
        chunk = values.drawn.raw[bounds[i] : bounds[i + 1]]
        plan = slot.plan
        fetched = values.drawn.fetched[i]
        amplifier, strategy, u_transform = values.drawn.names[i]
        calibration = cals.get(slot.arm) if cals else None
        records.append(
            TokenSamplingRecord(
                request_id=plan.request_id,
                request_tag=plan.request_tag,
                token_index=slot.token_index,
                logits_ready_ns=values.drawn.logits_ready_ns,
                entropy_requested_ns=fetched.requested_ns,
                entropy_generated_ns=fetched.generated_ns,
                entropy_received_ns=fetched.received_ns,
                entropy_source=fetched.source,
                device_id=fetched.device_id,
                sequence_id=fetched.sequence_id,
                fallback=fetched.fallback,
                fallback_reason=fetched.fallback_reason,
                sample_count=int(bounds[i + 1] - bounds[i]),
                raw_sha256=hashlib.sha256(chunk.data).hexdigest(),
                raw_bytes_hex=chunk.tobytes().hex() if keep_raw else None,
                amplifier=amplifier,
                sample_mean=float(mean[i]),
                z_score=float(z[i]),
                u=float(u[i]),
                temperature_strategy=strategy,
                temperature=float(temperature[i]),
                shannon_entropy=float(shannon[i]),
                token_id=int(token[i]),
                token_rank=int(rank[i]),
                token_prob=float(prob[i]),
                num_candidates=int(candidates[i]),
                top_k=plan.core.top_k,
                top_p=plan.core.top_p,
                config_hash=calibrated_hash(plan.config_hash, calibration),
                arm=slot.arm,
                writer_id=writer_id,
                u_transform=u_transform,
                calibration_sha256=None if calibration is None else calibration.sha256,
            )
        )
    return records


@dataclass(frozen=True)
class Drawn:
    """A step's entropy and amplification, on the host."""

    fetched: Sequence[EntropyFetch]
    """The fetch that supplied each row's bytes."""
    raw: np.ndarray
    """All bytes of the step, row after row."""
    offsets: np.ndarray
    """``(B + 1,)`` row boundaries in :attr:`raw`."""
    logits_ready_ns: int
    """Wall-clock time when the logits existed (just before the fetch)."""
    names: Sequence[tuple[str, str, str]]
    """Per row: amplifier, temperature strategy, u transform."""
    mean: np.ndarray | None
    """Sample mean of each row's bytes; None in a step that builds no records."""
    z: np.ndarray
    """z-score of each row."""
    u: np.ndarray
    """Uniform value of each row."""


@dataclass(frozen=True)
class Selected:
    """What one step selected: the tokens, and how to get its records' values."""

    token: torch.Tensor
    """int64 token ids, on the logits' device."""
    drawn: Drawn
    """The step's entropy and amplification."""
    host: tuple[np.ndarray, ...] | None
    """Host path: temperature, entropy, token, rank, probability, candidates."""
    readback: Readback | None
    """Device path: the same (and the check codes), on their way to the host."""
    rows_t: torch.Tensor | None
    """The qr rows' indices on the device (None: every row of the logits)."""

    def values(self) -> StepValues:
        """The step's per-row values for its records (device path: after forcing).

        Raises:
            qr_core.QRCoreError: An invalid value the device path deferred.
        """
        if self.readback is not None:
            back = self.readback.values()
            temperature, shannon, token, rank, prob, candidates = back[:INVALID]
        else:
            assert self.host is not None
            temperature, shannon, token, rank, prob, candidates = self.host
        return StepValues(
            drawn=self.drawn,
            temperature=temperature,
            shannon=shannon,
            token=token,
            rank=rank,
            prob=prob,
            candidates=candidates,
        )
