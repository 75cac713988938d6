"""Registry of entropy sources: qr-core's one registry mechanism, with qr-entropy's errors.

Built-in sources register with :func:`register_entropy_source` when their
modules are imported (lazily, on the first lookup). Third-party packages
declare an entry point in the group ``qr_sampler.entropy_sources``; it is
loaded only when its name is asked for, so a broken plugin cannot break
anyone who does not use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from qr_core import Registry, RegistryErrors
from qr_entropy._exceptions import RegistryError, SourceLoadError, UnknownSourceError
from qr_entropy._source import EntropySource

if TYPE_CHECKING:
    from qr_entropy._config import EntropyConfig

__all__ = [
    "ENTROPY_SOURCES",
    "ENTRY_POINT_GROUP",
    "available_sources",
    "get_source_class",
    "register_entropy_source",
]

ENTRY_POINT_GROUP = "qr_sampler.entropy_sources"

_SOURCES: Registry[EntropySource] = Registry(
    "entropy source",
    EntropySource,
    ENTRY_POINT_GROUP,
    # Modules whose import registers the built-in sources.
    builtins=(
        "qr_entropy._system",
        "qr_entropy._timing",
        "qr_entropy._mock",
        "qr_entropy._sham",
        "qr_entropy.grpc",
    ),
    errors=RegistryErrors(invalid=RegistryError, unknown=UnknownSourceError, load=SourceLoadError),
    unknown_hint="(QR_ENTROPY_SOURCE_TYPE)",
)

ENTROPY_SOURCES: dict[str, type[EntropySource]] = _SOURCES.classes
"""Registered source classes by name. Prefer :func:`register_entropy_source` to writing here."""

S = TypeVar("S", bound=type[EntropySource])


def register_entropy_source(name: str) -> Callable[[S], S]:
    """Class decorator registering an :class:`EntropySource` under ``name``.

    The decorator gives the class its ``name``: a source that leaves the
    abstract ``name`` property alone states its name once, here. Registering
    the same class twice is harmless; a different class under a taken name is
    an error.

    Args:
        name: Name used in ``QR_ENTROPY_SOURCE_TYPE``.

    Returns:
        The decorator, which returns the class (named).

    Raises:
        RegistryError: ``name`` is empty or taken by another class, or the
            decorated object is not an ``EntropySource`` subclass.
    """
    return _SOURCES.register(name)


def available_sources() -> list[str]:
    """Names of all registered and discoverable sources, sorted.

    Entry points are listed by name without being loaded.
    """
    return _SOURCES.names()


def get_source_class(name: str) -> type[EntropySource]:
    """Return the source class registered or advertised under ``name``.

    Registered names win; otherwise the entry point of that name is loaded
    and its class registered.

    Args:
        name: A source name such as ``"system"``.

    Returns:
        The class.

    Raises:
        UnknownSourceError: No source has that name; the message lists the known names.
        SourceLoadError: The entry point exists but cannot be loaded; the message names it.
    """
    return _SOURCES.get(name)


def create_source(config: EntropyConfig, name: str | None = None) -> EntropySource:
    """Instantiate the source ``name`` (default: ``config.entropy_source_type``) unwrapped.

    Args:
        config: Settings passed to the class's ``from_config``.
        name: Source name overriding ``config.entropy_source_type``.

    Returns:
        The bare source, without a fallback wrapper.
    """
    return get_source_class(name or config.entropy_source_type).from_config(config)
