"""Server memory under clients that ask for 1 MiB and never read, before and after they leave.

Starts ``qr-entropy-server`` (urandom), opens 200 ``StreamEntropy`` calls on
4 channels, each sends one request for 1 MiB and never reads, then the
clients cancel and close their channels. Prints the server's RSS at start,
while the streams are held, and after the clients left, and how many
requests were refused RESOURCE_EXHAUSTED.

Usage::

    python bench/bench_unread_streams.py [--server-path DIR] [--server-args "FLAGS"]

``--server-path`` puts another ``qr_entropy_server`` source tree first on the
server's PYTHONPATH (e.g. the tree before issue 23, from ``git archive``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import time

import grpc
from grpc import aio

from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

MIB = 1 << 20
STREAMS = 200


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (/proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def settled_rss(pid: int, limit_s: float = 20.0) -> float:
    """RSS once it changes by less than 1 MiB over 0.5 s (or after ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    last = rss_mib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_mib(pid)
        if abs(now - last) < 1.0:
            return now
        last = now
    return last


async def _streams(address: str, pid: int) -> tuple[float, int]:
    channels = [aio.insecure_channel(address) for _ in range(4)]
    calls = []
    for i in range(STREAMS):
        # The generated stub's types describe the synchronous API; on aio no iterator is due.
        call = pb2_grpc.EntropyServiceStub(channels[i % 4]).StreamEntropy()  # type: ignore[call-arg]
        await call.write(pb2.EntropyRequest(bytes_needed=MIB, sequence_id=i))
        calls.append(call)
    await asyncio.sleep(1.0)  # let the server answer or refuse every request
    held = await asyncio.to_thread(settled_rss, pid)
    refused = 0
    for call in calls:
        if call.done() and await call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            refused += 1
        call.cancel()
    for channel in channels:
        await channel.close(None)
    return held, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-path", default=None)
    parser.add_argument("--server-args", default="")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.server_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.server_path, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qr_entropy_server", "--address", "127.0.0.1:0",
         *shlex.split(args.server_args)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    address = proc.stdout.readline().split()[-1]
    try:
        start = settled_rss(proc.pid)
        held, refused = asyncio.run(_streams(address, proc.pid))
        time.sleep(2.0)  # the budget checks the handed-over responses every second
        after = settled_rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    print(
        f"server {args.server_path or 'this tree'} {args.server_args or '(default flags)'}: "
        f"RSS {start:.0f} MiB at start, {held:.0f} MiB with {STREAMS} unread 1 MiB streams "
        f"({refused} refused RESOURCE_EXHAUSTED), {after:.0f} MiB after the clients left"
    )


if __name__ == "__main__":
    main()
