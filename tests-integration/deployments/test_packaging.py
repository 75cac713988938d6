"""The four distributions build, pass ``twine check`` and install alone.

Each package is built to an sdist and a wheel the way ``hatch run
release:build`` does (``python -m build``: the wheel is built from the sdist);
the build runs without isolation in one small build venv (hatchling + build),
which saves eight throw-away build environments.

The wheels are then installed into ONE fresh virtual environment
(``python -m venv``, no system site packages). Each package's complete
dependency closure is resolved on its own first (``pip install --dry-run
--ignore-installed --report``), so what each one pulls in is known exactly
although the environment is shared. Siblings come from the freshly built wheels
(``--find-links``), never from an index.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PACKAGES = {
    "qr-core": "qr_core",
    "qr-entropy": "qr_entropy",
    "qr-vllm": "qr_vllm",
    "qr-entropy-server": "qr_entropy_server",
}
HEAVY = {"numpy", "pydantic", "pydantic-core", "pydantic-settings", "torch", "vllm"}

pytestmark = pytest.mark.slow


def _command(*args: str | Path) -> list[str]:
    return [str(a) for a in args]


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(_command(*args), capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _venv(path: Path) -> Path:
    _run(sys.executable, "-m", "venv", path)
    assert "include-system-site-packages = false" in (path / "pyvenv.cfg").read_text()
    return path / "bin" / "python"


def _version(deploy: Any, dist: str) -> str:
    about = deploy.root / "packages" / dist / "src" / PACKAGES[dist] / "__about__.py"
    match = re.search(r'^__version__ = "([^"]+)"$', about.read_text(), re.MULTILINE)
    assert match, f"{about} declares no __version__"
    return match[1]


def _wheel(dist_dir: Path, dist: str) -> Path:
    wheels = list(dist_dir.glob(f"{dist.replace('-', '_')}-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def dist_dir(deploy: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("release")
    python = _venv(base / "build-venv")
    _run(python, "-m", "pip", "install", "--quiet", "build", "hatchling>=1.27")
    out = base / "dist"
    for dist in PACKAGES:
        package = deploy.root / "packages" / dist
        _run(python, "-m", "build", "--no-isolation", "--outdir", out, package)
    return out


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("fresh") / "venv")


@pytest.fixture(scope="module")
def closures(dist_dir: Path, fresh_python: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """For each package, everything it would install into an empty environment."""
    running = {}
    for dist in PACKAGES:
        report = dist_dir.parent / f"{dist}-report.json"
        command = _command(
            fresh_python, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--find-links", dist_dir, "--report", report, _wheel(dist_dir, dist),
        )  # fmt: skip
        # Resolution waits on the network, not the CPU: run the four at once.
        running[dist] = (report, subprocess.Popen(command, stderr=subprocess.PIPE, text=True))
    found = {}
    for dist, (report, process) in running.items():
        _, stderr = process.communicate()
        assert process.returncode == 0, f"resolving {dist} failed:\n{stderr}"
        items = json.loads(report.read_text())["install"]
        found[dist] = {canonicalize_name(i["metadata"]["name"]): i for i in items}
    return found


@pytest.fixture(scope="module")
def installed_python(dist_dir: Path, fresh_python: Path) -> Path:
    wheels = [_wheel(dist_dir, dist) for dist in PACKAGES]
    _run(fresh_python, "-m", "pip", "install", "--quiet", "--find-links", dist_dir, *wheels)
    _run(fresh_python, "-m", "pip", "check")
    return fresh_python


def test_release_script_builds_every_package(deploy: Any) -> None:
    config = tomllib.loads((deploy.root / "hatch.toml").read_text())
    build = config["envs"]["release"]["scripts"]["build"]
    packages = (deploy.root / "packages").iterdir()
    on_disk = {p.name for p in packages if (p / "pyproject.toml").exists()}
    built = set(re.findall(r"--outdir dist packages/([\w-]+)", " ".join(build)))
    assert built == on_disk
    assert build[-1] == "check"
    assert "twine check --strict" in config["envs"]["release"]["scripts"]["check"]


def test_each_package_builds_sdist_and_wheel_at_its_declared_version(
    deploy: Any, dist_dir: Path
) -> None:
    for dist, module in PACKAGES.items():
        stem = f"{dist.replace('-', '_')}-{_version(deploy, dist)}"
        sdist = dist_dir / f"{stem}.tar.gz"
        wheel = dist_dir / f"{stem}-py3-none-any.whl"
        assert sdist.is_file(), f"no sdist {sdist.name}"
        assert wheel.is_file(), f"no wheel {wheel.name}"
        with tarfile.open(sdist) as tar:
            names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        assert {"LICENSE", "README.md", "pyproject.toml", f"src/{module}/py.typed"} <= names
        with zipfile.ZipFile(wheel) as archive:
            assert f"{module}/py.typed" in archive.namelist()


def test_twine_check_passes(dist_dir: Path) -> None:
    files = sorted(dist_dir.iterdir())
    assert len(files) == 2 * len(PACKAGES)
    result = _run(sys.executable, "-m", "twine", "check", "--strict", *files)
    assert result.stdout.count("PASSED") == len(files)


def test_sibling_dependencies_are_compatible_ranges(deploy: Any, dist_dir: Path) -> None:
    checked = 0
    for dist in PACKAGES:
        with zipfile.ZipFile(_wheel(dist_dir, dist)) as archive:
            meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = Parser().parsestr(archive.read(meta_name).decode())
        for line in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            sibling = canonicalize_name(requirement.name)
            if sibling not in PACKAGES:
                continue
            current = Version(_version(deploy, sibling))
            lower = [s for s in requirement.specifier if s.operator == ">="]
            upper = [s for s in requirement.specifier if s.operator == "<"]
            assert len(lower) == 1, f"{dist} -> {line}: needs one lower bound"
            assert len(upper) == 1, f"{dist} -> {line}: needs one upper bound"
            assert requirement.specifier.contains(current), f"{dist} -> {line} excludes {current}"
            # Compatible: below the next minor release while 0.x, else the next major.
            ceiling = Version(upper[0].version)
            expected = f"0.{current.minor + 1}" if current.major == 0 else f"{current.major + 1}"
            assert ceiling == Version(expected), f"{dist} -> {line}: ceiling should be {expected}"
            checked += 1
    assert checked >= 3, "qr-entropy and qr-vllm should depend on their siblings"


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_dependency_closure(
    dist: str, dist_dir: Path, closures: dict[str, dict[str, dict[str, Any]]]
) -> None:
    closure = closures[dist]
    assert dist in closure
    for name, item in closure.items():
        if name in PACKAGES:
            url = item["download_info"]["url"]
            assert url.startswith("file:"), f"{name} would come from {url}"
            assert dist_dir.name in url, f"{name} would come from {url}"
    names = set(closure)
    if dist == "qr-core":
        assert names == {"qr-core", "numpy", "array-api-compat"}
    elif dist == "qr-entropy-server":
        assert not names & HEAVY, f"qr-entropy-server pulls {sorted(names & HEAVY)}"
        assert {"grpcio", "protobuf", "grpcio-health-checking"} <= names
    else:
        # The adapter installs next to the host's own vLLM build and never pulls one.
        assert not names & {"torch", "vllm"}, f"{dist} pulls {sorted(names & {'torch', 'vllm'})}"


@pytest.mark.parametrize("dist", ["qr-core", "qr-entropy", "qr-entropy-server"])
def test_wheel_imports_from_the_fresh_venv(
    dist: str, dist_dir: Path, installed_python: Path
) -> None:
    module = PACKAGES[dist]
    probe = f"import {module}; print({module}.__file__); print({module}.__version__)"
    # -I: isolated mode, neither the working directory nor PYTHON* variables leak in.
    file, version = _run(installed_python, "-I", "-c", probe).stdout.splitlines()
    assert file.startswith(str(installed_python.parents[1]))
    assert version == _wheel(dist_dir, dist).name.split("-")[1]


def test_entropy_server_console_script_runs(installed_python: Path) -> None:
    help_text = _run(installed_python.parent / "qr-entropy-server", "--help").stdout
    assert "--address" in help_text


def test_qr_vllm_imports_next_to_the_host_vllm(dist_dir: Path, installed_python: Path) -> None:
    # qr-vllm does not install vLLM (a 3 GB, hardware-specific build); it is
    # installed next to the host's. Reach the test environment's vLLM by
    # APPENDING its site-packages, so every module the wheels brought wins.
    spec = importlib.util.find_spec("vllm")
    assert spec is not None
    assert spec.origin is not None
    host_site = Path(spec.origin).parents[1]
    probe = (
        f"import json, sys; sys.path.append({str(host_site)!r});"
        "import qr_vllm;"
        "from importlib.metadata import entry_points as eps;"
        "[ep] = [p for p in eps(group='vllm.logits_processors') if p.name == 'qr_sampler'];"
        "cls = ep.load();"
        "names = ('qr_vllm', 'qr_core', 'qr_entropy', 'numpy', 'pydantic', 'pydantic_settings');"
        "print(json.dumps({n: sys.modules[n].__file__ for n in names}));"
        "print(qr_vllm.__version__); print(cls.__name__)"
    )
    out = _run(installed_python, "-I", "-c", probe).stdout.splitlines()
    files = json.loads(out[0])
    prefix = str(installed_python.parents[1])
    outside = {name: file for name, file in files.items() if not file.startswith(prefix)}
    assert not outside, f"imported from outside the fresh venv: {outside}"
    assert out[1] == _wheel(dist_dir, "qr-vllm").name.split("-")[1]
    assert out[2] == "QRSamplingLogitsProcessor"
