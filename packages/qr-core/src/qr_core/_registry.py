"""One registry mechanism: a dict, a decorator and entry-point discovery.

Built-in implementations register with the decorator when their module is
imported; third-party ones are found through an entry-point group and loaded only
when asked for by name, so a broken plugin cannot break unrelated lookups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar, cast

from qr_core._errors import QRCoreError

__all__ = ["Registry"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", bound=type)


class Registry(Generic[T]):
    """Maps names to classes derived from ``base``.

    ``T`` is the base class; lookups return ``type[T]``.

    Args:
        kind: What the registry holds, used in error messages ("amplifier").
        base: The class every registered class must derive from (``T``).
        group: The entry-point group searched for names not registered directly.
    """

    def __init__(self, kind: str, base: type, group: str) -> None:
        self._kind = kind
        self._base = base
        self._group = group
        self._classes: dict[str, type[T]] = {}

    @property
    def group(self) -> str:
        """The entry-point group of this registry."""
        return self._group

    def register(self, name: str) -> Callable[[S], S]:
        """Return a class decorator that registers the class under ``name``.

        The decorator also sets the class attribute ``name``.

        Raises:
            QRCoreError: If ``name`` is empty or already taken by another class.
        """
        if not name:
            raise QRCoreError(f"{self._kind} name must be a non-empty string")

        def decorator(cls: S) -> S:
            if not issubclass(cls, self._base):
                raise QRCoreError(
                    f"{self._kind} {name!r}: {cls.__qualname__} does not derive from "
                    f"{self._base.__qualname__}"
                )
            existing = self._classes.get(name)
            if existing is not None and existing is not cls:
                raise QRCoreError(
                    f"{self._kind} name {name!r} is already registered to {existing.__qualname__}"
                )
            cls.name = name  # type: ignore[attr-defined]  # every base declares ClassVar name
            self._classes[name] = cast("type[T]", cls)
            return cls

        return decorator

    def names(self) -> list[str]:
        """Sorted names of registered classes and of not-yet-loaded entry points."""
        found = {ep.name for ep in self._entry_points()}
        return sorted(found | self._classes.keys())

    def get(self, name: str) -> type[T]:
        """Return the class registered as ``name``, loading its entry point if needed.

        Raises:
            QRCoreError: If the name is unknown (the message lists the known names)
                or its entry point fails to load or names a wrong class.
        """
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        for ep in self._entry_points():
            if ep.name == name:
                return self._load(ep)
        raise QRCoreError(
            f"unknown {self._kind} {name!r}; known: {', '.join(self.names()) or 'none'}"
        )

    def _entry_points(self) -> list[EntryPoint]:
        return list(entry_points(group=self._group))

    def _load(self, ep: EntryPoint) -> type[T]:
        label = f"entry point {ep.name!r} = {ep.value!r} in group {self._group!r}"
        try:
            loaded = ep.load()
        except Exception as exc:
            raise QRCoreError(f"{label} failed to load: {exc!r}") from exc
        if not (isinstance(loaded, type) and issubclass(loaded, self._base)):
            raise QRCoreError(f"{label} is not a subclass of {self._base.__qualname__}")
        logger.debug("loaded %s %r from %s", self._kind, ep.name, ep.value)
        cls = cast("type[T]", loaded)
        if not getattr(cls, "name", None):
            cls.name = ep.name  # type: ignore[attr-defined]  # every base declares ClassVar name
        self._classes[ep.name] = cls
        return cls
