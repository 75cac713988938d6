"""gRPC entropy client: :class:`QuantumGrpcSource` (registry name ``quantum_grpc``).

Protocol-agnostic (it speaks the protobuf wire format itself, so any server
with the byte count in request field 1 and the bytes in response field 1
works), three transport modes, TLS and mutual TLS, API keys, and an adaptive
circuit breaker. See ``docs/grpc.md`` of the qr-entropy distribution.

Test and benchmark tooling (a clock moved by hand, the public-API fallback on
demand, leak checks): :mod:`qr_entropy.grpc.testing`.
"""

from qr_entropy.grpc._breaker import (
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
)
from qr_entropy.grpc._errors import (
    GrpcConfigurationError,
    GrpcEntropyError,
    ProtocolMismatchError,
    WireFormatError,
)
from qr_entropy.grpc._source import QuantumGrpcSource

__all__ = [
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "GrpcConfigurationError",
    "GrpcEntropyError",
    "ProtocolMismatchError",
    "QuantumGrpcSource",
    "WireFormatError",
]
