"""Certificates for the TLS tests, made on the spot (``cryptography``, a test tool).

A CA, a server certificate it signed (``qrng.test``, ``localhost``), a client
certificate it signed, and an unrelated CA (the wrong CA of the configuration
tests). Not a fixture module: the TLS tests call :func:`write_certificates`.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest


def write_certificates(directory: Path) -> dict[str, Path]:
    """Write ``ca``, ``other_ca`` (an unrelated CA), ``server`` and ``client`` as PEM.

    Returns:
        ``{label}_cert`` and ``{label}_key`` paths for each label. The server's
        certificate names ``qrng.test`` and ``localhost``; CA and client are
        signed by ``ca``.
    """
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(name: str, issuer: tuple[object, object] | None, usage: object) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if issuer is None:
            builder = builder.issuer_name(subject).add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
            signer = key
        else:
            builder = builder.issuer_name(issuer[0].subject)  # type: ignore[attr-defined]
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            if usage == ExtendedKeyUsageOID.SERVER_AUTH:
                names = [x509.DNSName("qrng.test"), x509.DNSName("localhost")]
                builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            signer = issuer[1]
        return builder.sign(signer, hashes.SHA256()), key  # type: ignore[arg-type]

    ca = issue("test-ca", None, None)
    made = {
        "ca": ca,
        "other_ca": issue("other-ca", None, None),
        "server": issue("qrng.test", ca, ExtendedKeyUsageOID.SERVER_AUTH),
        "client": issue("qr-client", ca, ExtendedKeyUsageOID.CLIENT_AUTH),
    }
    paths: dict[str, Path] = {}
    for label, (cert, key) in made.items():
        paths[f"{label}_cert"] = directory / f"{label}.crt"
        paths[f"{label}_key"] = directory / f"{label}.key"
        paths[f"{label}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{label}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths
