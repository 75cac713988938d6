"""``vllm serve`` refuses to start when its entropy server refuses the configuration.

One real ``qr-entropy-server`` (TLS with a test CA, API key required) on
127.0.0.1. A wrong API key (an arm of ``QR_SOURCES``) and a wrong CA (the default
source) each stop ``vllm serve`` with a message naming the arm or setting, the
address and the cause. The refusal comes from the front end's probe, before the
engine process starts: the model is never loaded, so each refused start costs
vLLM's import and configuration only (the test prints how long it took).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qr_entropy_server.server_process import start_server_process

from ..grpc.tls_certificates import write_certificates  # noqa: TID252 - shared helper
from .serve_helpers import free_port

pytestmark = pytest.mark.slow

KEY = "the-right-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path]]]:
    """The server's address and the test certificates (``ca``, ``other_ca``, ``server``)."""
    workdir = tmp_path_factory.mktemp("refusal")
    certs = write_certificates(workdir)
    flags = ("--address", "127.0.0.1:0")
    tls = ("--tls-cert", str(certs["server_cert"]), "--tls-key", str(certs["server_key"]))
    with start_server_process(*flags, *tls, env={"QR_SERVER_API_KEY": KEY}) as server:
        yield server.address, certs


def _tls(address: str, ca: Path, key: str) -> dict[str, object]:
    return {
        "entropy_source_type": "quantum_grpc",
        "grpc_server_address": address,
        "grpc_tls": True,
        "grpc_tls_ca_file": str(ca),
        "grpc_tls_server_name": "qrng.test",
        "grpc_api_key": key,
    }


def _refused_start(
    serve_command: Callable[..., list[str]], env: dict[str, str], workdir: Path, name: str
) -> str:
    """Run ``vllm serve``; it must exit non-zero. Returns its output."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    started = time.monotonic()
    done = subprocess.run(
        [*serve_command("--max-model-len", "512"), "--port", str(free_port())],
        env={**base, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "QR_METRICS_PORT": "0", **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,  # a liveness bound on two shared cores, not a timing
        check=False,
    )
    output = done.stdout + done.stderr
    (workdir / f"{name}.log").write_text(output)
    print(f"{name}: vllm serve refused to start after {time.monotonic() - started:.1f} s")
    assert done.returncode != 0, output[-4000:]
    assert "SourceRefusedError: qr-vllm refuses to start" in output, output[-4000:]
    # Refused by the front end: no engine process was initialised, no model loaded.
    assert "Initializing a V1 LLM engine" not in output
    assert "Loading weights" not in output
    return output


def test_a_wrong_api_key_refuses_to_start_naming_the_arm_address_and_cause(
    server: tuple[str, dict[str, Path]],
    serve_command: Callable[..., list[str]],
    tmp_path: Path,
) -> None:
    address, certs = server
    arms = {
        "qrng": _tls(address, certs["ca_cert"], "not-the-key"),
        "control": {"entropy_source_type": "system"},
    }
    output = _refused_start(serve_command, {"QR_SOURCES": json.dumps(arms)}, tmp_path, "key")
    assert f"QR_SOURCES: arm 'qrng': UNAUTHENTICATED from {address}" in output
    assert "the server rejected the API key" in output
    assert "not-the-key" not in output


def test_a_wrong_ca_refuses_to_start_naming_the_source_address_and_cause(
    server: tuple[str, dict[str, Path]],
    serve_command: Callable[..., list[str]],
    tmp_path: Path,
) -> None:
    address, certs = server
    env = {
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
        "QR_GRPC_SERVER_ADDRESS": address,
        "QR_GRPC_TLS": "true",
        "QR_GRPC_TLS_CA_FILE": str(certs["other_ca_cert"]),
        "QR_GRPC_TLS_SERVER_NAME": "qrng.test",
        "QR_GRPC_API_KEY": KEY,
    }
    output = _refused_start(serve_command, env, tmp_path, "ca")
    assert f"QR_ENTROPY_SOURCE_TYPE='quantum_grpc': UNAVAILABLE from {address}" in output
    assert "TLS certificate verification failed" in output
    assert "QR_GRPC_TLS_CA_FILE" in output
