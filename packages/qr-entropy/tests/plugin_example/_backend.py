"""Minimal PEP 517 build backend for the example plugin: builds a pure-Python wheel.

It reads name, version and entry points from pyproject.toml, so the entry
points that pip installs are exactly the ones declared there.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path

_HERE = Path(__file__).parent
_PACKAGE = "my_package"


def _project() -> dict[str, object]:
    with (_HERE / "pyproject.toml").open("rb") as handle:
        project: dict[str, object] = tomllib.load(handle)["project"]
    return project


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, object] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """Write the wheel into ``wheel_directory`` and return its file name."""
    project = _project()
    dist = str(project["name"]).replace("-", "_")
    version = str(project["version"])
    info = f"{dist}-{version}.dist-info"
    groups = project.get("entry-points", {})
    assert isinstance(groups, dict)
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) + "\n"
        for group, items in groups.items()
    )
    files: dict[str, bytes] = {
        f"{_PACKAGE}/{p.name}": p.read_bytes() for p in sorted((_HERE / _PACKAGE).glob("*.py"))
    }
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {version}\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: qr-entropy-test-backend\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = [_record_line(path, data) for path, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    name = f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / name, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return name
