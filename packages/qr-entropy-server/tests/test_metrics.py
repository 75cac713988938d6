"""``--metrics-port``: a real server process scraped over HTTP, parsed by prometheus-client.

Every figure is read from the server's own counters at scrape time and checked
against what the test's client did: bytes served equal bytes fetched, requests
by method and status code, the device's measured rate (the entropy budget) in
the metric and in every response (field 6), the over-long varint named.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from qr_entropy_server.cli import METRICS_PREFIX
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

parser = pytest.importorskip("prometheus_client.parser")

Spawn = Callable[..., Any]
SCRAPE_LIMIT_S = 30.0  # a hang guard for the HTTP request, not a speed target


def _metrics_url(server: Any) -> str:
    """The URL the server printed right after its ready line."""
    line = server.proc.stdout.readline()
    assert line.startswith(METRICS_PREFIX), line
    return str(line[len(METRICS_PREFIX) :].strip())


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(url, timeout=SCRAPE_LIMIT_S) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests(samples: dict[Any, float], method: str, code: str) -> float:
    key = ("qr_entropy_server_requests_total", (("code", code), ("method", method)))
    return samples.get(key, 0.0)


@pytest.fixture
def channel() -> Iterator[Callable[[str], grpc.Channel]]:
    opened: list[grpc.Channel] = []

    def open_channel(address: str) -> grpc.Channel:
        opened.append(grpc.insecure_channel(address))
        return opened[-1]

    yield open_channel
    for each in opened:
        each.close()


def test_a_scrape_counts_what_the_client_fetched(
    spawn: Spawn, channel: Callable[[str], grpc.Channel]
) -> None:
    server = spawn("--address", "127.0.0.1:0", "--metrics-port", "0", "--max-bytes", "65536")
    url = _metrics_url(server)
    assert url.startswith("http://127.0.0.1:")
    stub = pb2_grpc.EntropyServiceStub(channel(server.address))
    fetched = 0
    rates = []
    for i, n in enumerate((20_480, 1, 4096, 65_536), start=1):
        reply = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=n, sequence_id=i))
        fetched += len(reply.data)
        rates.append(reply.device_bytes_per_second)
    sizes = [100, 20_480, 7, 333, 20_480]
    replies = list(stub.StreamEntropy(iter(pb2.EntropyRequest(bytes_needed=n) for n in sizes)))
    fetched += sum(len(r.data) for r in replies)
    rates += [r.device_bytes_per_second for r in replies]
    refused = 0
    for bad in (pb2.EntropyRequest(bytes_needed=0), pb2.EntropyRequest(bytes_needed=65_537)):
        with pytest.raises(grpc.RpcError):
            stub.GetEntropy(bad)
        refused += 1
    samples = scrape(url)
    assert samples[("qr_entropy_server_bytes_total", ())] == fetched
    assert requests(samples, "GetEntropy", "OK") == 4
    assert requests(samples, "StreamEntropy", "OK") == len(sizes)
    assert requests(samples, "GetEntropy", "INVALID_ARGUMENT") == 1
    assert requests(samples, "GetEntropy", "RESOURCE_EXHAUSTED") == 1
    assert refused == 2
    # The histogram holds at least every answered request's read (and the self-test's).
    assert samples[("qr_entropy_server_generate_seconds_count", ())] >= 4 + len(sizes)
    assert samples[("qr_entropy_server_healthy", ())] == 1
    assert samples[("qr_entropy_server_streams", ())] == 0
    rate = samples[("qr_entropy_server_device_bytes_per_second", ())]
    assert rate > 0
    # Every response carried the rate (field 6), measured by the self-test before the first.
    assert all(r > 0 for r in rates)
    for test in ("repetition_count", "adaptive_proportion"):
        key = ("qr_entropy_server_health_test_failures_total", (("test", test),))
        assert samples[key] == 0
    info = [k for k in samples if k[0] == "qr_entropy_server_info"]
    assert len(info) == 1
    assert dict(info[0][1])["device_id"].startswith("urandom@")
    assert ("process_resident_memory_bytes", ()) in samples
    assert server.stop() == 0


def test_a_refused_api_key_is_counted(spawn: Spawn, channel: Callable[[str], grpc.Channel]) -> None:
    server = spawn("--address", "127.0.0.1:0", "--metrics-port", "0", "--api-key", "right")
    url = _metrics_url(server)
    stub = pb2_grpc.EntropyServiceStub(channel(server.address))
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as info:
            stub.GetEntropy(pb2.EntropyRequest(bytes_needed=8), metadata=(("api-key", "wrong"),))
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError):
        list(stub.StreamEntropy(iter([pb2.EntropyRequest(bytes_needed=8)])))
    ok = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=8), metadata=(("api-key", "right"),))
    samples = scrape(url)
    assert requests(samples, "GetEntropy", "UNAUTHENTICATED") == 3
    assert requests(samples, "StreamEntropy", "UNAUTHENTICATED") == 1
    assert requests(samples, "GetEntropy", "OK") == 1
    assert samples[("qr_entropy_server_bytes_total", ())] == len(ok.data)
    server.stop()


def test_the_budget_of_a_throttled_device_is_measured_and_reported(
    spawn: Spawn, channel: Callable[[str], grpc.Channel]
) -> None:
    # A device capped at 1 MB/s: sleeping n / rate before each read, no read beats the cap,
    # so the measured rate can only be lower (a busy machine), never higher.
    cap = 1_000_000
    server = spawn(
        "--backend",
        "throttled_backend:ThrottledBackend",
        "--address",
        "127.0.0.1:0",
        "--metrics-port",
        "0",
        env={"QR_TEST_RATE": str(cap)},
    )
    url = _metrics_url(server)
    measured = scrape(url)[("qr_entropy_server_device_bytes_per_second", ())]
    assert 0 < measured <= cap  # from the self-test, before any request
    stub = pb2_grpc.EntropyServiceStub(channel(server.address))
    replies = [stub.GetEntropy(pb2.EntropyRequest(bytes_needed=20_480)) for _ in range(3)]
    assert all(0 < r.device_bytes_per_second <= cap for r in replies)
    after = scrape(url)[("qr_entropy_server_device_bytes_per_second", ())]
    assert 0 < after <= cap
    server.stop()


def test_an_overlong_varint_is_named(spawn: Spawn, channel: Callable[[str], grpc.Channel]) -> None:
    server = spawn("--address", "127.0.0.1:0", "--metrics-port", "0")
    url = _metrics_url(server)
    call = channel(server.address).unary_unary("/qr_entropy.EntropyService/GetEntropy")
    eleven = b"\x08" + b"\xff" * 10 + b"\x01"  # field 1 as a varint of 11 bytes
    with pytest.raises(grpc.RpcError) as info:
        call(eleven)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert "field 1 (bytes_needed)" in details
    assert "varint of 11 bytes at byte 1" in details
    assert "got 0" not in details
    assert requests(scrape(url), "GetEntropy", "INVALID_ARGUMENT") == 1
    server.stop()


def test_metrics_are_off_by_default(spawn: Spawn) -> None:
    server = spawn("--address", "127.0.0.1:0", "-v")  # -v: the info line would say "metrics on"
    assert server.stop() == 0
    assert "serving qr_entropy.EntropyService" in server.stderr
    assert "metrics on" not in server.stderr


def test_the_flag_without_the_extra_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from qr_entropy_server.cli import main\n"
        "sys.exit(main(['--address', '127.0.0.1:0', '--metrics-port', '0']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert "--metrics-port needs the optional 'metrics' extra" in done.stderr
    assert "qr-entropy-server[metrics]" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-port", "70000"], "--metrics-port must be 0-65535"),
        (["--metrics-port", ""], "--metrics-port: empty value"),
        (["--metrics-address", "", "--metrics-port", "0"], "--metrics-address: empty value"),
    ],
)
def test_bad_metrics_flags_exit_2_naming_the_flag(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], args: list[str], message: str
) -> None:
    done = run_cli("--address", "127.0.0.1:0", *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_busy_metrics_port_exits_2_naming_it(
    spawn: Spawn, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    server = spawn("--address", "127.0.0.1:0", "--metrics-port", "0")
    port = _metrics_url(server).rsplit(":", 1)[1].split("/")[0]
    done = run_cli("--address", "127.0.0.1:0", "--metrics-port", port)
    assert done.returncode == 2
    assert f"--metrics-port {port} cannot be bound" in done.stderr
    server.stop()
