"""How old is the oldest served byte? A streaming stand-in device, idle, then a fetch.

Serves a pseudo-terminal that streams timestamped words at about 2 MB/s
(:class:`qr_entropy_server.testing.StandInDevice`) and, after a fetch and
then 0.2 s, 2 s and 5 s without a request, fetches 20,480 bytes (unary, then
on a bidi stream)
and prints the age of the oldest served byte against the moment the request
was sent (negative: every byte came after it), the served words produced
before it, and when the response says the bytes were generated. At most one
packet may be in flight when the server flushes (stamped, then written after
the flush); it is named apart and left out of the oldest age.

- ``after``: ``--backend serial`` of this tree (raw mode, flush before each read);
- ``before``: the template as it was before issue 23
  (``qr_entropy_server.hardware_template:QRNGHardware`` with
  ``QR_HARDWARE_DEVICE``: a plain unbuffered read of the node), from another
  source tree given by ``--before-path``. That template never configures the
  line, and in the default cooked mode its reads end at a ^D byte and fail;
  so here the pty is put in raw mode beforehand, as ``stty raw -echo`` in a
  device's setup guide would. Get the old tree with, e.g.,
  ``git archive <commit> packages/qr-entropy-server/src | tar -x -C /tmp/before``
  then ``--before-path /tmp/before/packages/qr-entropy-server/src``.

Usage: python bench/bench_staleness.py [--before-path DIR] [--rate BYTES_PER_S]
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable

import grpc

from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc
from qr_entropy_server.testing import PACKET, WORD, StandInDevice, age_us, decode_words

N = 20_480
IDLE_S = (0.2, 2.0, 5.0)


def _server(
    args: list[str], path: str | None, env: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, **env}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qr_entropy_server", "--address", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("qr-entropy-server listening on "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def _report(reply: pb2.EntropyResponse, sent_us: int, sent_ns: int) -> str:
    """The oldest byte's age, the words made before the request, the claimed stamp."""
    words = decode_words(reply.data)
    ages = [age_us(stamp, sent_us) for _, stamp in words]
    stale = [age for age in ages if age > 0]
    # One packet (8 words, one stamp) may have been in flight at the flush.
    late = bool(stale) and len(stale) <= PACKET // WORD and len(set(stale)) == 1
    rest = [age for age in ages if not (late and age > 0)]
    oldest = max(rest) / 1000 if rest else float("nan")
    claimed = (reply.generation_timestamp_ns - sent_ns) / 1e6
    note = f", one packet in flight ({max(stale) / 1000:.1f} ms)" if late else ""
    return (
        f"oldest byte {oldest:8.1f} ms before the request | words made before it: "
        f"{len(stale):4d} of {len(words):4d} ({100 * len(stale) * WORD / N:5.1f} %){note} | "
        f"generation_timestamp_ns {claimed:5.1f} ms after it"
    )


def _measure(
    label: str, args: list[str], path: str | None, env: dict[str, str], rate: float
) -> None:
    with StandInDevice(rate=rate, raw=label == "before") as device:
        proc, address = _server(
            [*args, *(["--device", device.path] if "serial" in args else [])],
            path,
            {**env, "QR_HARDWARE_DEVICE": device.path},
        )
        try:
            with grpc.insecure_channel(address) as channel:
                stub = pb2_grpc.EntropyServiceStub(channel)
                requests: queue.Queue[pb2.EntropyRequest | None] = queue.Queue()
                replies = iter(stub.StreamEntropy(iter(requests.get, None)))

                def bidi(r: pb2.EntropyRequest) -> pb2.EntropyResponse:
                    requests.put(r)
                    return next(replies)

                fetchers: dict[str, Callable[[pb2.EntropyRequest], pb2.EntropyResponse]] = {
                    "unary": lambda r: stub.GetEntropy(r, timeout=60),
                    "bidi": bidi,
                }
                for fetch in fetchers.values():
                    fetch(pb2.EntropyRequest(bytes_needed=64))
                for idle in IDLE_S:
                    for mode, fetch in fetchers.items():
                        fetch(pb2.EntropyRequest(bytes_needed=N))  # what waited is read now
                        time.sleep(idle)
                        sent_us, sent_ns = time.monotonic_ns() // 1000, time.time_ns()
                        reply = fetch(pb2.EntropyRequest(bytes_needed=N))
                        line = _report(reply, sent_us, sent_ns)
                        print(f"{label:6s} {mode:5s} idle {idle:3.1f} s: {line}", flush=True)
                requests.put(None)
        finally:
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-path", default=None, help="source tree of the old server")
    parser.add_argument("--rate", type=float, default=2e6, help="stand-in bytes per second")
    args = parser.parse_args()
    if args.before_path:
        _measure(
            "before",
            ["--backend", "qr_entropy_server.hardware_template:QRNGHardware"],
            args.before_path,
            {},
            args.rate,
        )
    _measure("after", ["--backend", "serial"], None, {}, args.rate)


if __name__ == "__main__":
    main()
