"""``unary``: one blocking call per request, with the breaker's deadline as the call's.

grpcio's own blocking unary call is already one call on the core layer, in the
caller's thread: no fallback is needed.
"""

from __future__ import annotations

import grpc

from qr_entropy.grpc._channel import ChannelSettings
from qr_entropy.grpc._replies import (
    Reply,
    check_length,
    map_rpc_error,
    precheck,
    read_response,
)
from qr_entropy.grpc._transports.base import SyncTransport, closed_channel_error
from qr_entropy.grpc._wire import encode_request

__all__ = ["UnaryTransport"]


class UnaryTransport(SyncTransport):
    """One blocking unary call per request."""

    mode = "unary"

    def __init__(self, settings: ChannelSettings) -> None:
        super().__init__(settings)
        self._method = settings.method_path
        self._call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            self._method, request_serializer=None, response_deserializer=None
        )

    def request(self, n: int, sequence_id: int, timeout_s: float) -> Reply:
        """Send one request and wait for its one response, under a gRPC deadline."""
        precheck(self._settings)
        try:
            if self._closed:
                raise ValueError("transport closed")
            payload: bytes = self._call(
                encode_request(n, sequence_id),
                timeout=timeout_s,
                metadata=self._settings.metadata or None,
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self._method, self._settings) from None
        except ValueError as exc:
            raise closed_channel_error(self._settings, exc) from None
        response = read_response(payload, sequence_id, self._method, self._settings)
        check_length(len(response.data), n, self._method, self._settings)
        return Reply(
            response.data,
            sequence_id,
            response.generated_ns,
            response.device_id,
            1,
            response.read_started_ns,
            response.device_bytes_per_second,
        )
