"""TLS files checked when the settings load: a CA file holds certificates, a key file a key.

Standard library only (qr-entropy does not depend on ``cryptography``): the PEM
blocks are read structurally (their labels, strict base64, and a DER SEQUENCE
whose length covers the block), then OpenSSL itself loads them through the
``ssl`` module: the certificates as trust anchors, a client certificate with its
key (which also proves that the key belongs to the certificate). gRPC reads PEM
only, so a DER file is refused with the conversion that fixes it.

Each check raises ``ValueError`` with the reason; the settings class turns it
into an error naming the variable (``QR_GRPC_TLS_CA_FILE`` ...).
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from pathlib import Path

__all__ = ["check_ca_file", "check_certificate_file", "check_key_file"]

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_CERTIFICATE = (b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE")
_KEYS = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY")


def _der_length_ok(der: bytes) -> bool:
    """A DER SEQUENCE (0x30) whose declared length is exactly the rest of ``der``."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return 2 + first == len(der)
    count = first & 0x7F
    if not 1 <= count <= 4 or len(der) < 2 + count:
        return False
    return 2 + count + int.from_bytes(der[2 : 2 + count], "big") == len(der)


def _blocks(path: str) -> list[tuple[str, bytes]]:
    """The PEM blocks of the file as ``(label, DER)``, each checked structurally."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror or exc}") from None
    found = _PEM.findall(content)
    if not found:
        if content[:1] == b"\x30":
            raise ValueError(
                "is DER, not PEM; gRPC reads PEM (convert it: openssl x509 -inform der "
                "-in FILE -out FILE.pem, or openssl pkey -inform der for a key)"
            )
        raise ValueError("holds no PEM block ('-----BEGIN ...-----')")
    blocks = []
    for label, body in found:
        name = label.decode("ascii")
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"its {name} block is not valid base64") from None
        if not _der_length_ok(der):
            raise ValueError(f"its {name} block is not a well-formed DER structure")
        blocks.append((name, der))
    return blocks


def _labels(blocks: list[tuple[str, bytes]]) -> str:
    return ", ".join(sorted({name for name, _ in blocks}))


def _certificates(path: str) -> list[bytes]:
    blocks = _blocks(path)
    certificates = [der for name, der in blocks if name.encode() in _CERTIFICATE]
    if not certificates:
        raise ValueError(f"holds no certificate, only {_labels(blocks)}")
    return certificates


def check_ca_file(path: str) -> None:
    """A CA bundle: at least one certificate, each one OpenSSL accepts as a trust anchor."""
    certificates = _certificates(path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=b"".join(certificates))
    except ssl.SSLError as exc:
        raise ValueError(f"holds a certificate OpenSSL cannot load: {exc.reason or exc}") from None


def check_certificate_file(path: str) -> None:
    """A client certificate chain: at least one certificate (its key is checked with the key)."""
    _certificates(path)


def check_key_file(path: str, certificate: str | None = None) -> None:
    """An unencrypted private key; with ``certificate``, the key of that certificate."""
    blocks = _blocks(path)
    names = {name.encode() for name, _ in blocks}
    if b"ENCRYPTED PRIVATE KEY" in names:
        raise ValueError(
            "holds an encrypted private key, which gRPC cannot use; decrypt it "
            "(openssl pkey -in KEY -out KEY.plain)"
        )
    if not names & set(_KEYS):
        raise ValueError(f"holds no private key, only {_labels(blocks)}")
    if certificate is None:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(certificate, path, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"is not the key of the certificate in {certificate!r} (grpc_tls_cert_file)"
            ) from None
        raise ValueError(f"cannot be loaded with its certificate: {exc.reason or exc}") from None
