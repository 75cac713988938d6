"""``vllm serve`` with qr sampling, fed by a real qr-entropy-server over a unix socket.

One entropy server (bidirectional streaming) and one vLLM server for the
module. Records are read from the ``QR_RECORD_PATH`` file the server writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qr_core.records import TokenSamplingRecord, read_records

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
class Servers:
    base_url: str
    model: str
    records: Path
    entropy: subprocess.Popen[str]
    vllm_log: Path


@pytest.fixture(scope="module")
def servers(
    tiny_model: Path,
    serve_command: Callable[..., list[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Servers]:
    workdir = tmp_path_factory.mktemp("serve")
    # Unix socket paths are limited to about 100 bytes: keep it short.
    sock_dir = Path(tempfile.mkdtemp(prefix="qrs"))
    sock = sock_dir / "e.sock"
    entropy = start_entropy_server(sock, workdir / "entropy.log")
    records = workdir / "records.jsonl"
    env = {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
        "QR_GRPC_SERVER_ADDRESS": f"unix://{sock}",
        "QR_GRPC_MODE": "bidi_streaming",
        "QR_FALLBACK_MODE": "system",
        "QR_RECORD_PATH": str(records),
        "QR_RECORD_FLUSH_INTERVAL_S": "0.05",
        "QR_LOG_LEVEL": "none",
    }
    server: Server | None = None
    try:
        server = start_server(
            serve_command("--max-model-len", "512", "--seed", "0"), env, workdir, "vllm"
        )
        assert entropy.poll() is None, (workdir / "entropy.log").read_text()
        yield Servers(server.base_url, str(tiny_model), records, entropy, server.log)
    finally:
        if server is not None:
            stop_group(server.proc)
        stop(entropy, signal.SIGTERM)
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_completions_with_vllm_xargs(servers: Servers, assert_just_in_time: JustInTime) -> None:
    status, body = post(
        f"{servers.base_url}/v1/completions",
        {
            "model": servers.model,
            "prompt": "The nature of consciousness is",
            "max_tokens": 8,
            "return_token_ids": True,
            "vllm_xargs": {"qr_request_tag": "http-cmpl", "qr_top_k": 5},
        },
    )
    assert status == 200, body
    tokens = body["choices"][0]["token_ids"]
    records = records_for(servers.records, "http-cmpl", len(tokens))
    assert [r.token_id for r in records] == tokens
    assert all(r.top_k == 5 and r.num_candidates <= 5 for r in records)
    assert all(r.entropy_source == "quantum_grpc" and not r.fallback for r in records)
    assert all(r.sequence_id is not None for r in records)
    assert_just_in_time(records)


def test_chat_completions_with_vllm_xargs(
    servers: Servers, assert_just_in_time: JustInTime
) -> None:
    status, body = post(
        f"{servers.base_url}/v1/chat/completions",
        {
            "model": servers.model,
            "messages": [{"role": "user", "content": "Tell me a story"}],
            "max_tokens": 6,
            "return_token_ids": True,
            "vllm_xargs": {
                "qr_request_tag": "http-chat",
                "qr_temperature_strategy": "edt",
                "qr_sample_count": 4096,
            },
        },
    )
    assert status == 200, body
    tokens = body["choices"][0]["token_ids"]
    records = records_for(servers.records, "http-chat", len(tokens))
    assert [r.token_id for r in records] == tokens
    assert all(r.temperature_strategy == "edt" and r.sample_count == 4096 for r in records)
    assert_just_in_time(records)


def test_top_level_extra_args_is_dropped_by_vllm(servers: Servers) -> None:
    status, body = post(
        f"{servers.base_url}/v1/completions",
        {
            "model": servers.model,
            "prompt": "Hello",
            "max_tokens": 3,
            "extra_args": {"qr_request_tag": "top-level", "qr_top_p": 5},
        },
    )
    # No 400 for the out-of-range top_p and no tag: vLLM never passed it on.
    assert status == 200, body
    assert all(r.request_tag != "top-level" for r in read_records(servers.records).records)


@pytest.mark.parametrize(
    ("xargs", "named"),
    [
        ({"qr_top_p": 5}, "qr_top_p"),
        ({"qr_no_such_key": 1}, "qr_no_such_key"),
        ({"qr_grpc_server_address": "evil:1"}, "QR_GRPC_SERVER_ADDRESS"),
    ],
)
def test_invalid_value_gets_400_and_next_request_succeeds(
    servers: Servers, xargs: dict[str, object], named: str
) -> None:
    url = f"{servers.base_url}/v1/completions"
    status, body = post(
        url, {"model": servers.model, "prompt": "Hi", "max_tokens": 2, "vllm_xargs": xargs}
    )
    assert status == 400, body
    assert named in json.dumps(body)
    status, body = post(url, {"model": servers.model, "prompt": "Hi", "max_tokens": 2})
    assert status == 200, body


def test_entropy_server_killed_mid_generation_falls_back(
    servers: Servers, assert_just_in_time: JustInTime
) -> None:
    result: dict[str, tuple[int, Any]] = {}

    def generate() -> None:
        result["response"] = post(
            f"{servers.base_url}/v1/completions",
            {
                "model": servers.model,
                "prompt": "Once upon a time",
                "max_tokens": 400,
                "ignore_eos": True,
                "return_token_ids": True,
                "vllm_xargs": {"qr_request_tag": "kill"},
            },
            timeout=300,
        )

    thread = threading.Thread(target=generate)
    thread.start()
    before = records_for(servers.records, "kill", 5)
    assert len(before) >= 5, "generation did not start"
    servers.entropy.kill()
    servers.entropy.wait()
    thread.join(timeout=300)
    assert not thread.is_alive()
    status, body = result["response"]
    assert status == 200, body
    tokens = body["choices"][0]["token_ids"]
    assert len(tokens) == 400
    records = records_for(servers.records, "kill", len(tokens))
    assert [r.token_id for r in records] == tokens
    assert not records[0].fallback
    assert records[0].entropy_source == "quantum_grpc"
    assert records[-1].fallback
    assert records[-1].entropy_source == "system"
    assert records[-1].fallback_reason
    # Once fallen back, every later token is flagged too (the server stays dead).
    first = next(i for i, r in enumerate(records) if r.fallback)
    assert all(r.fallback for r in records[first:])
    assert_just_in_time(records)


def test_server_keeps_serving_on_fallback_after_the_entropy_server_died(servers: Servers) -> None:
    assert servers.entropy.poll() is not None, "runs after the entropy server was killed"
    status, body = post(
        f"{servers.base_url}/v1/completions",
        {
            "model": servers.model,
            "prompt": "Hello",
            "max_tokens": 4,
            "ignore_eos": True,
            "return_token_ids": True,
            "vllm_xargs": {"qr_request_tag": "after-kill"},
        },
    )
    assert status == 200, body
    records = records_for(servers.records, "after-kill", 4)
    assert [r.token_id for r in records] == body["choices"][0]["token_ids"]
    assert all(r.fallback and r.entropy_source == "system" for r in records)
