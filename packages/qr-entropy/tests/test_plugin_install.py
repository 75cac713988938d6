"""A real third-party package, pip-installed into a fresh virtual environment, adds a source
through the entry-point group ``qr_sampler.entropy_sources``."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent / "plugin_example"

PROBE = """
import json, sys
from qr_entropy import EntropyConfig, QREntropyError, available_sources, build_source
out = {"available": available_sources()}
try:
    with build_source(EntropyConfig()) as source:
        fetch = source.fetch(48)
        out.update(source=fetch.source, length=len(fetch.data), fallback=fetch.fallback,
                   primary=type(source.primary).__module__ + "." + type(source.primary).__name__)
        import my_package.entropy as plugin
    out["disconnected"] = not plugin.my_hardware.connected
except QREntropyError as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Interpreter of a new venv that sees this environment's packages and has the plugin."""
    env_dir = tmp_path_factory.mktemp("plugin-venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # --system-site-packages reaches the base interpreter only; when the tests run in a
    # virtualenv (hatch, /work/venv) its site directories, with their editable-install
    # .pth files, are added explicitly.
    parents = "; ".join(f"site.addsitedir({d!r})" for d in site.getsitepackages())
    Path(purelib, "zz_parent_env.pth").write_text(f"import site; {parents}\n", encoding="utf-8")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
            "--no-index", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
            str(PLUGIN),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=env_dir,
    )  # fmt: skip
    return python


def _probe(python: Path, source_type: str, cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    env["QR_ENTROPY_SOURCE_TYPE"] = source_type
    done = subprocess.run(
        [python, "-c", PROBE], check=True, capture_output=True, text=True, env=env, cwd=cwd
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.slow
def test_installed_plugin_is_built_from_qr_entropy_source_type(
    plugin_python: Path, tmp_path: Path
) -> None:
    result = _probe(plugin_python, "my_source", tmp_path)
    assert result["source"] == "my_source"
    assert result["length"] == 48
    assert result["fallback"] is False
    assert result["primary"] == "my_package.entropy.MyEntropySource"
    assert result["disconnected"] is True  # close() reached the plugin
    available = result["available"]
    assert isinstance(available, list)
    assert {"my_source", "broken_source", "system"} <= set(available)


@pytest.mark.slow
def test_installed_broken_entry_point_names_itself(plugin_python: Path, tmp_path: Path) -> None:
    result = _probe(plugin_python, "broken_source", tmp_path)
    error = result["error"]
    assert isinstance(error, str)
    assert error.startswith("SourceLoadError: entry point 'broken_source' = ")
    assert "'my_package.missing:NoSuchSource'" in error
    assert "ModuleNotFoundError" in error


def test_plugin_is_absent_from_this_environment() -> None:
    # The plugin exists only in the temporary venv; this process never sees it.
    from qr_entropy import available_sources

    assert "my_source" not in available_sources()
