"""Registry: decorator, lookup errors, and entry-point discovery of installed distributions."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qr_entropy import (
    ENTROPY_SOURCES,
    ENTRY_POINT_GROUP,
    EntropyConfig,
    EntropySource,
    FallbackEntropySource,
    RegistryError,
    SourceLoadError,
    SystemEntropySource,
    UnknownSourceError,
    available_sources,
    build_source,
    get_source_class,
    register_entropy_source,
)

BUILTINS = ["mock_uniform", "quantum_grpc", "sham", "system", "timing_noise"]


@pytest.fixture(autouse=True)
def restore_registry() -> Iterator[None]:
    available_sources()  # built-ins are registered lazily; load them before the snapshot
    saved = dict(ENTROPY_SOURCES)
    yield
    ENTROPY_SOURCES.clear()
    ENTROPY_SOURCES.update(saved)


def _plugin_class(source_name: str) -> type[EntropySource]:
    class Plugin(SystemEntropySource):
        @property
        def name(self) -> str:
            return source_name

    return Plugin


def _install_fake_distribution(
    root: Path, monkeypatch: pytest.MonkeyPatch, module_source: str, entry_points: dict[str, str]
) -> str:
    """Put a module and an installed-distribution record (dist-info) on sys.path."""
    module = f"qr_fake_plugin_{uuid.uuid4().hex[:10]}"
    (root / f"{module}.py").write_text(textwrap.dedent(module_source), encoding="utf-8")
    info = root / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"]
    lines += [f"{name} = {value.format(module=module)}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    return module


def test_builtins_are_available() -> None:
    assert set(BUILTINS) <= set(available_sources())
    assert available_sources() == sorted(available_sources())
    for name in BUILTINS:
        assert get_source_class(name) is ENTROPY_SOURCES[name]


def test_decorator_registers_and_is_idempotent() -> None:
    cls = register_entropy_source("unit_test_source")(_plugin_class("unit_test_source"))
    assert get_source_class("unit_test_source") is cls
    assert register_entropy_source("unit_test_source")(cls) is cls
    assert "unit_test_source" in available_sources()
    assert isinstance(
        build_source(EntropyConfig(entropy_source_type="unit_test_source")).primary, cls
    )


def test_decorator_refuses_a_second_class_under_a_taken_name() -> None:
    with pytest.raises(RegistryError, match=r"'system' is already registered to .*SystemEntropy"):
        register_entropy_source("system")(_plugin_class("system"))
    assert ENTROPY_SOURCES["system"] is SystemEntropySource


@pytest.mark.parametrize("bad", [int, object(), "system"])
def test_decorator_refuses_non_sources(bad: object) -> None:
    with pytest.raises(RegistryError, match="does not derive from EntropySource"):
        register_entropy_source("not_a_source")(bad)  # type: ignore[type-var]


@pytest.mark.parametrize("name", ["", None])
def test_decorator_refuses_empty_names(name: object) -> None:
    with pytest.raises(RegistryError, match="non-empty string"):
        register_entropy_source(name)  # type: ignore[arg-type]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownSourceError) as info:
        build_source(EntropyConfig(entropy_source_type="lava_lamp"))
    message = str(info.value)
    assert "unknown entropy source 'lava_lamp' (QR_ENTROPY_SOURCE_TYPE)" in message
    assert "known: " + ", ".join(available_sources()) in message
    assert isinstance(info.value, ValueError)


def test_entry_point_plugin_is_discovered_without_loading_then_loaded_on_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _install_fake_distribution(
        tmp_path,
        monkeypatch,
        """
        import os
        from qr_entropy import EntropySource

        class Lamp(EntropySource):
            name = "lava_lamp"
            is_available = True
            def get_random_bytes(self, n):
                return os.urandom(n)
            def close(self):
                pass
        """,
        {"lava_lamp": "{module}:Lamp"},
    )
    assert "lava_lamp" in available_sources()
    assert module not in sys.modules  # listing does not import plugins
    source = build_source(EntropyConfig(entropy_source_type="lava_lamp"))
    assert isinstance(source, FallbackEntropySource)
    fetch = source.fetch(24)
    assert (fetch.source, len(fetch.data), fetch.fallback) == ("lava_lamp", 24, False)
    assert ENTROPY_SOURCES["lava_lamp"].__module__ == module


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        ("{module}:Missing", "AttributeError"),
        ("{module}_absent:Lamp", "ModuleNotFoundError"),
        ("{module}:RAISES", "ZeroDivisionError"),
        ("{module}:NOT_A_CLASS", "not a subclass of EntropySource"),
    ],
)
def test_broken_entry_point_error_names_the_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, cause: str
) -> None:
    source = "NOT_A_CLASS = 42\n"
    if "RAISES" in value:
        source = "RAISES = 1 / 0\n"
    module = _install_fake_distribution(tmp_path, monkeypatch, source, {"broken": value})
    assert "broken" in available_sources()  # a broken plugin does not break listing
    with pytest.raises(SourceLoadError) as info:
        build_source(EntropyConfig(entropy_source_type="broken"))
    message = str(info.value)
    assert f"entry point 'broken' = '{value.format(module=module)}'" in message
    assert f"in group '{ENTRY_POINT_GROUP}'" in message
    assert cause in message
    assert "broken" not in ENTROPY_SOURCES
    # Other sources keep working.
    assert build_source(EntropyConfig()).fetch(4).source == "system"


def test_registered_builtin_wins_over_an_entry_point_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_distribution(tmp_path, monkeypatch, "X = 1\n", {"system": "{module}:X"})
    assert get_source_class("system") is SystemEntropySource


def test_quantum_grpc_is_exported_and_registered() -> None:
    import qr_entropy

    assert qr_entropy.QuantumGrpcSource is get_source_class("quantum_grpc")
    assert "QuantumGrpcSource" in qr_entropy.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = qr_entropy.Nope


def test_a_source_states_its_name_once_in_the_decorator() -> None:
    import os

    @register_entropy_source("test_named_once")
    class NamedOnce(EntropySource):
        is_available = True

        def get_random_bytes(self, n: int) -> bytes:
            return os.urandom(n)

        def close(self) -> None:
            pass

    with get_source_class("test_named_once")() as source:
        assert source.name == "test_named_once"
        assert source.fetch(4).source == "test_named_once"
    assert get_source_class("quantum_grpc").name == "quantum_grpc"  # type: ignore[comparison-overlap]
    del ENTROPY_SOURCES["test_named_once"]
