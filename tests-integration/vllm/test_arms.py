"""Experiment arms in one ``vllm serve``: a QRNG arm and a control arm side by side.

One real ``qr-entropy-server`` process (unix socket, bidirectional streaming)
feeds the ``qrng`` arm; the ``control`` arm uses the operating system. One
vLLM server for the module (``QR_SOURCES`` names both arms); records are read
from its ``QR_RECORD_PATH``. The ``qrng`` arm is calibrated: before vLLM starts,
the real ``qr-entropy calibrate --arm qrng`` measures the entropy server (60
blocks of the default 20,480 bytes; only the plumbing is under test here, not
the calibration's precision), and the arm's ``calibration_path`` points at the
file; ``control`` has none. The qrng server requires an API key, which the arm
sends. A third arm, ``slow``, reads a device throttled to 50 kB/s (the entropy
budget). The engine serves its metrics (``QR_METRICS_PORT``); the tests scrape
them and parse them with prometheus-client's text parser. The kill test kills
the qrng server; the last test restarts it with another key (reason
``configuration``). The first runs the two-arm demo (``python -m qr_vllm.demo
--arms``) in-process on the tiny model, before the server starts.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qr_core import Calibration, load_calibration
from qr_core.analysis.cli import EXIT_CONFIG, EXIT_OK
from qr_core.analysis.cli import main as qr_analyze
from qr_core.records import TokenSamplingRecord, read_records
from qr_entropy import CONFIGURATION_REASON
from qr_vllm import calibrated_hash

from .serve_helpers import (
    Server,
    free_port,
    metric,
    post,
    records_for,
    scrape,
    start_entropy_server,
    start_server,
    stop,
    stop_group,
)

pytestmark = pytest.mark.slow

JustInTime = Callable[[Iterable[TokenSamplingRecord]], None]

KEY = "qrng-key-one"
"""The API key the ``qrng`` arm's server requires (and the arm sends)."""
SLOW_RATE = 50_000
"""Bytes per second of the ``slow`` arm's device (the throttled test backend)."""
THROTTLED = Path(__file__).resolve().parents[2] / "packages" / "qr-entropy-server" / "tests"


@dataclass
class ArmServers:
    base_url: str
    model: str
    records: Path
    entropy: subprocess.Popen[str]
    calibration: Calibration
    """The ``qrng`` arm's calibration."""
    metrics_port: int
    """The engine's ``QR_METRICS_PORT`` (one rank)."""
    log: Path
    """The ``vllm serve`` output."""
    sock: Path
    """The ``qrng`` arm's unix socket."""
    workdir: Path
    started: list[subprocess.Popen[str]]
    """Entropy servers a test started; stopped with the module."""


@pytest.fixture(scope="module")
def arms(
    tiny_model: Path,
    serve_command: Callable[..., list[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ArmServers]:
    workdir = tmp_path_factory.mktemp("arms")
    # Unix socket paths are limited to about 100 bytes: keep it short.
    sock_dir = Path(tempfile.mkdtemp(prefix="qra"))
    sock = sock_dir / "e.sock"
    entropy = start_entropy_server(sock, workdir / "entropy.log", env={"QR_SERVER_API_KEY": KEY})
    # The `slow` arm's device makes SLOW_RATE bytes per second (the budget test).
    slow_sock = sock_dir / "s.sock"
    path = os.pathsep.join(p for p in (str(THROTTLED), os.environ.get("PYTHONPATH")) if p)
    slow = start_entropy_server(
        slow_sock,
        workdir / "slow.log",
        "--backend",
        "throttled_backend:ThrottledBackend",
        env={"PYTHONPATH": path, "QR_TEST_RATE": str(SLOW_RATE)},
    )
    records = workdir / "records.jsonl"
    sources: dict[str, dict[str, object]] = {
        "qrng": {
            "entropy_source_type": "quantum_grpc",
            "grpc_server_address": f"unix://{sock}",
            "grpc_mode": "bidi_streaming",
            "grpc_api_key": KEY,
            # Half-open retries every second once the server is gone (the restart test).
            "cb_recovery_window_s": 1.0,
        },
        "control": {"entropy_source_type": "system"},
        "slow": {
            "entropy_source_type": "quantum_grpc",
            "grpc_server_address": f"unix://{slow_sock}",
            "grpc_mode": "bidi_streaming",
        },
    }
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    calibration = _calibrate_arm(
        {**env, "QR_ENTROPY_SOURCE_TYPE": "system", "QR_SOURCES": json.dumps(sources)},
        workdir / "qrng-calibration.json",
    )
    sources["qrng"]["calibration_path"] = str(workdir / "qrng-calibration.json")
    env.update(
        {
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "QR_ENTROPY_SOURCE_TYPE": "system",
            "QR_SOURCES": json.dumps(sources),
            "QR_FALLBACK_MODE": "system",
            "QR_RECORD_PATH": str(records),
            "QR_RECORD_FLUSH_INTERVAL_S": "0.05",
            "QR_LOG_LEVEL": "none",
            "QR_METRICS_PORT": str(metrics_port),
        }
    )
    server: Server | None = None
    started: list[subprocess.Popen[str]] = []
    try:
        server = start_server(
            serve_command("--max-model-len", "512", "--seed", "0"), env, workdir, "vllm"
        )
        yield ArmServers(
            server.base_url,
            str(tiny_model),
            records,
            entropy,
            calibration,
            metrics_port,
            server.log,
            sock,
            workdir,
            started,
        )
    finally:
        if server is not None:
            stop_group(server.proc)
        for proc in (entropy, slow, *started):
            stop(proc, signal.SIGTERM)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _calibrate_arm(env: dict[str, str], output: Path) -> Calibration:
    """``qr-entropy calibrate --arm qrng``: the real command against the real server."""
    command = ["calibrate", "--arm", "qrng", "--blocks", "60", "--output", str(output)]
    done = subprocess.run(
        [sys.executable, "-m", "qr_entropy.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    calibration = load_calibration(output)
    assert (calibration.source_type, calibration.blocks) == ("quantum_grpc", 60)
    return calibration


def _completion(
    servers: ArmServers, tag: str, arm: str, max_tokens: int, **xargs: object
) -> tuple[int, Any]:
    return post(
        f"{servers.base_url}/v1/completions",
        {
            "model": servers.model,
            "prompt": f"Request {tag} says",
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "return_token_ids": True,
            "vllm_xargs": {"qr_request_tag": tag, "qr_entropy_source": arm, **xargs},
        },
    )


def _concurrently(calls: dict[str, Callable[[], tuple[int, Any]]]) -> dict[str, list[int]]:
    """Send the requests at once (so the engine batches them); their token ids by tag."""
    results: dict[str, tuple[int, Any]] = {}

    def run(tag: str, call: Callable[[], tuple[int, Any]]) -> None:
        results[tag] = call()

    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    tokens: dict[str, list[int]] = {}
    for tag in calls:
        status, body = results[tag]
        assert status == 200, body
        tokens[tag] = body["choices"][0]["token_ids"]
    return tokens


def _by_step(records: Iterable[TokenSamplingRecord]) -> dict[int, list[TokenSamplingRecord]]:
    steps: dict[int, list[TokenSamplingRecord]] = collections.defaultdict(list)
    for r in records:
        steps[r.logits_ready_ns].append(r)
    return steps


def test_the_two_arm_demo_compares_system_against_sham(tiny_model: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    result = subprocess.run(
        [sys.executable, "-m", "qr_vllm.demo", "--arms", "--model", "tiny", "--max-tokens", "16"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "every record matches its token and arm" in out
    shared = re.search(r"; (\d+) engine steps sampled both arms", out)
    assert shared is not None, out
    assert int(shared.group(1)) >= 1, out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("arm=")}
    assert set(rows) == {"arm=system", "arm=sham"}, out
    # 4 requests per arm of 16 tokens each, none from a fallback.
    assert all(row[1] == "64" and row[2] == "0" for row in rows.values()), out
    assert re.search(r"^system - sham: difference of mean z [+-]\d", out, re.MULTILINE), out


def test_a_mixed_batch_records_each_arms_tokens_with_its_own_entropy(
    arms: ArmServers, assert_just_in_time: JustInTime, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = {f"mix-{arm}-{i}": arm for arm in ("qrng", "control") for i in range(3)}
    tokens = _concurrently(
        {
            tag: (lambda tag=tag, arm=arm: _completion(arms, tag, arm, 24))
            for tag, arm in plan.items()
        }
    )
    everything: list[TokenSamplingRecord] = []
    for tag, arm in plan.items():
        records = records_for(arms.records, tag, len(tokens[tag]))
        assert [r.token_id for r in records] == tokens[tag], tag
        assert [r.token_index for r in records] == list(range(len(tokens[tag])))
        assert all(r.arm == arm and not r.fallback for r in records)
        if arm == "qrng":
            assert all(r.entropy_source == "quantum_grpc" for r in records)
            assert all(r.sequence_id is not None for r in records)
        else:
            assert all(r.entropy_source == "system" for r in records)
            assert all(r.sequence_id is None for r in records)
        everything += records
    assert_just_in_time(everything)
    # Each arm's records carry its own calibration: the qrng arm's hash, none for control.
    cal = arms.calibration
    plain = {r.config_hash for r in everything if r.arm == "control"}
    assert len(plain) == 1
    (plain_hash,) = plain
    by_arm = {"qrng": (cal.sha256, calibrated_hash(plain_hash, cal)), "control": (None, plain_hash)}
    for r in everything:
        assert (r.calibration_sha256, r.config_hash) == by_arm[str(r.arm)]
    # The qrng arm's records carry its calibration's figures (schema 3).
    qrng = [r for r in everything if r.arm == "qrng"]
    assert {(r.calibration_blocks, r.calibration_mean, r.calibration_std) for r in qrng} == {
        (cal.blocks, cal.mean, cal.std)
    }
    assert {r.calibration_blocks for r in everything if r.arm == "control"} == {None}
    # qr-analyze --by arm expects one configuration per arm; without --by the two
    # calibrations' config hashes are still a mix it refuses.
    assert qr_analyze([str(arms.records)]) == EXIT_CONFIG
    capsys.readouterr()
    assert qr_analyze([str(arms.records), "--by", "arm", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    groups = {g["label"]: g for g in report["groups"]}
    # The calibration term in the qrng arm's standard error: sqrt(1/n + 1/B), B = 60
    # blocks; the uncalibrated control arm's is sqrt(1/n).
    n_qrng, n_control = groups["arm=qrng"]["tokens"], groups["arm=control"]["tokens"]
    assert groups["arm=qrng"]["z"]["standard_error"] == pytest.approx(
        math.sqrt(1 / n_qrng + 1 / cal.blocks), rel=1e-9
    )
    assert groups["arm=qrng"]["calibration"]["blocks"] == cal.blocks
    assert groups["arm=qrng"]["ks"]["method"] == "bootstrap"
    assert groups["arm=control"]["z"]["standard_error"] == pytest.approx(
        math.sqrt(1 / n_control), rel=1e-9
    )
    assert groups["arm=control"]["calibration"]["blocks"] is None
    test = report["comparison"]["test"]  # qrng against control: one calibration's offset
    assert test["model_standard_error"] == pytest.approx(
        math.sqrt(1 / n_qrng + 1 / n_control + 1 / cal.blocks), rel=1e-9
    )
    # Steps whose rows used both arms: one fetch per arm, each after the logits.
    mixed = [
        rows
        for rows in _by_step(everything).values()
        if {r.arm for r in rows} == {"qrng", "control"}
    ]
    assert mixed, "the concurrent requests never shared a step"
    for rows in mixed:
        qrng = [r for r in rows if r.arm == "qrng"]
        control = [r for r in rows if r.arm == "control"]
        assert len({(r.sequence_id, r.entropy_requested_ns) for r in qrng}) == 1
        assert len({r.entropy_requested_ns for r in control}) == 1


def test_a_scrape_counts_each_arms_tokens_as_returned(arms: ArmServers) -> None:
    before = scrape(arms.metrics_port)
    plan = {f"metrics-{arm}-{i}": arm for arm in ("qrng", "control") for i in range(2)}
    tokens = _concurrently(
        {
            tag: (lambda tag=tag, arm=arm: _completion(arms, tag, arm, 16))
            for tag, arm in plan.items()
        }
    )
    records = {tag: records_for(arms.records, tag, len(tokens[tag])) for tag in plan}
    after = scrape(arms.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    source = {"qrng": "quantum_grpc", "control": "system"}
    for arm in ("qrng", "control"):
        tags = [t for t, a in plan.items() if a == arm]
        returned = sum(len(tokens[t]) for t in tags)
        assert delta("qr_tokens_sampled_total", arm=arm, source=source[arm]) == returned
        z = sum(r.z_score for t in tags for r in records[t])
        assert math.isclose(delta("qr_z_sum", arm=arm), z, rel_tol=1e-9, abs_tol=1e-9)
        assert delta("qr_fallback_tokens_total", arm=arm, reason="unavailable") == 0
        assert delta("qr_entropy_fetch_seconds_count", arm=arm) >= 1
        assert metric(after, "qr_breaker_open", arm=arm) == 0
        assert metric(after, "qr_entropy_demand_bytes_per_second", arm=arm) > 0
    assert delta("qr_records_written_total") == sum(len(t) for t in tokens.values())
    assert metric(after, "qr_records_failed_total") == 0
    # The server reports its device's rate; the operating system has none.
    assert metric(after, "qr_entropy_device_bytes_per_second", arm="qrng") > 0
    assert ("qr_entropy_device_bytes_per_second", frozenset({("arm", "control")})) not in after
    # Issue 23: each qrng record says when the server's fresh read began, after the
    # engine asked (one host, one clock); a local source says nothing.
    for tag, arm in plan.items():
        for r in records[tag]:
            if arm == "control":
                assert r.entropy_read_started_ns is None
                continue
            assert r.entropy_read_started_ns is not None, r
            assert r.entropy_generated_ns is not None, r
            assert r.entropy_requested_ns <= r.entropy_read_started_ns, r
            assert r.entropy_read_started_ns <= r.entropy_generated_ns <= r.entropy_received_ns


def test_an_unknown_arm_gets_400_listing_the_configured_arms(arms: ArmServers) -> None:
    url = f"{arms.base_url}/v1/completions"
    status, body = post(
        url,
        {
            "model": arms.model,
            "prompt": "Hi",
            "max_tokens": 2,
            "vllm_xargs": {"qr_entropy_source": "qrgn"},
        },
    )
    assert status == 400, body
    text = json.dumps(body)
    assert "qr_entropy_source='qrgn'" in text
    assert "'control', 'qrng'" in text
    status, body = _completion(arms, "after-400", "control", 2)
    assert status == 200, body


def test_a_calibrated_arm_refuses_overrides_of_what_it_was_measured_for(
    arms: ArmServers,
) -> None:
    status, body = _completion(arms, "cal-400", "qrng", 2, qr_sample_count=512)
    assert status == 400, body
    text = json.dumps(body)
    assert "qr_entropy_source='qrng' is calibrated" in text
    assert "calibration sample_count=20480 does not match sample_count=512" in text
    # The uncalibrated arm may change it.
    status, body = _completion(arms, "control-512", "control", 2, qr_sample_count=512)
    assert status == 200, body
    (record, _) = records_for(arms.records, "control-512", 2)
    assert (record.sample_count, record.calibration_sha256) == (512, None)


def test_the_budget_warns_when_an_arm_asks_for_more_than_its_device_makes(
    arms: ArmServers,
) -> None:
    # Three rows of 20,480 bytes per step from a device of 50 kB/s: about 1.2 s of
    # reading per step, far more than the engine's own work, for 16 steps (the
    # demand is averaged over at least 10 s).
    tags = [f"slow-{i}" for i in range(3)]
    tokens = _concurrently(
        {tag: (lambda tag=tag: _completion(arms, tag, "slow", 16)) for tag in tags}
    )
    samples = scrape(arms.metrics_port)
    device = metric(samples, "qr_entropy_device_bytes_per_second", arm="slow")
    assert 0 < device <= SLOW_RATE * 1.05, device  # the throttled device is never faster
    ratio = metric(samples, "qr_entropy_budget_ratio", arm="slow")
    assert ratio > 0.8, ratio
    log = arms.log.read_text()
    (warning,) = [line for line in log.splitlines() if "qr entropy budget: arm" in line]
    assert "arm 'slow' asks for" in warning
    assert "(above 80%)" in warning
    for tag in tags:
        records = records_for(arms.records, tag, len(tokens[tag]))
        assert not any(r.fallback for r in records)


def test_killing_the_qrng_server_flags_fallbacks_in_its_arm_only(
    arms: ArmServers, assert_just_in_time: JustInTime
) -> None:
    result: dict[str, list[int]] = {}

    def generate() -> None:
        result.update(
            _concurrently(
                {
                    "kill-qrng": lambda: _completion(arms, "kill-qrng", "qrng", 200),
                    "kill-control": lambda: _completion(arms, "kill-control", "control", 200),
                }
            )
        )

    thread = threading.Thread(target=generate)
    thread.start()
    before = records_for(arms.records, "kill-qrng", 5)
    assert len(before) >= 5, "generation did not start"
    arms.entropy.kill()
    arms.entropy.wait()
    thread.join(timeout=300)
    assert not thread.is_alive()
    qrng = records_for(arms.records, "kill-qrng", 200)
    control = records_for(arms.records, "kill-control", 200)
    assert [r.token_id for r in qrng] == result["kill-qrng"]
    assert [r.token_id for r in control] == result["kill-control"]
    assert (qrng[0].fallback, qrng[0].entropy_source) == (False, "quantum_grpc")
    assert (qrng[-1].fallback, qrng[-1].entropy_source) == (True, "system")
    assert qrng[-1].fallback_reason
    first = next(i for i, r in enumerate(qrng) if r.fallback)
    assert all(r.fallback for r in qrng[first:]), "the server stays dead"
    # Fallback rows keep their arm's calibration (and config hash), as with QR_CALIBRATION_PATH.
    assert {r.calibration_sha256 for r in qrng} == {arms.calibration.sha256}
    assert {r.calibration_sha256 for r in control} == {None}
    assert all(r.arm == "control" and not r.fallback for r in control)
    assert all(r.entropy_source == "system" and r.fallback_reason is None for r in control)
    # After the kill, steps with rows of both arms fell back in the qrng rows only.
    shared = [
        rows
        for rows in _by_step([*qrng[first:], *control]).values()
        if {r.arm for r in rows} == {"qrng", "control"}
    ]
    assert shared, "the two requests never shared a step after the kill"
    for rows in shared:
        assert {(r.arm, r.fallback) for r in rows} == {("qrng", True), ("control", False)}
    assert_just_in_time([*qrng, *control])


def test_a_server_restarted_with_another_key_falls_back_with_reason_configuration(
    arms: ArmServers,
) -> None:
    """The qrng arm's server, killed above, comes back requiring another key: the
    arm's tokens fall back with reason ``configuration``, in records and metrics."""
    samples = scrape(arms.metrics_port)
    qrng = [r for r in read_records(arms.records).records if r.arm == "qrng"]
    down = [r for r in qrng if r.fallback]
    assert down, "the kill test left fallbacks"
    assert all(r.fallback_reason != CONFIGURATION_REASON for r in down)
    unavailable = metric(samples, "qr_fallback_tokens_total", arm="qrng", reason="unavailable")
    assert unavailable == len(down)
    new = start_entropy_server(
        arms.sock, arms.workdir / "entropy-2.log", env={"QR_SERVER_API_KEY": "qrng-key-two"}
    )
    arms.started.append(new)
    # The client reconnects within its backoff (1 s at most) and the circuit lets a
    # call through within cb_recovery_window_s (1 s): ask until a token shows it.
    for attempt in range(60):  # a liveness bound, not a timing
        tag = f"restart-{attempt}"
        status, body = _completion(arms, tag, "qrng", 4)
        assert status == 200, body
        reasons = {r.fallback_reason for r in records_for(arms.records, tag, 4)}
        if CONFIGURATION_REASON in reasons:
            break
    else:
        raise AssertionError("no token fell back with reason 'configuration'")
    status, body = _completion(arms, "restart-after", "qrng", 8)
    assert status == 200, body
    after = records_for(arms.records, "restart-after", 8)
    assert {(r.fallback, r.fallback_reason, r.entropy_source) for r in after} == {
        (True, CONFIGURATION_REASON, "system")
    }
    everything = read_records(arms.records).records
    refused = [
        r for r in everything if r.arm == "qrng" and r.fallback_reason == CONFIGURATION_REASON
    ]
    samples = scrape(arms.metrics_port)
    assert metric(
        samples, "qr_fallback_tokens_total", arm="qrng", reason=CONFIGURATION_REASON
    ) == len(refused)
    assert "refuses this configuration" in arms.log.read_text()
