"""The reference server's own share of a bidi exchange: bare client, three servers.

One bare grpcio client (synchronous API, no project code: ``BareBidi`` of
``bench_grpc``) exchanges one request for 20,480 bytes at a time, over one
stream per server, with: the bare grpcio floor server of ``bench_grpc``
(``prefix + os.urandom(20480)`` per request), ``qr-entropy-server`` (urandom
backend) from this tree and, with ``--server-path DIR``, the same server from
another source tree (``DIR/packages/qr-entropy-server/src``, e.g. an older
commit unpacked with ``git archive``). The client is the same for all, so the
difference to the floor is the server's. The servers take turns in blocks of
25 exchanges, and the order of the turns rotates each round, so that no server
always follows the same one.

Issue 12, item 7 asks the project's bidi client against the reference server
for p50 <= 1.15 x this floor; this script shows how much of that the server
takes.

With ``--metrics`` this tree's server also serves Prometheus metrics
(``--metrics-port 0``; nothing scrapes it): the counters run either way, so the
flag shows the endpoint's own cost, which should be none per exchange.

Usage: ``python benchmarks/bench_server_overhead.py [--transport unix|tcp]
[--repeat N] [--server-path DIR] [--metrics]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import bench_grpc as bench
import grpc

from qr_entropy.grpc.testing import encode_request

_STREAM_PATH = "/qr_entropy.EntropyService/StreamEntropy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("unix", "tcp"), default="unix")
    parser.add_argument("--repeat", type=int, default=3000, help="timed exchanges each (3000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed exchanges first (100)")
    parser.add_argument("--server-path", type=Path, help="another source tree to compare with")
    parser.add_argument(
        "--metrics", action="store_true", help="this tree's server with --metrics-port 0"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:

        def address(name: str) -> str:
            if args.transport == "tcp":
                return "127.0.0.1:0"
            return f"unix://{Path(tmp) / name}.sock"

        floor_args = [bench.__file__, "--floor-server", "grpc", address("floor")]
        servers = {"floor (bare grpcio)": bench.start_server(floor_args)}
        extra = ["--metrics-port", "0"] if args.metrics else []
        label = "reference, this tree" + (" (--metrics-port)" if args.metrics else "")
        servers[label] = bench.start_server([*bench.entropy_server_args(address("new")), *extra])
        if args.server_path is not None:
            src = str(args.server_path.resolve() / "packages" / "qr-entropy-server" / "src")
            servers[f"reference, {args.server_path}"] = bench.start_server(
                bench.entropy_server_args(address("old")), src
            )
        channels = [grpc.insecure_channel(addr) for _, addr in servers.values()]
        try:
            request = encode_request(bench.ONE, 7)
            exchanges = {
                label: bench.BareBidi(channel)
                if label.startswith("floor")
                else bench.BareBidi(channel, _STREAM_PATH, request)
                for label, channel in zip(servers, channels, strict=True)
            }
            load = os.getloadavg()[0]
            results = bench.timed_together(dict(exchanges), args.repeat, args.warmup)
            for exchange in exchanges.values():
                exchange.end()
        finally:
            for channel in channels:
                channel.close()
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    floor_p50 = next(iter(results.values()))[0]
    print(
        f"bare bidi client, {args.transport}, 20,480 bytes, {args.repeat} exchanges each, "
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    for label, (p50, p99) in results.items():
        print(
            f"  {label:<40} p50 {p50:7.1f} us  p99 {p99:7.1f} us  "
            f"p50 over the floor {p50 - floor_p50:+6.1f} us ({p50 / floor_p50:.3f} x)"
        )


if __name__ == "__main__":
    main()
