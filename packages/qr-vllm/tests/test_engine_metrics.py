"""The engine's Prometheus metrics: counted per step, served on QR_METRICS_PORT + rank.

The processor is built by vLLM's own V1 loader (as in test_processor.py) and its
endpoint is scraped over HTTP and parsed with prometheus-client's text parser.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from vllm import SamplingParams

from qr_core.records import read_records
from qr_entropy import EntropyFetch
from qr_vllm import AdapterConfig, QRParamsError, QRSamplingLogitsProcessor
from qr_vllm._metrics import EngineMetrics
from qr_vllm._metrics_endpoint import serve_rank
from qr_vllm._record_router import data_parallel_index
from qr_vllm.step import ArmTally

from .engine_parts import add_requests, built_processor

VOCAB = 64
ARMS = {
    "m1": {"entropy_source_type": "mock_uniform", "mock_uniform_seed": 1},
    "m2": {"entropy_source_type": "mock_uniform", "mock_uniform_seed": 2},
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> Samples:
    """Every sample of the endpoint, by sample name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _params(arm: str | None, tag: str) -> SamplingParams:
    args: dict[str, object] = {"qr_request_tag": tag}
    if arm is not None:
        args["qr_entropy_source"] = arm
    return SamplingParams(extra_args=args)


@pytest.fixture
def port(seeded_env: pytest.MonkeyPatch) -> int:
    """Two seeded arms beside the default source, and a free metrics port."""
    chosen = _free_port()
    seeded_env.setenv("QR_SOURCES", json.dumps(ARMS))
    seeded_env.setenv("QR_METRICS_PORT", str(chosen))
    return chosen


def test_a_scrape_counts_each_arms_tokens_z_and_records(
    port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QR_RECORD_PATH", str(tmp_path / "records.jsonl"))
    proc = built_processor()
    before = scrape(port)
    assert value(before, "qr_records_written_total") == 0.0
    assert {value(before, "qr_breaker_open", arm=a) for a in ("default", "m1", "m2")} == {0.0}
    outs = add_requests(
        proc, _params("m1", "a"), _params(None, "d"), _params("m1", "b"), _params("m2", "c")
    )
    steps = 5
    for step in range(steps):
        logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(step))
        proc.apply(logits)
        for row, out in enumerate(outs):
            out.append(int(logits[row].argmax()))
    records = proc.diagnostic_records()
    after = scrape(port)
    tokens = {"m1": 2 * steps, "default": steps, "m2": steps}
    for arm, count in tokens.items():
        assert value(after, "qr_tokens_sampled_total", arm=arm, source="mock_uniform") == count
        z = sum(r.z_score for r in records if (r.arm or "default") == arm)
        assert math.isclose(value(after, "qr_z_sum", arm=arm), z, rel_tol=1e-9, abs_tol=1e-9)
        # One fetch per arm per step, each timed.
        assert value(after, "qr_entropy_fetch_seconds_count", arm=arm) == steps
        assert value(after, "qr_entropy_demand_bytes_per_second", arm=arm) > 0
        assert value(after, "qr_fallback_tokens_total", arm=arm, reason="unavailable") == 0
    # Local sources report no device rate: no device gauge, no ratio.
    assert ("qr_entropy_device_bytes_per_second", frozenset({("arm", "m1")})) not in after
    assert value(after, "qr_records_written_total") == len(records) == 4 * steps
    assert len(read_records(tmp_path / "records.jsonl").records) == 4 * steps
    proc.close()
    with pytest.raises(urllib.error.URLError):
        scrape(port)  # the last processor of the process closed: the endpoint is gone


def test_a_dead_server_shows_fallbacks_and_an_open_breaker(
    seeded_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = _free_port()
    dead = {
        "dead": {
            "entropy_source_type": "quantum_grpc",
            "grpc_server_address": f"unix://{tmp_path}/none.sock",
            "grpc_retry_count": 0,
        }
    }
    seeded_env.setenv("QR_SOURCES", json.dumps(dead))
    seeded_env.setenv("QR_METRICS_PORT", str(port))
    proc = built_processor()
    (out,) = add_requests(proc, _params("dead", "x"))
    for step in range(4):  # the circuit opens after 3 failures (cb_max_consecutive_failures)
        logits = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(step))
        proc.apply(logits)
        out.append(int(logits[0].argmax()))
    samples = scrape(port)
    assert value(samples, "qr_tokens_sampled_total", arm="dead", source="system") == 4
    assert value(samples, "qr_fallback_tokens_total", arm="dead", reason="unavailable") == 4
    assert value(samples, "qr_breaker_open", arm="dead") == 1.0
    assert value(samples, "qr_breaker_open", arm="default") == 0.0
    proc.close()


def test_configuration_fallbacks_have_their_own_reason() -> None:
    metrics = EngineMetrics(None)

    def fetch(reason: str | None) -> EntropyFetch:
        return EntropyFetch(
            b"\0" * 8, "system", "os", None, 0, None, 2_000_000, True, reason, 1, None, None
        )

    metrics.observe([ArmTally("q", fetch("configuration"), 3, 0.5)])
    metrics.observe([ArmTally("q", fetch("quantum_grpc: EntropyUnavailableError: down"), 2, -1.0)])
    registry: CollectorRegistry = metrics.registry
    assert (
        registry.get_sample_value(
            "qr_fallback_tokens_total", {"arm": "q", "reason": "configuration"}
        )
        == 3
    )
    assert (
        registry.get_sample_value("qr_fallback_tokens_total", {"arm": "q", "reason": "unavailable"})
        == 2
    )
    assert registry.get_sample_value("qr_z_sum", {"arm": "q"}) == -0.5
    assert registry.get_sample_value("qr_entropy_fetch_seconds_sum", {"arm": "q"}) == 2 * 0.002


def test_a_busy_port_is_a_warning_and_the_engine_runs_without_it(
    seeded_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        seeded_env.setenv("QR_METRICS_PORT", str(busy))
        with caplog.at_level(logging.WARNING, logger="qr_vllm._metrics_endpoint"):
            proc = built_processor()
        (warning,) = [
            r.getMessage() for r in caplog.records if r.name == "qr_vllm._metrics_endpoint"
        ]
        assert f"cannot serve http://127.0.0.1:{busy}/metrics" in warning
        assert "runs without its metrics endpoint" in warning
        assert "QR_METRICS_PORT" in warning
        add_requests(proc, _params(None, "a"))
        logits = torch.randn(1, VOCAB)
        proc.apply(logits)
        assert int(torch.isfinite(logits[0]).sum()) == 1
        proc.close()


def test_processors_of_one_process_share_the_endpoint_newest_first(port: int) -> None:
    first = built_processor()
    second = built_processor()
    add_requests(second, _params("m2", "x"))
    second.apply(torch.randn(1, VOCAB))
    assert value(scrape(port), "qr_tokens_sampled_total", arm="m2", source="mock_uniform") == 1
    second.close()
    # The older processor's registry is served again (it counted nothing).
    assert value(scrape(port), "qr_tokens_sampled_total", arm="m2", source="mock_uniform") == 0
    first.close()


def test_port_zero_serves_nothing(seeded_env: pytest.MonkeyPatch) -> None:
    seeded_env.setenv("QR_METRICS_PORT", "0")
    proc = built_processor()
    assert proc._monitor is not None
    assert proc._monitor.endpoint is None
    proc.close()


def test_each_data_parallel_rank_serves_on_port_plus_rank() -> None:
    base = _free_port()
    config = SimpleNamespace(parallel_config=SimpleNamespace(data_parallel_index=2))
    rank = data_parallel_index(config)  # type: ignore[arg-type]
    assert rank == 2
    registry = CollectorRegistry()
    endpoint = serve_rank(registry, "127.0.0.1", base - rank, rank)
    assert endpoint is not None
    assert endpoint.url == f"http://127.0.0.1:{base}/metrics"
    scrape(base)
    endpoint.close()
    with pytest.raises(QRParamsError, match=r"QR_METRICS_PORT=65535: data-parallel rank 1"):
        serve_rank(registry, "127.0.0.1", 65535, 1)


@pytest.mark.parametrize(
    ("variable", "value", "match"),
    [
        ("QR_METRICS_PORT", "65536", r"QR_METRICS_PORT='65536'.*<= 65535"),
        ("QR_METRICS_PORT", "-1", r"QR_METRICS_PORT='-1'.*>= 0"),
        ("QR_METRICS_ADDRESS", "not an address", r"QR_METRICS_ADDRESS='not an address'"),
        ("QR_REQUIRE_SOURCES_AT_START", "maybe", r"QR_REQUIRE_SOURCES_AT_START='maybe'"),
    ],
)
def test_each_new_setting_refuses_values_out_of_bounds_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, match: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(QRParamsError, match=match):
        AdapterConfig.from_env()


def test_a_request_may_not_set_the_engine_settings() -> None:
    for key in ("qr_metrics_port", "qr_metrics_address", "qr_require_sources_at_start"):
        with pytest.raises(ValueError, match=key):
            QRSamplingLogitsProcessor.validate_params(SamplingParams(extra_args={key: 1}))


MONITORING = Path(__file__).resolve().parents[3] / "deployments" / "monitoring"


def test_every_engine_metric_the_dashboard_and_alerts_use_is_exposed() -> None:
    """deployments/monitoring's dashboard and alert rules name only metrics the engine
    serves (every family is exposed, counted or not)."""
    files = [MONITORING / "grafana-dashboard.json", MONITORING / "rules.yml"]
    if not all(f.is_file() for f in files):
        pytest.skip("deployments/monitoring is not beside this package (not a checkout)")
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    used = set(re.findall(r"\bqr_(?!entropy_server_)[a-z_]+", text))
    assert used, "the dashboard names no engine metric"
    metrics = EngineMetrics(None)
    exposed = {
        family.name
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    # A family's samples: counter NAME_total, histogram NAME_bucket/_sum/_count.
    missing = [
        name
        for name in sorted(used)
        if name not in exposed and re.sub(r"_(bucket|sum|count|total)$", "", name) not in exposed
    ]
    assert not missing, f"not exposed by the engine: {missing}"
