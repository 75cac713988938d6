"""What the record builder reads: the per-row results of a sampling step, as protocols.

qr-core's own result types (``BatchAmplificationResult``, ``BatchTemperatureResult``,
``BatchSelectionResult``, ``Calibration``) and qr-entropy's ``EntropyFetch`` satisfy
them; a host may pass any object with these attributes.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = [
    "AmplifiedRows",
    "CalibrationFigures",
    "EntropyOrigin",
    "SelectedRows",
    "TemperedRows",
]


class EntropyOrigin(Protocol):
    """Where and when one fetch's bytes came from (``qr_entropy.EntropyFetch`` is one).

    An origin may also have ``read_started_ns`` (``int | None``: when the server's
    fresh read began); the builder records it as ``entropy_read_started_ns``, and
    ``None`` for an origin without it, so hosts written before it still work.
    """

    @property
    def source(self) -> str:
        """Name of the source that delivered the bytes."""

    @property
    def device_id(self) -> str:
        """Device id the source reported (empty when it has none)."""

    @property
    def sequence_id(self) -> int | None:
        """The transport's sequence id, when it has one."""

    @property
    def requested_ns(self) -> int:
        """When the bytes were asked for (wall clock, ns)."""

    @property
    def generated_ns(self) -> int | None:
        """When the source made them; ``None`` when it does not say."""

    @property
    def received_ns(self) -> int:
        """When they arrived."""

    @property
    def fallback(self) -> bool:
        """Whether the fallback source delivered them."""

    @property
    def fallback_reason(self) -> str | None:
        """Why, when it did."""


class CalibrationFigures(Protocol):
    """The figures of a device calibration a record carries (``qr_core.Calibration`` is one)."""

    @property
    def sha256(self) -> str:
        """Its content hash."""

    @property
    def blocks(self) -> int:
        """B, the blocks it was measured from."""

    @property
    def mean(self) -> float:
        """Calibrated mean of the statistic S."""

    @property
    def std(self) -> float:
        """Calibrated standard deviation of S."""

    @property
    def mean_se(self) -> float:
        """Standard error of ``mean``."""

    @property
    def std_se(self) -> float:
        """Standard error of ``std``."""

    @property
    def mean_std_cov(self) -> float:
        """Covariance of ``mean`` and ``std``."""


class AmplifiedRows(Protocol):
    """Per-row amplifier output (``qr_core.BatchAmplificationResult`` is one)."""

    @property
    def u(self) -> Any:
        """``(B,)`` uniform values."""

    @property
    def z_score(self) -> Any:
        """``(B,)`` z-scores."""

    @property
    def sample_mean(self) -> Any:
        """``(B,)`` byte means; records cannot be built where this is ``None``."""


class TemperedRows(Protocol):
    """Per-row temperatures (``qr_core.BatchTemperatureResult`` is one)."""

    @property
    def temperature(self) -> Any:
        """``(B,)`` temperatures."""

    @property
    def shannon_entropy(self) -> Any:
        """``(B,)`` Shannon entropies (nats; NaN where not computed)."""


class SelectedRows(Protocol):
    """Per-row selections (``qr_core.BatchSelectionResult`` is one)."""

    @property
    def token_id(self) -> Any:
        """``(B,)`` chosen token ids."""

    @property
    def token_rank(self) -> Any:
        """``(B,)`` their ranks."""

    @property
    def token_prob(self) -> Any:
        """``(B,)`` their renormalised probabilities."""

    @property
    def num_candidates(self) -> Any:
        """``(B,)`` tokens left after top-k and top-p."""
