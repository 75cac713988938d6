"""The optional parts: gRPC reflection (``reflection`` extra) and metrics (``metrics`` extra).

Each extra's package is imported only when its flag is given, so the server
runs without them; a flag without its extra is refused naming the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grpc import aio
from grpc_health.v1 import health_pb2

from qr_entropy_server._errors import ServerConfigError

if TYPE_CHECKING:
    from qr_entropy_server._prometheus import MetricsEndpoint

__all__ = ["add_reflection", "metrics_endpoint_class"]


def add_reflection(server: aio.Server, service_name: str) -> None:
    """Serve gRPC reflection for the entropy and health services (``--reflection``).

    Raises:
        ServerConfigError: the ``reflection`` extra is not installed.
    """
    try:
        from grpc_reflection.v1alpha import reflection
    except ImportError as exc:
        raise ServerConfigError(
            "--reflection needs the optional 'reflection' extra: "
            "pip install 'qr-entropy-server[reflection]'"
        ) from exc
    names = (service_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)


def metrics_endpoint_class() -> type[MetricsEndpoint]:
    """The Prometheus endpoint class (``--metrics-port``).

    Raises:
        ServerConfigError: the ``metrics`` extra (prometheus-client) is not installed.
    """
    try:
        from qr_entropy_server._prometheus import MetricsEndpoint
    except ImportError as exc:
        raise ServerConfigError(
            "--metrics-port needs the optional 'metrics' extra (prometheus-client): "
            "pip install 'qr-entropy-server[metrics]'"
        ) from exc
    return MetricsEndpoint
