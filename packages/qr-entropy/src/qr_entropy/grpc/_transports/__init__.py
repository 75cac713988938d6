"""The three transport modes on grpcio's synchronous channel, one module each.

Every mode runs in the caller's own thread: no hand-off to an event loop or to
grpc's own threads where grpcio's core layer is as expected
(:mod:`qr_entropy.grpc._core_call`; see ``docs/grpc.md``, "Where a bidi fetch
spends its time"). ``close()`` closes the channel, which cancels every call on
it: a caller blocked in a call raises at once.

- :mod:`.unary`: one ``GetEntropy``-style call per request, one response.
- :mod:`.server_streaming`: one call per request on the stream method, used as
  unary-request / stream-response: one request message, half-close, then read
  responses (the bytes may come in several chunks) until the server ends the call.
- :mod:`.bidi`: one long-lived bidirectional call; each request writes one
  message and reads exactly one response. On a timeout, a mismatched reply or
  any error the call is cancelled and never read again; the next request opens
  a new call.

The streaming modes drive grpcio's core layer where it is as expected and fall
back to grpcio's public API where it is not (:mod:`.base`), each with its
public-API call in its own module. The reply, its checks and the error mapping
are shared by all (:mod:`qr_entropy.grpc._replies`).
"""

from __future__ import annotations

from qr_entropy.grpc._transports.base import SyncTransport
from qr_entropy.grpc._transports.bidi import BidiTransport
from qr_entropy.grpc._transports.server_streaming import ServerStreamingTransport
from qr_entropy.grpc._transports.unary import UnaryTransport

__all__ = [
    "TRANSPORTS",
    "BidiTransport",
    "ServerStreamingTransport",
    "SyncTransport",
    "UnaryTransport",
]

TRANSPORTS: dict[str, type[SyncTransport]] = {
    UnaryTransport.mode: UnaryTransport,
    ServerStreamingTransport.mode: ServerStreamingTransport,
    BidiTransport.mode: BidiTransport,
}
"""Each transport class by its ``QR_GRPC_MODE``."""
