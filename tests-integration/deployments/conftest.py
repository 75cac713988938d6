"""Shared fixtures for the deployment-profile tests.

Profiles are the folders of ``deployments/`` that hold a ``docker-compose.yml``;
any test that takes a ``profile`` argument runs once per profile, so a new
profile is checked without touching the tests.

The list of settings is never copied here: it is read at test time from the
pydantic-settings classes that the packages export (``model_fields``), so a
setting added to the code but missing from the profiles fails the tests.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
DOCKER_DIR = DEPLOYMENTS / "docker"
PROFILES = sorted(p for p in DEPLOYMENTS.iterdir() if (p / "docker-compose.yml").is_file())

_ASSIGNMENT = re.compile(r"^(?P<comment>#\s*)?(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@dataclass(frozen=True)
class EnvLine:
    """One ``KEY=value`` line of an ``.env.example``.

    ``active`` is False for a commented line (``# KEY=value``), which documents
    a setting and its default without setting it.
    """

    key: str
    value: str
    active: bool
    lineno: int


@dataclass(frozen=True)
class Setting:
    """A configuration field and the environment variable that sets it."""

    env_name: str
    field: str
    settings_class: type[BaseSettings]


def parse_env_file(path: Path) -> list[EnvLine]:
    """Return the assignment lines of an env file; prose comments are skipped."""
    lines: list[EnvLine] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _ASSIGNMENT.match(raw.strip())
        if match is None:
            continue
        lines.append(
            EnvLine(
                key=match["key"],
                value=match["value"],
                active=match["comment"] is None,
                lineno=lineno,
            )
        )
    return lines


def settings_classes() -> list[type[BaseSettings]]:
    """Every pydantic-settings class exported by ``qr_entropy`` and ``qr_vllm``."""
    import qr_entropy
    import qr_vllm

    found: list[type[BaseSettings]] = []
    for module in (qr_entropy, qr_vllm):
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj not in found:
                found.append(obj)
    assert qr_entropy.EntropyConfig in found, "qr_entropy must export EntropyConfig"
    assert any(c.__module__.startswith("qr_vllm") for c in found), (
        "qr_vllm exports no pydantic-settings class; the sampling/record settings "
        "must be public (listed in qr_vllm.__all__)"
    )
    return found


def settings_index() -> dict[str, Setting]:
    """Map each environment variable name (``QR_...``) to its field."""
    index: dict[str, Setting] = {}
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field in cls.model_fields:
            env_name = f"{prefix}{field}".upper()
            assert env_name not in index, (
                f"{env_name} is declared by both {index[env_name].settings_class.__name__} "
                f"and {cls.__name__}"
            )
            index[env_name] = Setting(env_name=env_name, field=field, settings_class=cls)
    return index


def vllm_env_names() -> frozenset[str]:
    """The environment variables vLLM reads, from ``vllm/envs.py`` without importing vLLM.

    Importing ``vllm.envs`` pulls in torch (seconds); the names are the string
    keys of the ``environment_variables`` dict in that file.
    """
    spec = importlib.util.find_spec("vllm")
    assert spec is not None, "vLLM is not installed"
    assert spec.submodule_search_locations, "vLLM is not a package"
    source = Path(next(iter(spec.submodule_search_locations))) / "envs.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if (
            isinstance(target, ast.Name)
            and target.id == "environment_variables"
            and isinstance(value, ast.Dict)
        ):
            return frozenset(
                k.value
                for k in value.keys
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            )
    raise AssertionError(f"no environment_variables dict in {source}")


def load_compose(profile: Path) -> dict[str, Any]:
    """Parse a profile's ``docker-compose.yml``."""
    data = yaml.safe_load((profile / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{profile.name}/docker-compose.yml is not a mapping"
    return data


def dockerfile_of(service: dict[str, Any], profile: Path) -> Path | None:
    """The Dockerfile a compose service builds from, or None for a pulled image."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return (profile / build / "Dockerfile").resolve()
    context = (profile / build.get("context", ".")).resolve()
    return (context / build.get("dockerfile", "Dockerfile")).resolve()


def services_built_from(compose: dict[str, Any], profile: Path, name: str) -> dict[str, Any]:
    """Services of ``compose`` built from ``deployments/docker/<name>``."""
    target = (DOCKER_DIR / name).resolve()
    return {
        svc_name: svc
        for svc_name, svc in compose["services"].items()
        if dockerfile_of(svc, profile) == target
    }


def env_file_values(profile: Path) -> dict[str, str]:
    """The active ``KEY=value`` lines of a profile's ``.env.example``."""
    return {
        line.key: line.value for line in parse_env_file(profile / ".env.example") if line.active
    }


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``profile`` once per deployment profile."""
    if "profile" in metafunc.fixturenames:
        metafunc.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])


@pytest.fixture
def clean_qr_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A monkeypatch with every ``QR_*`` variable of the test process removed."""
    for key in list(os.environ):
        if key.startswith("QR_"):
            monkeypatch.delenv(key)
    return monkeypatch


class Deploy:
    """Paths and helpers for test modules, which cannot import ``conftest``."""

    root = ROOT
    deployments = DEPLOYMENTS
    docker_dir = DOCKER_DIR
    profiles = PROFILES
    parse_env_file = staticmethod(parse_env_file)
    settings_classes = staticmethod(settings_classes)
    settings_index = staticmethod(settings_index)
    vllm_env_names = staticmethod(vllm_env_names)
    load_compose = staticmethod(load_compose)
    dockerfile_of = staticmethod(dockerfile_of)
    services_built_from = staticmethod(services_built_from)
    env_file_values = staticmethod(env_file_values)


@pytest.fixture(scope="session")
def deploy() -> type[Deploy]:
    """The :class:`Deploy` helpers."""
    return Deploy
