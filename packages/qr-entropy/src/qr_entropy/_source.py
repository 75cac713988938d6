"""The ``EntropySource`` abstract base class."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import TYPE_CHECKING, Self

from qr_entropy._exceptions import (
    ByteCountError,
    EntropyUnavailableError,
    SourceConfigurationError,
)
from qr_entropy._fetch import EntropyFetch
from qr_entropy._probe import ProbeResult

if TYPE_CHECKING:
    from qr_entropy._config import EntropyConfig

__all__ = ["EntropySource", "check_byte_count"]


def check_byte_count(n: object) -> int:
    """Return ``n`` if it is a positive ``int``, else raise.

    Args:
        n: The requested byte count.

    Returns:
        ``n`` unchanged.

    Raises:
        ByteCountError: ``n`` is not an ``int`` (``bool`` excluded) or ``n <= 0``.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise ByteCountError(f"n must be a positive int, got {type(n).__name__} {n!r}")
    if n <= 0:
        raise ByteCountError(f"n must be a positive int (n >= 1), got n={n}")
    return n


class EntropySource(ABC):
    """A source of random bytes that generates them when asked, never in advance.

    Just-in-time rule: every implementation produces its bytes during the call
    that returns them. No pools, no read-ahead, no caching.

    Subclasses implement :attr:`name`, :attr:`is_available`,
    :meth:`get_random_bytes` and :meth:`close`. Sources that know more about
    their bytes (a device id, a server timestamp) override :meth:`fetch`.
    Sources that need settings override :meth:`from_config`; the default calls
    the class with no arguments.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """Registry name of this source."""

    @property
    @abstractmethod
    def is_available(self) -> bool:
        """Whether the source can currently deliver bytes."""

    @property
    def device_id(self) -> str:
        """Identifier of the generating device recorded in each fetch ("" if unknown)."""
        return ""

    @abstractmethod
    def get_random_bytes(self, n: int) -> bytes:
        """Generate and return exactly ``n`` fresh random bytes.

        Args:
            n: Number of bytes, ``n >= 1``.

        Returns:
            ``n`` bytes generated during this call.

        Raises:
            ByteCountError: ``n`` is not a positive integer.
            EntropyUnavailableError: The source cannot deliver now.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the source's resources. Calling it twice is harmless."""

    def fetch(self, n: int) -> EntropyFetch:
        """Generate ``n`` bytes and record their provenance.

        The default times :meth:`get_random_bytes` with the wall clock and
        checks that exactly ``n`` bytes came back.

        Args:
            n: Number of bytes, ``n >= 1``.

        Returns:
            The bytes with source name, device id and timestamps.

        Raises:
            ByteCountError: ``n`` is not a positive integer.
            EntropyUnavailableError: The source cannot deliver now, or it
                returned a different number of bytes than requested.
        """
        check_byte_count(n)
        requested_ns = time.time_ns()
        # Typed as object: third-party sources are not guaranteed to honour the annotation.
        raw: object = self.get_random_bytes(n)
        received_ns = time.time_ns()
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise EntropyUnavailableError(
                f"source {self.name!r} returned {type(raw).__name__}, expected bytes"
            )
        data = bytes(raw)
        if len(data) != n:
            raise EntropyUnavailableError(
                f"source {self.name!r} returned {len(data)} bytes, expected exactly n={n}"
            )
        return EntropyFetch(
            data=data,
            source=self.name,
            device_id=self.device_id,
            sequence_id=None,
            requested_ns=requested_ns,
            generated_ns=received_ns,
            received_ns=received_ns,
        )

    def probe(self) -> ProbeResult:
        """Check at start-up that the source delivers: fetch one byte (discarded).

        Sources with a server override this to make one call outside their
        circuit breaker. Call it once per source (per arm) before serving.

        Returns:
            ``reachable=True``, or ``reachable=False`` with ``detail`` for a
            transient fault (a server that is down, a deadline): the caller
            starts with a warning, or refuses if its settings ask it to.

        Raises:
            SourceConfigurationError: a configuration-class failure (wrong API
                key, CA, host name, method, layout); its message names the
                address and the cause.
        """
        start = time.perf_counter()
        try:
            fetch = self.fetch(1)
        except SourceConfigurationError:
            raise
        except EntropyUnavailableError as exc:
            return ProbeResult(self.name, False, detail=str(exc))
        return ProbeResult(
            self.name,
            True,
            device_id=fetch.device_id,
            device_bytes_per_second=fetch.device_bytes_per_second,
            latency_s=time.perf_counter() - start,
        )

    def health_check(self) -> dict[str, object]:
        """Report the source's state; never contains secrets.

        Returns:
            At least ``{"source": name, "healthy": is_available}``.
        """
        return {"source": self.name, "healthy": self.is_available}

    @classmethod
    def from_config(cls, config: EntropyConfig) -> EntropySource:
        """Build the source from settings.

        The default ignores ``config`` and calls ``cls()``, so plugins with a
        no-argument constructor work unchanged.

        Args:
            config: The process's entropy settings.

        Returns:
            A ready source.
        """
        del config
        return cls()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
