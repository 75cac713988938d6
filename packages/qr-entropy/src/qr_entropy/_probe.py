"""What a start-up probe of a source found (:meth:`EntropySource.probe`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProbeResult"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: the source answered, or why not (a transient fault).

    A configuration-class failure is never a result: the probe raises
    :class:`~qr_entropy.SourceConfigurationError` instead.
    """

    source: str
    """Registry name of the probed source."""
    reachable: bool
    """The source delivered the probe's bytes."""
    address: str = ""
    """The server's address; "" for a source without one."""
    detail: str = ""
    """Why it is not reachable (the server is down, a deadline); "" when it is."""
    device_id: str = ""
    """The device id the source reported; "" when unknown."""
    device_bytes_per_second: int | None = None
    """The device's rate as its server measures it; ``None`` when not reported."""
    latency_s: float | None = None
    """How long the probe took, when it succeeded."""
