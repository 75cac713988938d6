"""The entropy-server container's command line, run on the host, serves the client.

There is no Docker engine here, so the container's process is reproduced: the
argument vector is the Dockerfile's ``ENTRYPOINT`` plus the compose service's
``command:`` (or the Dockerfile's ``CMD``), unchanged except for the listening
address (a temporary unix socket or an ephemeral TCP port on 127.0.0.1 instead
of the container's). The compose health check runs against it, and the
``qr_entropy`` client, configured from the profile's ``.env.example`` exactly as
the vLLM container would be, fetches entropy from it. A service that is given
a device (``devices:``) reads a pseudo-terminal that streams like a USB QRNG
(``qr_entropy_server.testing.StandInDevice``) in place of the host's node. A
service with ``--metrics-port`` must listen where the monitoring profile's
Prometheus scrapes it (``deployments/monitoring/prometheus.yml``); here its
endpoint moves to an ephemeral port on 127.0.0.1 and is scraped once.
"""

from __future__ import annotations

import json
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from qr_entropy_server.testing import StandInDevice

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
DOCKERFILE = DEPLOYMENTS / "docker" / "Dockerfile.entropy-server"
READY_PREFIX = "qr-entropy-server listening on "
METRICS_PREFIX = "qr-entropy-server metrics on "
PROMETHEUS = DEPLOYMENTS / "monitoring" / "prometheus.yml"


def _scraped_targets(job: str) -> list[str]:
    """The targets of one job of the monitoring profile's Prometheus."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    (scrape,) = [s for s in config["scrape_configs"] if s["job_name"] == job]
    return [target for group in scrape["static_configs"] for target in group["targets"]]


def _move_metrics(argv: list[str], service_name: str) -> bool:
    """Point ``--metrics-port`` at an ephemeral port on 127.0.0.1; False without the flag.

    The container's port and interface must be the ones Prometheus scrapes.
    """
    if "--metrics-port" not in argv:
        return False
    at = argv.index("--metrics-port") + 1
    assert f"{service_name}:{argv[at]}" in _scraped_targets("qr-entropy-server")
    host = argv.index("--metrics-address") + 1
    assert argv[host] == "0.0.0.0", "Prometheus in another container cannot reach it"
    argv[at], argv[host] = "0", "127.0.0.1"
    return True


def _server_services() -> list[tuple[str, str]]:
    """(profile, service) pairs of services built from Dockerfile.entropy-server."""
    cases = []
    for compose_file in sorted(DEPLOYMENTS.glob("*/docker-compose.yml")):
        compose = yaml.safe_load(compose_file.read_text())
        for name, service in compose["services"].items():
            build = service.get("build") or {}
            dockerfile = (compose_file.parent / build.get("context", ".")).resolve() / build.get(
                "dockerfile", "Dockerfile"
            )
            if dockerfile.resolve() == DOCKERFILE.resolve():
                cases.append((compose_file.parent.name, name))
    return cases


def _instructions() -> list[str]:
    """The Dockerfile's lines with backslash continuations joined."""
    return DOCKERFILE.read_text().replace("\\\n", " ").splitlines()


def _exec_form(instruction: str) -> list[str]:
    """The JSON (exec-form) arguments of the last ``instruction`` in the Dockerfile."""
    found = None
    for line in _instructions():
        word, _, rest = line.strip().partition(" ")
        if word.upper() == instruction:
            found = rest
    assert found is not None, f"no {instruction} in {DOCKERFILE.name}"
    value = json.loads(found)
    assert isinstance(value, list), f"{instruction} must use the exec form"
    return [str(v) for v in value]


def _copied_to(target: str) -> Path:
    """The repository file a Dockerfile ``COPY`` puts at ``target`` in the image."""
    for line in _instructions():
        parts = line.split()
        if parts[:1] == ["COPY"] and parts[-1] == target:
            return DEPLOYMENTS.parent / parts[1]
    raise AssertionError(f"nothing is copied to {target}")


def _console_script(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    assert path is not None, f"console script {name} is not installed next to {sys.executable}"
    return path


def _wait_ready(process: subprocess.Popen[str], limit_s: float = 60.0) -> str:
    """The address from the server's ready line (a hang guard, not a timing test)."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()
            if not line and process.poll() is not None:
                break
    process.kill()
    _, stderr = process.communicate()
    raise AssertionError(f"entropy server never became ready:\n{stderr}")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="qrsock-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(("profile_name", "service_name"), _server_services())
def test_container_command_serves_the_profile_client(
    profile_name: str,
    service_name: str,
    deploy: Any,
    short_dir: Path,
    clean_qr_env: pytest.MonkeyPatch,
) -> None:
    from qr_entropy import EntropyConfig, build_source

    profile = deploy.deployments / profile_name
    service = deploy.load_compose(profile)["services"][service_name]
    argv = _exec_form("ENTRYPOINT") + (service.get("command") or _exec_form("CMD"))
    assert argv[0] == "qr-entropy-server"
    env = deploy.env_file_values(profile)

    # Where the container listens and where the vLLM container connects must agree.
    at = argv.index("--address") + 1
    container_address, client_address = argv[at], env["QR_GRPC_SERVER_ADDRESS"]
    if container_address.startswith("unix://"):
        assert client_address == container_address
        probed = container_address
        argv[at] = f"unix://{short_dir / Path(container_address[len('unix://') :]).name}"
    else:
        host, _, port = container_address.rpartition(":")
        assert host in ("0.0.0.0", "[::]"), f"{service_name} listens on {host} only"
        assert client_address == f"{service_name}:{port}"
        probed = f"127.0.0.1:{port}"
        argv[at] = "127.0.0.1:0"
    argv[0] = _console_script(argv[0])
    stack = ExitStack()
    if service.get("devices"):
        # The node the container is given, by its path inside the container.
        inside = [entry.split(":")[1] for entry in service["devices"]]
        at_device = argv.index("--device") + 1
        assert argv[at_device] in inside, "the server reads a device it was not given"
        argv[at_device] = stack.enter_context(StandInDevice()).path

    metrics = _move_metrics(argv, service_name)
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = _wait_ready(server)
        if metrics:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.startswith(METRICS_PREFIX), line
            url = line[len(METRICS_PREFIX) :].strip()
            with urllib.request.urlopen(url, timeout=30) as reply:
                assert "qr_entropy_server_healthy 1.0" in reply.read().decode()
        # The compose health check, with the image's paths mapped to the repository.
        health = list(service["healthcheck"]["test"])
        assert health[:2] == ["CMD", "python"]
        assert health[3] == probed, "the health check probes another address"
        health_argv = [sys.executable, str(_copied_to(health[2])), address, *health[4:]]
        probe = subprocess.run(health_argv, capture_output=True, text=True, check=False)
        assert probe.returncode == 0, probe.stderr

        for key, value in env.items():
            if key.startswith("QR_"):
                clean_qr_env.setenv(key, value)
        clean_qr_env.setenv("QR_GRPC_SERVER_ADDRESS", address)
        # No fallback: bytes that did not come from the server must fail the test.
        clean_qr_env.setenv("QR_FALLBACK_MODE", "error")
        config = EntropyConfig(_env_file=None)
        assert config.entropy_source_type == "quantum_grpc"
        n = int(env.get("QR_SAMPLE_COUNT", "20480"))
        with build_source(config) as source:
            first, second = source.fetch(n), source.fetch(n)
        for fetch in (first, second):
            assert len(fetch.data) == n
            assert fetch.source == "quantum_grpc"
            assert fetch.fallback is False
            assert fetch.sequence_id is not None
        # 20 kB of urandom repeating, or being constant, has probability ~0.
        assert first.data != second.data
        assert len(set(first.data)) > 200
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        stack.close()
    assert server.returncode == 0, f"no graceful shutdown: {server.stderr and server.stderr.read()}"
    # The same health check reports a stopped server as unhealthy.
    probe = subprocess.run(
        [*health_argv, "--timeout", "1"], capture_output=True, text=True, check=False
    )
    assert probe.returncode == 1


def test_image_health_check_probes_the_default_command() -> None:
    cmd = _exec_form("CMD")
    address = cmd[cmd.index("--address") + 1]
    port = address.rpartition(":")[2]
    healthcheck = [line for line in _instructions() if line.startswith("HEALTHCHECK")]
    assert len(healthcheck) == 1
    probe = json.loads(healthcheck[0].split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "/usr/local/bin/qr-grpc-healthcheck"]
    assert _copied_to(probe[1]).is_file()
    assert probe[2] == f"127.0.0.1:{port}"
