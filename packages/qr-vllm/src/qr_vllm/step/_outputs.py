"""What a step computed: its entropy (:class:`Drawn`) and its choice (:class:`Selected`).

:class:`Selected` holds the tokens, on the logits' device, and the way to the
per-row values the records need (:class:`StepValues`): already in host memory
on the host path, on their way back on the device path (read only after the
tokens are forced). :class:`Drawn` and :class:`StepValues` have the field names
of :func:`qr_core.records.build_token_records`' row protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qr_entropy import EntropyFetch
from qr_vllm.step._ops.transfer import INVALID, Readback

__all__ = ["ArmShare", "Drawn", "Selected", "StepValues"]


@dataclass(frozen=True, slots=True)
class ArmShare:
    """One arm's fetch in a step and the rows it supplied."""

    arm: str | None
    """The experiment arm (``None``: the default source)."""
    fetch: EntropyFetch
    """Its fetch."""
    rows: np.ndarray | None
    """Positions of its rows in the step (int64, ascending); ``None``: every row."""


@dataclass(frozen=True)
class Drawn:
    """A step's entropy and what the amplifiers made of it, on the host."""

    fetched: Sequence[EntropyFetch]
    """The fetch that supplied each row's bytes."""
    raw: np.ndarray
    """All bytes of the step, row after row (see :attr:`StepMetadata.offsets`)."""
    logits_ready_ns: int
    """Wall-clock time when the logits existed (just before the fetch)."""
    u: np.ndarray
    """Uniform value of each row."""
    z_score: np.ndarray
    """z-score of each row."""
    sample_mean: np.ndarray | None
    """Sample mean of each row's bytes; None in a step that builds no records."""
    shares: Sequence[ArmShare] = ()
    """Each arm's fetch and rows, one per arm in the step."""


@dataclass(frozen=True)
class StepValues:
    """The per-row values of one step in host memory, row ``i`` for slot ``i``."""

    temperature: np.ndarray
    """Temperature of each row."""
    shannon_entropy: np.ndarray
    """Shannon entropy of each row (NaN where it was not computed)."""
    token_id: np.ndarray
    """Chosen token id of each row."""
    token_rank: np.ndarray
    """Rank of the token (probability descending, id ascending)."""
    token_prob: np.ndarray
    """Renormalised probability of the token."""
    num_candidates: np.ndarray
    """Tokens left after top-k and top-p."""


@dataclass(frozen=True)
class Selected:
    """What one step selected: the tokens, and how to get its records' values."""

    token: torch.Tensor
    """int64 token ids, on the logits' device."""
    rows_t: torch.Tensor | None
    """The qr rows' indices on the logits' device (None: every row of the logits)."""
    drawn: Drawn
    """The step's entropy and amplification."""
    host: StepValues | None
    """Host path: the per-row values."""
    readback: Readback | None
    """Device path: the same (and the check codes), on their way to the host."""

    def values(self) -> StepValues:
        """The step's per-row values for its records (device path: after forcing).

        Raises:
            qr_core.QRCoreError: An invalid value the device path deferred.
        """
        if self.readback is None:
            assert self.host is not None
            return self.host
        back = self.readback.values()
        temperature, shannon, token, rank, prob, candidates = back[:INVALID]
        return StepValues(
            temperature=temperature,
            shannon_entropy=shannon,
            token_id=token,
            token_rank=rank,
            token_prob=prob,
            num_candidates=candidates,
        )
