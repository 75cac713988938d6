"""The ``qr-entropy-server`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from qr_entropy_server._backends import BUILTIN_BACKENDS, DEVICE_BACKENDS, load_backend
from qr_entropy_server._budget import DEFAULT_MAX_BUFFERED_BYTES
from qr_entropy_server._device_flags import add_device_flags, device_options
from qr_entropy_server._errors import EntropyServerError, ServerConfigError
from qr_entropy_server._health_tests import RECOVERY_BLOCKS
from qr_entropy_server._server import (
    DEFAULT_ADDRESS,
    DEFAULT_MAX_BYTES,
    EntropyServer,
    ServerOptions,
)

__all__ = ["build_parser", "main"]

logger = logging.getLogger("qr_entropy_server")

READY_PREFIX = "qr-entropy-server listening on "
METRICS_PREFIX = "qr-entropy-server metrics on "
API_KEY_ENV = "QR_SERVER_API_KEY"
_DEFAULTS = ServerOptions()


def _typed(convert: Callable[[str], object], what: str) -> Callable[[str], object]:
    """An argparse type that names an empty value (an unset ``${VAR}`` in a unit file)."""

    def parse(text: str) -> object:
        if not text.strip():
            raise argparse.ArgumentTypeError(
                f"empty value; give {what} or leave the flag out (an unset variable "
                "in a systemd unit or a script expands to nothing)"
            )
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    return parse


def _octal(text: str) -> int:
    return int(text, 8)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (documented in the package README)."""
    parser = argparse.ArgumentParser(
        prog="qr-entropy-server",
        description="Serve fresh random bytes over gRPC (qr_entropy.EntropyService).",
    )
    parser.add_argument(
        "--backend",
        default="urandom",
        type=_typed(str, "a backend name"),
        help=f"{' | '.join([*BUILTIN_BACKENDS, *DEVICE_BACKENDS])} | module:Class of your "
        "hardware (default: urandom); serial and chardev need --device",
    )
    parser.add_argument(
        "--port", type=_typed(int, "a port number"), default=50051, help="TCP port on 127.0.0.1"
    )
    parser.add_argument(
        "--address",
        default=None,
        type=_typed(str, "host:port or unix:///path"),
        help=f"host:port or unix:///path (overrides --port; default {DEFAULT_ADDRESS}); "
        "0.0.0.0:PORT or [::]:PORT serves other hosts",
    )
    parser.add_argument(
        "--max-workers",
        type=_typed(int, "a whole number"),
        default=_DEFAULTS.max_workers,
        help="threads that run a thread-safe backend's generate (16; others get one)",
    )
    parser.add_argument(
        "--max-bytes",
        type=_typed(int, "a whole number"),
        default=DEFAULT_MAX_BYTES,
        help=f"largest bytes_needed per request ({DEFAULT_MAX_BYTES}); above: RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-streams",
        type=_typed(int, "a whole number"),
        default=_DEFAULTS.max_streams,
        help=f"open streams at once ({_DEFAULTS.max_streams}); beyond: RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--stream-idle-timeout",
        type=_typed(float, "a number of seconds"),
        default=None,
        help="close a stream that sends no request for this many seconds (default: never)",
    )
    parser.add_argument(
        "--backend-timeout",
        type=_typed(float, "a number of seconds"),
        default=_DEFAULTS.backend_timeout_s,
        help="fail a generate slower than this and turn health NOT_SERVING "
        f"({_DEFAULTS.backend_timeout_s:g})",
    )
    parser.add_argument(
        "--max-buffered-bytes",
        type=_typed(int, "a whole number"),
        default=DEFAULT_MAX_BUFFERED_BYTES,
        help="payload bytes held at once for responses not yet sent (clients that do not "
        f"read); beyond: RESOURCE_EXHAUSTED ({DEFAULT_MAX_BUFFERED_BYTES})",
    )
    parser.add_argument(
        "--min-entropy",
        type=_typed(float, "a number of bits"),
        default=_DEFAULTS.min_entropy,
        help="declared min-entropy per byte the continuous health tests (repetition count, "
        "adaptive proportion) check every block against; a failing block is never served "
        f"and health stays NOT_SERVING until {RECOVERY_BLOCKS} blocks in a row pass "
        f"({_DEFAULTS.min_entropy:g}; urandom is not tested)",
    )
    parser.add_argument(
        "--socket-mode",
        type=_typed(_octal, "octal permission bits such as 660"),
        default=None,
        help="permission bits of the unix socket file, e.g. 660 (default: from the umask)",
    )
    parser.add_argument("--reflection", action="store_true", help="serve gRPC reflection")
    parser.add_argument(
        "--metrics-port",
        type=_typed(int, "a port number"),
        default=None,
        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics (0 picks a port; "
        "default: no endpoint); needs the 'metrics' extra",
    )
    parser.add_argument(
        "--metrics-address",
        type=_typed(str, "an interface address"),
        default=_DEFAULTS.metrics_address,
        help=f"interface of the metrics endpoint ({_DEFAULTS.metrics_address}: this host only)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
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
        "--grace",
        type=_typed(float, "a number of seconds"),
        default=_DEFAULTS.grace_s,
        help="seconds to drain in-flight calls on SIGTERM/SIGINT (5)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v info, -vv debug and tracebacks"
    )
    add_device_flags(parser)
    return parser


def _api_key(flag: str | None) -> str | None:
    """The key from ``--api-key`` or the environment; an empty one is an error, not 'off'."""
    if flag is not None:
        if not flag.strip():
            raise ServerConfigError(
                "--api-key is empty; give a key, or leave the flag out to serve without one"
            )
        return flag
    value = os.environ.get(API_KEY_ENV)
    if value is not None and not value.strip():
        raise ServerConfigError(
            f"{API_KEY_ENV} is set but empty; give it a key, or unset it to serve without one"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT.

    Prints ``qr-entropy-server listening on ADDRESS`` to stdout once serving,
    then, with ``--metrics-port``, ``qr-entropy-server metrics on URL``.

    Returns:
        Exit status: 0 after a graceful shutdown, 2 on a configuration error.
    """
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = ServerOptions(
            address=args.address or f"127.0.0.1:{args.port}",
            max_workers=args.max_workers,
            max_bytes=args.max_bytes,
            max_streams=args.max_streams,
            stream_idle_timeout_s=args.stream_idle_timeout,
            backend_timeout_s=args.backend_timeout,
            max_buffered_bytes=args.max_buffered_bytes,
            min_entropy=args.min_entropy,
            socket_mode=args.socket_mode,
            api_key=_api_key(args.api_key),
            api_key_header=args.api_key_header,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            reflection=args.reflection,
            grace_s=args.grace,
            metrics_port=args.metrics_port,
            metrics_address=args.metrics_address,
        )
        backend = load_backend(args.backend, device_options(args, args.backend_timeout))
        try:
            server = EntropyServer(backend, options)
        except BaseException:
            backend.close()
            raise

        def ready(address: str) -> None:
            # The metrics line follows the ready line: readers that wait for the
            # first line alone are not kept waiting.
            print(f"{READY_PREFIX}{address}", flush=True)
            if server.metrics is not None:
                print(f"{METRICS_PREFIX}{server.metrics.url}", flush=True)

        server.serve_until_signal(ready)
    except EntropyServerError as exc:
        print(f"qr-entropy-server: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
