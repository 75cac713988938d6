"""Provenance of one entropy fetch."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EntropyFetch"]


@dataclass(frozen=True, slots=True)
class EntropyFetch:
    """The bytes of one fetch and where and when they came from.

    All timestamps are wall-clock nanoseconds since the Unix epoch
    (``time.time_ns()``), so records from different processes line up.
    """

    data: bytes
    """The random bytes, exactly as many as were requested."""
    source: str
    """Registry name of the source that produced ``data`` (e.g. ``"system"``)."""
    device_id: str
    """Device or generator that produced ``data``, as the source reports it."""
    sequence_id: int | None
    """Request sequence id for sources that number requests (gRPC), else ``None``."""
    requested_ns: int
    """When the fetch was requested; for a fallback fetch, when the fetch was
    requested of the primary (not when the fallback ran)."""
    generated_ns: int | None
    """When the bytes were generated: the server's timestamp (converted to ns), or
    for local sources the time right after generation; ``None`` when the server
    does not say (its response layout has no timestamp): never invented."""
    received_ns: int
    """When the bytes were in the caller's hands."""
    fallback: bool = False
    """``True`` when a fallback source produced ``data`` because the primary failed."""
    fallback_reason: str | None = None
    """Why the primary failed, when ``fallback`` is ``True``."""
    response_count: int = 1
    """How many server responses the bytes came in (``sequence_id`` is the first's)."""
    read_started_ns: int | None = None
    """When the server's fresh read for these bytes began (``EntropyResponse`` field 5:
    after the request arrived, right before the server called its backend, which first
    discards what the device had buffered); with several responses the earliest.
    ``None`` when the server does not say (local sources, an older server, a response
    layout without the field): never invented."""
    device_bytes_per_second: int | None = None
    """The device's sustained rate in bytes per second as the server measures it
    (``EntropyResponse`` field 6: a self-test at start, then its served reads): the
    entropy budget. ``None`` when the server does not report it."""
