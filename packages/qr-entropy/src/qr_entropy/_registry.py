"""Registry of entropy sources: a dict, a decorator, and entry-point discovery.

Built-in sources register with :func:`register_entropy_source` when their
modules are imported (lazily, on the first lookup). Third-party packages
declare an entry point in the group ``qr_sampler.entropy_sources``; it is
loaded only when its name is asked for, so a broken plugin cannot break
anyone who does not use it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, TypeVar

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

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "qr_sampler.entropy_sources"

ENTROPY_SOURCES: dict[str, type[EntropySource]] = {}
"""Registered source classes by name. Prefer :func:`register_entropy_source` to writing here."""

# Modules whose import registers the built-in sources.
_BUILTIN_MODULES = (
    "qr_entropy._system",
    "qr_entropy._timing",
    "qr_entropy._mock",
    "qr_entropy._sham",
    "qr_entropy.grpc",
)
_builtins_lock = threading.Lock()
_builtins_loaded = False

S = TypeVar("S", bound=type[EntropySource])


def register_entropy_source(name: str) -> Callable[[S], S]:
    """Class decorator registering an :class:`EntropySource` under ``name``.

    Registering the same class twice is harmless; registering a different
    class under a taken name is an error.

    Args:
        name: Name used in ``QR_ENTROPY_SOURCE_TYPE``.

    Returns:
        The decorator, which returns the class unchanged.

    Raises:
        RegistryError: ``name`` is empty or taken by another class, or the
            decorated object is not an ``EntropySource`` subclass.
    """
    if not isinstance(name, str) or not name:
        raise RegistryError(f"source name must be a non-empty string, got {name!r}")

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, EntropySource)):
            raise RegistryError(
                f"@register_entropy_source({name!r}) needs an EntropySource subclass, got {cls!r}"
            )
        existing = ENTROPY_SOURCES.get(name)
        if existing is not None and existing is not cls:
            raise RegistryError(
                f"entropy source name {name!r} is already registered to "
                f"{existing.__module__}.{existing.__qualname__}; "
                f"cannot register {cls.__module__}.{cls.__qualname__}"
            )
        ENTROPY_SOURCES[name] = cls
        return cls

    return decorator


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    with _builtins_lock:
        if not _builtins_loaded:
            for module in _BUILTIN_MODULES:
                importlib.import_module(module)
            _builtins_loaded = True


def _entry_points(name: str | None = None) -> list[EntryPoint]:
    found = entry_points(group=ENTRY_POINT_GROUP)
    return [ep for ep in found if name is None or ep.name == name]


def available_sources() -> list[str]:
    """Names of all registered and discoverable sources, sorted.

    Entry points are listed by name without being loaded.
    """
    _load_builtins()
    return sorted(set(ENTROPY_SOURCES) | {ep.name for ep in _entry_points()})


def _load_entry_point(ep: EntryPoint) -> type[EntropySource]:
    label = f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP!r})"
    try:
        loaded = ep.load()
    except Exception as exc:
        raise SourceLoadError(f"{label} failed to load: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(loaded, type) and issubclass(loaded, EntropySource)):
        raise SourceLoadError(f"{label} is {loaded!r}, not an EntropySource subclass")
    return loaded


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
    _load_builtins()
    cls = ENTROPY_SOURCES.get(name)
    if cls is not None:
        return cls
    candidates = _entry_points(name)
    if not candidates:
        raise UnknownSourceError(
            f"unknown entropy source {name!r} (QR_ENTROPY_SOURCE_TYPE); "
            f"available: {', '.join(available_sources())}"
        )
    if len({ep.value for ep in candidates}) > 1:
        values = ", ".join(repr(ep.value) for ep in candidates)
        raise SourceLoadError(
            f"entry point name {name!r} in group {ENTRY_POINT_GROUP!r} is declared by "
            f"several packages ({values}); uninstall all but one"
        )
    cls = _load_entry_point(candidates[0])
    # The plugin module may have registered itself already (decorator); keep that.
    ENTROPY_SOURCES.setdefault(name, cls)
    logger.info("Loaded entropy source %r from entry point %r", name, candidates[0].value)
    return cls


def create_source(config: EntropyConfig, name: str | None = None) -> EntropySource:
    """Instantiate the source ``name`` (default: ``config.entropy_source_type``) unwrapped.

    Args:
        config: Settings passed to the class's ``from_config``.
        name: Source name overriding ``config.entropy_source_type``.

    Returns:
        The bare source, without a fallback wrapper.
    """
    return get_source_class(name or config.entropy_source_type).from_config(config)
