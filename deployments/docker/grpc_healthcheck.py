"""Container health check: exit 0 when a gRPC server answers ``grpc.health.v1`` SERVING.

Copied into the entropy-server image as ``/usr/local/bin/qr-grpc-healthcheck`` and
called by the compose ``healthcheck:``. It needs only ``grpcio`` and
``grpcio-health-checking``, which ``qr-entropy-server`` already depends on, so the
image carries no extra probe binary.

Usage::

    python qr-grpc-healthcheck ADDRESS [--service NAME] [--timeout SECONDS]

``ADDRESS`` is ``host:port`` or ``unix:///path``. The health service is served
without an API key, so none is needed here.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    """Probe the server once.

    Returns:
        0 when the server reports SERVING, 1 otherwise (any status or error).
    """
    parser = argparse.ArgumentParser(prog="qr-grpc-healthcheck")
    parser.add_argument("address", help="host:port or unix:///path")
    parser.add_argument("--service", default="", help="service name ('' = whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (3)")
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)
            return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"unhealthy: {name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
