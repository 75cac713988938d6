"""One registry mechanism: a dict, a decorator and entry-point discovery.

Used by qr-core's amplifier and temperature-strategy registries and by
qr-entropy's source registry. Built-in implementations register with the
decorator when their module is imported (``builtins`` names modules imported on
the first lookup); third-party ones are found through an entry-point group and
loaded only when asked for by name, so a broken plugin cannot break unrelated
lookups. The decorator gives the class its ``name``: a class states its name
once.
"""

from __future__ import annotations

import abc
import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar, cast

from qr_core._errors import QRCoreError

__all__ = ["Registry", "RegistryErrors"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", bound=type)


@dataclass(frozen=True, slots=True)
class RegistryErrors:
    """The exception classes a registry raises (each package keeps its own tree)."""

    invalid: Callable[[str], Exception] = QRCoreError
    """A bad or conflicting registration."""
    unknown: Callable[[str], Exception] = QRCoreError
    """A name nobody registered or advertised."""
    load: Callable[[str], Exception] = QRCoreError
    """An entry point that fails to load or names a wrong class."""


class Registry(Generic[T]):
    """Maps names to classes derived from ``base``.

    ``T`` is the base class; lookups return ``type[T]``.

    Args:
        kind: What the registry holds, used in error messages ("amplifier").
        base: The class every registered class must derive from (``T``).
        group: The entry-point group searched for names not registered directly.
        builtins: Modules whose import registers the built-in classes; imported
            on the first lookup.
        errors: The exception classes to raise.
        unknown_hint: Appended to the unknown-name message (e.g. the setting
            that named it).
    """

    def __init__(
        self,
        kind: str,
        base: type,
        group: str,
        *,
        builtins: Sequence[str] = (),
        errors: RegistryErrors | None = None,
        unknown_hint: str = "",
    ) -> None:
        self._kind = kind
        self._base = base
        self._group = group
        self._builtins = tuple(builtins)
        self._builtins_loaded = not self._builtins
        self._lock = threading.Lock()
        self._errors = errors or RegistryErrors()
        self._hint = unknown_hint
        self.classes: dict[str, type[T]] = {}
        """Registered classes by name (prefer the decorator to writing here)."""

    @property
    def group(self) -> str:
        """The entry-point group of this registry."""
        return self._group

    def register(self, name: str) -> Callable[[S], S]:
        """Return a class decorator that registers the class under ``name``.

        Registering the same class twice is harmless. The decorator sets the
        class attribute ``name`` unless the class defines a concrete ``name``
        of its own (an abstract ``name`` of the base is filled in).

        Raises:
            Exception: ``errors.invalid``, if ``name`` is empty or taken by
                another class, or the class does not derive from ``base``.
        """
        if not isinstance(name, str) or not name:
            raise self._errors.invalid(
                f"{self._kind} name must be a non-empty string, got {name!r}"
            )

        def decorator(cls: S) -> S:
            if not (isinstance(cls, type) and issubclass(cls, self._base)):
                raise self._errors.invalid(
                    f"{self._kind} {name!r}: {cls!r} does not derive from {self._base.__qualname__}"
                )
            existing = self.classes.get(name)
            if existing is not None and existing is not cls:
                raise self._errors.invalid(
                    f"{self._kind} name {name!r} is already registered to "
                    f"{existing.__module__}.{existing.__qualname__}; cannot register "
                    f"{cls.__module__}.{cls.__qualname__}"
                )
            self._name_class(cls, name, rename=True)
            self.classes[name] = cast("type[T]", cls)
            return cls

        return decorator

    @staticmethod
    def _name_class(cls: type, name: str, *, rename: bool) -> None:
        """Set ``cls.name`` where it is missing or abstract (or a string, if ``rename``)."""
        current = getattr(cls, "name", None)
        abstract = getattr(current, "__isabstractmethod__", False)
        if current is None or abstract or (rename and isinstance(current, str)):
            cls.name = name  # type: ignore[attr-defined]  # every base declares name
            abc.update_abstractmethods(cls)

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        with self._lock:
            if not self._builtins_loaded:
                for module in self._builtins:
                    importlib.import_module(module)
                self._builtins_loaded = True

    def names(self) -> list[str]:
        """Sorted names of registered classes and of not-yet-loaded entry points."""
        self._load_builtins()
        found = {ep.name for ep in self._entry_points()}
        return sorted(found | self.classes.keys())

    def get(self, name: str) -> type[T]:
        """Return the class registered as ``name``, loading its entry point if needed.

        Raises:
            Exception: ``errors.unknown`` if the name is unknown (the message
                lists the known names); ``errors.load`` if its entry point fails
                to load, names a wrong class, or is declared by several packages.
        """
        self._load_builtins()
        cls = self.classes.get(name)
        if cls is not None:
            return cls
        candidates = [ep for ep in self._entry_points() if ep.name == name]
        if not candidates:
            hint = f" {self._hint}" if self._hint else ""
            raise self._errors.unknown(
                f"unknown {self._kind} {name!r}{hint}; known: {', '.join(self.names()) or 'none'}"
            )
        if len({ep.value for ep in candidates}) > 1:
            values = ", ".join(repr(ep.value) for ep in candidates)
            raise self._errors.load(
                f"entry point name {name!r} in group {self._group!r} is declared by "
                f"several packages ({values}); uninstall all but one"
            )
        return self._load(candidates[0])

    def _entry_points(self) -> list[EntryPoint]:
        return list(entry_points(group=self._group))

    def _load(self, ep: EntryPoint) -> type[T]:
        label = f"entry point {ep.name!r} = {ep.value!r} in group {self._group!r}"
        try:
            loaded = ep.load()
        except Exception as exc:
            raise self._errors.load(f"{label} failed to load: {type(exc).__name__}: {exc}") from exc
        if not (isinstance(loaded, type) and issubclass(loaded, self._base)):
            raise self._errors.load(
                f"{label} is not a subclass of {self._base.__qualname__}: {loaded!r}"
            )
        logger.info("loaded %s %r from %s", self._kind, ep.name, ep.value)
        # The plugin module may have registered itself (decorator); keep that.
        existing = self.classes.get(ep.name)
        if existing is not None:
            return existing
        self._name_class(loaded, ep.name, rename=False)
        self.classes[ep.name] = cast("type[T]", loaded)
        return self.classes[ep.name]
