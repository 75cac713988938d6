"""Experiment arms in one ``vllm serve``: a QRNG arm and a control arm side by side.

One real ``qr-entropy-server`` process (unix socket, bidirectional streaming)
feeds the ``qrng`` arm; the ``control`` arm uses the operating system. One
vLLM server for the module (``QR_SOURCES`` names both arms); records are read
from its ``QR_RECORD_PATH``. The ``qrng`` arm is calibrated: before vLLM starts,
the real ``qr-entropy calibrate --arm qrng`` measures the entropy server (60
blocks of the default 20,480 bytes; only the plumbing is under test here, not
the calibration's precision), and the arm's ``calibration_path`` points at the
file; ``control`` has none. The last test kills the entropy server. The first
runs the two-arm demo (``python -m qr_vllm.demo --arms``) in-process on the
tiny model, before the server starts.
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
from qr_core.records import TokenSamplingRecord
from qr_vllm import calibrated_hash

from .serve_helpers import (
    Server,
    post,
    records_for,
    start_entropy_server,
    start_server,
    stop,
    stop_group,
)

pytestmark = pytest.mark.slow

JustInTime = Callable[[Iterable[TokenSamplingRecord]], None]


@dataclass
class ArmServers:
    base_url: str
    model: str
    records: Path
    entropy: subprocess.Popen[str]
    calibration: Calibration
    """The ``qrng`` arm's calibration."""


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
    entropy = start_entropy_server(sock, workdir / "entropy.log")
    records = workdir / "records.jsonl"
    sources = {
        "qrng": {
            "entropy_source_type": "quantum_grpc",
            "grpc_server_address": f"unix://{sock}",
            "grpc_mode": "bidi_streaming",
        },
        "control": {"entropy_source_type": "system"},
    }
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
        }
    )
    server: Server | None = None
    try:
        server = start_server(
            serve_command("--max-model-len", "512", "--seed", "0"), env, workdir, "vllm"
        )
        yield ArmServers(server.base_url, str(tiny_model), records, entropy, calibration)
    finally:
        if server is not None:
            stop_group(server.proc)
        stop(entropy, signal.SIGTERM)
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
