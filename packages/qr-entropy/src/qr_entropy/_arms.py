"""Experiment arms: named entropy sources configured once, fetched concurrently.

An experiment with a control arm runs QRNG-driven and control requests side by
side in one engine, so that nothing differs between them but the entropy.
``QR_SOURCES`` names the arms, as a JSON object or the path of a JSON file::

    {"qrng": {"entropy_source_type": "quantum_grpc",
              "grpc_server_address": "unix:///run/qrng.sock"},
     "control": {"entropy_source_type": "system"}}

Each arm's settings are :class:`~qr_entropy.EntropyConfig` fields: the
top-level ``QR_*`` settings with the arm's own values on top, validated by the
same declaration. One field is never inherited: ``calibration_path``. A
calibration describes one device, so an arm is calibrated only by its own
``"calibration_path"`` (``qr-entropy calibrate --arm NAME`` writes one).
:class:`ArmSources` holds the built sources (each wrapped in its own fallback)
and fetches for several arms at once, one thread per arm, so that a slow or
failing arm neither delays nor taints the others.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pydantic import Field, ValidationError

from qr_entropy._build import build_source
from qr_entropy._config import EntropyConfig
from qr_entropy._exceptions import ConfigError, SourceConfigurationError
from qr_entropy._fetch import EntropyFetch
from qr_entropy._probe import ProbeResult
from qr_entropy._registry import get_source_class
from qr_entropy._source import EntropySource
from qr_entropy.settings import QR_SETTINGS_CONFIG, QRSettings, explain_validation, shown

__all__ = [
    "ARM_NAME_PATTERN",
    "ArmSources",
    "SourcesSettings",
    "load_sources",
    "parse_sources",
]

ARM_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Allowed arm names: letters, digits, ``_``, ``.`` and ``-``, at most 64 characters."""

_ENV = "QR_SOURCES"

# Top-level settings an arm never inherits: a calibration describes one device,
# and the top-level one describes QR_ENTROPY_SOURCE_TYPE's, not an arm's.
_NOT_INHERITED = {"calibration_path": ""}


class SourcesSettings(QRSettings):
    """The experiment arms, read from ``QR_SOURCES`` (infrastructure, never per request)."""

    model_config = QR_SETTINGS_CONFIG

    sources: str = Field(
        default="",
        description=(
            "Experiment arms: a JSON object, or the path of a JSON file, mapping arm names "
            "to entropy settings (empty: one source, no arms)."
        ),
    )


def load_sources(base: EntropyConfig) -> dict[str, EntropyConfig]:
    """Read and validate ``QR_SOURCES`` from the environment (and ``.env``).

    Args:
        base: The top-level settings every arm starts from.

    Returns:
        The arms by name; empty when ``QR_SOURCES`` is unset or empty.

    Raises:
        ConfigError: See :func:`parse_sources`.
    """
    return parse_sources(SourcesSettings().sources, base)


def parse_sources(text: str, base: EntropyConfig) -> dict[str, EntropyConfig]:
    """Parse and validate an arm table: JSON text, or the path of a JSON file.

    Args:
        text: ``QR_SOURCES``: a JSON object (it starts with ``{``) or a file path;
            empty or blank means no arms.
        base: The top-level settings; an arm's unset fields take their values.

    Returns:
        The arms by name, in the order given.

    Raises:
        ConfigError: The text is neither a JSON object nor a readable JSON file,
            an object names a key twice (an arm, or a setting of one: JSON
            would keep the last silently), an arm name is not allowed, an arm
            sets an unknown field or a value its field refuses, or names an
            unknown source. The message names ``QR_SOURCES``, the arm and the
            field, and the allowed values.
    """
    if not text.strip():
        return {}
    table = _load_json(text)
    if not isinstance(table, dict):
        raise ConfigError(
            f"{_ENV} must be a JSON object mapping arm names to settings, "
            f"got {type(table).__name__}"
        )
    arms: dict[str, EntropyConfig] = {}
    for name, settings in table.items():
        arms[name] = _arm_config(name, settings, base)
    return arms


def _load_json(text: str) -> object:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        origin, content = f"{_ENV} (JSON text)", stripped
    else:
        path = Path(stripped).expanduser()
        origin = f"{_ENV} file {str(path)!r}"
        try:
            content = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{_ENV}={shown(stripped)} is neither a JSON object (starting with '{{') "
                f"nor a readable file: {exc.strerror or exc}"
            ) from None
    try:
        return json.loads(content, object_pairs_hook=lambda pairs: _unique(origin, pairs))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin} is not valid JSON: {exc}") from None


def _unique(origin: str, pairs: list[tuple[str, object]]) -> dict[str, object]:
    """One JSON object, refused when it names a key twice."""
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise ConfigError(
                f"{origin}: key {key!r} appears twice in one object; JSON would keep only "
                "the last, so give each arm and each setting once"
            )
        found[key] = value
    return found


def _arm_config(name: object, settings: object, base: EntropyConfig) -> EntropyConfig:
    if not isinstance(name, str) or not ARM_NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"{_ENV}: arm name {name!r} is not allowed; allowed: 1-64 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    label = f"{_ENV}: arm {name!r}"
    if not isinstance(settings, dict):
        raise ConfigError(
            f"{label} must map to an object of entropy settings, got {type(settings).__name__}"
        )
    fields = list(EntropyConfig.model_fields)
    unknown = sorted(str(k) for k in settings if k not in fields)
    if unknown:
        raise ConfigError(
            f"{label}: unknown setting(s) {', '.join(repr(k) for k in unknown)}; "
            f"allowed: {', '.join(fields)}"
        )
    try:
        config = EntropyConfig.model_validate({**base.model_dump(), **_NOT_INHERITED, **settings})
    except ValidationError as exc:
        raise ConfigError(f"{label}: " + explain_validation(exc, EntropyConfig, settings)) from None
    try:
        get_source_class(config.entropy_source_type)
    except ConfigError as exc:
        raise ConfigError(f"{label}: entropy_source_type: {exc}") from None
    return config


class ArmSources:
    """The engine's default source and its named arms, built once.

    Each arm is its own :class:`~qr_entropy.FallbackEntropySource`, so a fault
    in one arm falls back for that arm's fetches only and is logged under the
    arm's primary. :meth:`fetch_many` fetches for several arms at the same
    time, one thread per arm.

    Args:
        default: The source of requests that name no arm (``QR_ENTROPY_SOURCE_TYPE``).
        arms: The arm sources by name.
    """

    def __init__(self, default: EntropySource, arms: Mapping[str, EntropySource]) -> None:
        self._default = default
        self._arms = dict(arms)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def build(cls, default: EntropyConfig, arms: Mapping[str, EntropyConfig]) -> ArmSources:
        """Build the default source and every arm, each wrapped in its configured fallback.

        Raises:
            ConfigError: An arm's source cannot be created; the message names the arm.
            SourceLoadError: A source plugin fails to load.
        """
        built: dict[str, EntropySource] = {}
        try:
            for name, config in arms.items():
                try:
                    built[name] = build_source(config)
                except ConfigError as exc:
                    raise ConfigError(f"{_ENV}: arm {name!r}: {exc}") from None
            return cls(build_source(default), built)
        except BaseException:
            for source in built.values():
                source.close()
            raise

    @property
    def default(self) -> EntropySource:
        """The source of requests that name no arm."""
        return self._default

    @property
    def names(self) -> tuple[str, ...]:
        """The arm names, in configuration order."""
        return tuple(self._arms)

    def source(self, arm: str | None) -> EntropySource:
        """The source of ``arm`` (``None``: the default source).

        Raises:
            ConfigError: ``arm`` is not configured; the message lists the names.
        """
        if arm is None:
            return self._default
        found = self._arms.get(arm)
        if found is None:
            configured = ", ".join(self._arms) or "none"
            raise ConfigError(f"unknown arm {arm!r}; configured arms ({_ENV}): {configured}")
        return found

    def fetch_many(self, counts: Mapping[str | None, int]) -> dict[str | None, EntropyFetch]:
        """Fetch ``counts[arm]`` bytes from each arm, concurrently.

        The first arm is fetched in the calling thread and the others each in
        a pool thread, all started at once; every fetch is waited for before
        this returns, so no fetch outlives its step.

        Args:
            counts: Byte count per arm (``None``: the default source).

        Returns:
            Each arm's fetch.

        Raises:
            ConfigError: An arm is not configured.
            EntropyUnavailableError: An arm without a fallback failed (the
                first such error, after every fetch has finished).
        """
        sources = [(arm, self.source(arm), n) for arm, n in counts.items()]
        if len(sources) == 1:
            arm, source, n = sources[0]
            return {arm: source.fetch(n)}
        pool = self._executor()
        futures: list[tuple[str | None, Future[EntropyFetch]]] = [
            (arm, pool.submit(source.fetch, n)) for arm, source, n in sources[1:]
        ]
        results: dict[str | None, EntropyFetch] = {}
        error: BaseException | None = None
        arm, source, n = sources[0]
        try:
            results[arm] = source.fetch(n)
        except BaseException as exc:
            error = exc
        for arm, future in futures:
            try:
                results[arm] = future.result()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error
        # In the order asked for, whatever order the threads finished in.
        return {arm: results[arm] for arm in counts}

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(1, len(self._arms)), thread_name_prefix="qr-arm"
                )
            return self._pool

    def probe(self) -> dict[str | None, ProbeResult]:
        """Probe the default source and every arm (:meth:`EntropySource.probe`), in order.

        Returns:
            Each source's result (``None``: the default source); a transient
            fault is a result with ``reachable=False``.

        Raises:
            SourceConfigurationError: a source's server refuses its configuration;
                the message names the arm (``arm`` is set), the address and the cause.
        """
        results: dict[str | None, ProbeResult] = {}
        for arm, source in ((None, self._default), *self._arms.items()):
            try:
                results[arm] = source.probe()
            except SourceConfigurationError as exc:
                if arm is None:
                    raise
                raise SourceConfigurationError(
                    f"{_ENV}: arm {arm!r}: {exc}", address=exc.address, cause=exc.cause, arm=arm
                ) from exc
        return results

    def health_check(self) -> dict[str, object]:
        """The default source's and every arm's health report."""
        return {
            "default": self._default.health_check(),
            "arms": {name: source.health_check() for name, source in self._arms.items()},
        }

    def close(self) -> None:
        """Close every source and the fetch threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        # Every source is closed even when one fails; the first failure is raised.
        error: BaseException | None = None
        for source in (self._default, *self._arms.values()):
            try:
                source.close()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error
