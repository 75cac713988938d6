"""``build_source``: the configured source wrapped in the configured fallback."""

from __future__ import annotations

import logging

from qr_entropy._config import EntropyConfig
from qr_entropy._fallback import FallbackEntropySource
from qr_entropy._mock import MockUniformSource
from qr_entropy._registry import create_source
from qr_entropy._source import EntropySource
from qr_entropy._system import SystemEntropySource

__all__ = ["build_fallback", "build_source"]

logger = logging.getLogger(__name__)


def build_fallback(config: EntropyConfig) -> EntropySource | None:
    """Return the fallback source ``QR_FALLBACK_MODE`` names, or ``None`` for ``error``."""
    if config.fallback_mode == "system":
        return SystemEntropySource()
    if config.fallback_mode == "mock_uniform":
        return MockUniformSource.from_config(config)
    return None


def build_source(config: EntropyConfig) -> FallbackEntropySource:
    """Build the configured primary source, always wrapped in a fallback.

    Args:
        config: Settings; ``entropy_source_type`` picks the primary from the
            registry and ``fallback_mode`` the fallback.

    Returns:
        A :class:`FallbackEntropySource` (its fallback is ``None`` in mode
        ``error``, so failures propagate).

    Raises:
        UnknownSourceError: ``entropy_source_type`` names no source.
        SourceLoadError: The source's plugin fails to load.
    """
    primary = create_source(config)
    logger.info(
        "Entropy source %r (device %r), fallback mode %r",
        primary.name,
        primary.device_id,
        config.fallback_mode,
    )
    return FallbackEntropySource(primary, build_fallback(config))
