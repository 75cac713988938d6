"""The ``qr-entropy-server`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from qr_entropy_server._backends import BUILTIN_BACKENDS, load_backend
from qr_entropy_server._errors import EntropyServerError
from qr_entropy_server._server import DEFAULT_MAX_BYTES, EntropyServer, ServerOptions

__all__ = ["build_parser", "main"]

logger = logging.getLogger("qr_entropy_server")

READY_PREFIX = "qr-entropy-server listening on "
API_KEY_ENV = "QR_SERVER_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (documented in the package README)."""
    parser = argparse.ArgumentParser(
        prog="qr-entropy-server",
        description="Serve fresh random bytes over gRPC (qr_entropy.EntropyService).",
    )
    parser.add_argument(
        "--backend",
        default="urandom",
        help=f"{' | '.join(BUILTIN_BACKENDS)} | module:Class of your hardware (default: urandom)",
    )
    parser.add_argument("--port", type=int, default=50051, help="TCP port on all interfaces")
    parser.add_argument(
        "--address", default=None, help="host:port or unix:///path (overrides --port)"
    )
    parser.add_argument("--max-workers", type=int, default=16, help="worker threads (16)")
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"largest bytes_needed per request ({DEFAULT_MAX_BYTES}); above: RESOURCE_EXHAUSTED",
    )
    parser.add_argument("--reflection", action="store_true", help="serve gRPC reflection")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"require this key in the call metadata (default: ${API_KEY_ENV}, which keeps "
        "the key out of the process list)",
    )
    parser.add_argument("--api-key-header", default="api-key", help="metadata header (api-key)")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key")
    parser.add_argument(
        "--tls-client-ca", type=Path, default=None, help="PEM CA: require client certificates"
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds to drain in-flight calls (5)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT.

    Prints ``qr-entropy-server listening on ADDRESS`` to stdout once serving.

    Returns:
        Exit status: 0 after a graceful shutdown, 2 on a configuration error.
    """
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = ServerOptions(
        address=args.address or f"[::]:{args.port}",
        max_workers=args.max_workers,
        max_bytes=args.max_bytes,
        api_key=args.api_key or None,
        api_key_header=args.api_key_header,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        reflection=args.reflection,
        grace_s=args.grace,
    )
    try:
        backend = load_backend(args.backend)
        try:
            server = EntropyServer(backend, options)
        except BaseException:
            backend.close()
            raise
    except EntropyServerError as exc:
        print(f"qr-entropy-server: error: {exc}", file=sys.stderr)
        return 2
    server.serve_until_signal(lambda address: print(f"{READY_PREFIX}{address}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
