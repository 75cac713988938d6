"""Start-up configuration of the server command: errors name what is wrong; safe defaults."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qr_entropy_server import DEFAULT_ADDRESS, EntropyServer, ServerConfigError, ServerOptions
from qr_entropy_server.cli import build_parser, main

Spawn = Callable[..., Any]
RunCli = Callable[..., subprocess.CompletedProcess[str]]
Starter = Callable[..., EntropyServer]
BEYOND = "reachable beyond this host"


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A fresh key and a self-signed certificate for 127.0.0.1 (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_default_address_is_loopback() -> None:
    assert DEFAULT_ADDRESS == "127.0.0.1:50051"
    assert ServerOptions().address == DEFAULT_ADDRESS
    args = build_parser().parse_args([])
    assert (args.address, args.port) == (None, 50051)


def test_port_alone_binds_loopback_without_a_warning(spawn: Spawn) -> None:
    server = spawn("--port", "0")
    assert server.address.startswith("127.0.0.1:")
    assert server.stop() == 0
    assert BEYOND not in server.stderr


@pytest.mark.parametrize(
    ("extra", "env", "warned"),
    [
        ((), {}, True),
        ((), {"QR_SERVER_API_KEY": "k"}, False),
    ],
    ids=["open", "with-key"],
)
def test_binding_every_interface_without_key_or_tls_warns(
    spawn: Spawn, extra: tuple[str, ...], env: dict[str, str], warned: bool
) -> None:
    server = spawn("--address", "0.0.0.0:0", *extra, env=env)
    assert server.stop() == 0
    assert (BEYOND in server.stderr) is warned, server.stderr


def test_tls_on_every_interface_does_not_warn(spawn: Spawn, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "server")
    server = spawn("--address", "0.0.0.0:0", "--tls-cert", str(cert), "--tls-key", str(key))
    assert server.stop() == 0
    assert BEYOND not in server.stderr, server.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--api-key", ""), {}, "--api-key is empty"),
        (("--api-key", " "), {}, "--api-key is empty"),
        ((), {"QR_SERVER_API_KEY": ""}, "QR_SERVER_API_KEY is set but empty"),
        (("--max-bytes", ""), {}, "argument --max-bytes: empty value"),
        (("--max-workers", ""), {}, "argument --max-workers: empty value"),
        (("--address", ""), {}, "argument --address: empty value"),
        (("--max-bytes", "lots"), {}, "argument --max-bytes: 'lots' is not a whole number"),
        (("--socket-mode", "999"), {}, "argument --socket-mode: '999' is not octal"),
        (("--max-streams", "0"), {}, "--max-streams must be > 0, got 0"),
        (("--backend-timeout", "0"), {}, "--backend-timeout must be > 0"),
        (("--stream-idle-timeout", "-1"), {}, "--stream-idle-timeout must be > 0"),
        (("--socket-mode", "660"), {}, "--socket-mode applies to a unix:// --address only"),
    ],
)
def test_bad_configuration_exits_2_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("QR_SERVER_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(["--address", "127.0.0.1:0", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_key_that_does_not_match_the_certificate_is_named(
    run_cli: RunCli, start_server: Starter, tmp_path: Path
) -> None:
    cert, _ = _self_signed(tmp_path, "a")
    _, other_key = _self_signed(tmp_path, "b")
    done = run_cli(
        "--address", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(other_key)
    )  # fmt: skip
    assert done.returncode == 2
    assert f"--tls-key '{other_key}' does not match --tls-cert '{cert}'" in done.stderr
    assert "Failed to bind" not in done.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    with pytest.raises(ServerConfigError, match="cannot be used"):
        start_server(tls_cert=cert, tls_key=garbage)
    with pytest.raises(ServerConfigError, match=r"--tls-client-ca .* holds no usable PEM"):
        start_server(tls_cert=cert, tls_key=tmp_path / "a.key", tls_client_ca=garbage)
