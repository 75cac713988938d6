"""A misbehaving entropy server for the fault tests, built on gRPC generic handlers.

Any service and method names (``--unary-path``, ``--stream-path``) with the
``qr_entropy`` field layout. Each response's data is the request's
``sequence_id`` as 8 big-endian bytes, repeated to the requested length, so a
test can prove which request produced the bytes it received.

Behaviour is read per request from the ``--control`` file, so a test switches
faults on a running server (first word of the file):

    ok                  correct answer
    slow SECONDS        sleep, then answer correctly (a late reply); before sleeping,
                        write the sequence_id to CONTROL.received (a test's cue that
                        the request arrived), after it to CONTROL.answered (the cue
                        that the late reply leaves)
    hang                as ``slow``, but wait until the control file says something
                        else: a reply as late as the test wants, whatever the load
    wrong_length        one byte short
    wrong_seq           answer as if for the previous sequence_id (the orphaned-read defect)
    garbage             bytes that are not protobuf
    no_seq              correct bytes but sequence_id not echoed (0)
    chunks K            answer streams in K chunks (unary: one message)
    end                 streams: end the call (status OK) instead of answering
    abort CODE          streams: end the call with status CODE (a grpc.StatusCode name)

Prints ``fault-server listening on ADDRESS`` when ready.
"""

from __future__ import annotations

import argparse
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from server_process import serve_until_sigterm

from qr_entropy_server.proto import entropy_service_pb2 as pb2

READY = "fault-server listening on "


def payload(sequence_id: int, n: int) -> bytes:
    """The bytes this server sends for ``sequence_id``: its 8-byte encoding, repeated."""
    unit = sequence_id.to_bytes(8, "big", signed=True)
    return (unit * (n // 8 + 1))[:n]


class Faulty:
    def __init__(self, control: Path) -> None:
        self._control = control
        self._received = control.with_name(control.name + ".received")
        self._answered = control.with_name(control.name + ".answered")

    def mode(self) -> list[str]:
        try:
            words = self._control.read_text().split()
        except OSError:
            words = []
        return words or ["ok"]

    def answers(self, raw: bytes) -> list[bytes]:
        request = pb2.EntropyRequest.FromString(raw)
        n, seq = request.bytes_needed, request.sequence_id
        mode = self.mode()
        right = pb2.EntropyResponse(
            data=payload(seq, n),
            sequence_id=seq,
            generation_timestamp_ns=time.time_ns(),
            device_id="fault-server",
        ).SerializeToString()
        if mode[0] in ("slow", "hang"):
            self._received.write_text(str(seq))
            if mode[0] == "slow":
                time.sleep(float(mode[1]))
            while self.mode()[0] == "hang":
                time.sleep(0.005)
            self._answered.write_text(str(seq))
            return [right]
        if mode[0] == "wrong_length":
            return [
                pb2.EntropyResponse(data=payload(seq, n - 1), sequence_id=seq).SerializeToString()
            ]
        if mode[0] == "wrong_seq":
            other = seq - 1 if seq > 1 else seq + 1  # 0 would mean "not echoed"
            stale = pb2.EntropyResponse(data=payload(other, n), sequence_id=other)
            return [stale.SerializeToString()]
        if mode[0] == "garbage":
            return [b"\xff\xff\xff\xff"]
        if mode[0] == "no_seq":
            return [pb2.EntropyResponse(data=payload(seq, n)).SerializeToString()]
        if mode[0] == "chunks":
            k = int(mode[1])
            data = payload(seq, n)
            step = -(-n // k)
            return [
                pb2.EntropyResponse(data=data[i : i + step], sequence_id=seq).SerializeToString()
                for i in range(0, n, step)
            ]
        return [right]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--unary-path", default="/qr_entropy.EntropyService/GetEntropy")
    parser.add_argument("--stream-path", default="/qr_entropy.EntropyService/StreamEntropy")
    args = parser.parse_args()
    faulty = Faulty(args.control)

    def unary(raw: bytes, context: grpc.ServicerContext) -> bytes:
        return b"".join(faulty.answers(raw)[:1])

    def stream(requests: Any, context: grpc.ServicerContext) -> Any:
        for raw in requests:
            mode = faulty.mode()
            if mode[0] == "end":
                return
            if mode[0] == "abort":
                context.abort(getattr(grpc.StatusCode, mode[1]), "aborted by the fault server")
            yield from faulty.answers(raw)

    handlers = {}
    for path, handler in (
        (args.unary_path, grpc.unary_unary_rpc_method_handler(unary)),
        (args.stream_path, grpc.stream_stream_rpc_method_handler(stream)),
    ):
        service, method = path[1:].split("/")
        handlers.setdefault(service, {})[method] = handler
    server = grpc.server(futures.ThreadPoolExecutor(16), options=[("grpc.so_reuseport", 0)])
    for service, methods in handlers.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    serve_until_sigterm(server, args.address, READY)


if __name__ == "__main__":
    main()
