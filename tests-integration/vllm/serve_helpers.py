"""Helpers of the ``vllm serve`` tests: servers, requests over HTTP, matching records to tokens."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from qr_core.records import RecordError, TokenSamplingRecord, read_records
from qr_entropy_server.server_process import start_server_process

STARTUP_TIMEOUT_S = 600.0  # liveness bound on two shared cores, not a timing
REQUEST_TIMEOUT_S = 600.0
# A stream whose engine was killed is left open by vLLM's API server, which then
# waits for it before it exits; the client gives up after this long without data.
STREAM_IDLE_S = 60.0


@dataclass
class Server:
    """One ``vllm serve`` (with all its processes, in its own session)."""

    proc: subprocess.Popen[bytes]
    base_url: str
    model: str
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(command: list[str], env: dict[str, str], workdir: Path, name: str) -> Server:
    """Start ``command`` and wait until ``/health`` answers 200."""
    port = free_port()
    log = workdir / f"{name}.log"
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its engine and API processes form one group
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"{name} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            stop_group(proc)
            raise AssertionError(f"{name} not ready:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return Server(proc, base, command[2], log)
        except OSError:
            pass
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT the server (a clean stop), then SIGKILL whatever of its group is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop(proc: subprocess.Popen[Any], sig: int) -> None:
    """Send ``sig`` to one process; SIGKILL it if it has not exited 30 s later."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_entropy_server(
    sock: Path, log: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``qr-entropy-server`` on a unix socket and wait for its ready line.

    ``extra`` are more flags, ``env`` variables added to the environment (an API key
    as ``QR_SERVER_API_KEY``). All of its output goes to ``log``.
    """
    return start_server_process("--address", f"unix://{sock}", *extra, env=env, log=log).proc


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """The engine's metrics endpoint (``QR_METRICS_PORT``), parsed by prometheus-client's
    text parser: each sample's value by its name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter nothing has counted yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def post(url: str, body: dict[str, object], timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, Any]:
    """POST ``body`` as JSON; returns the status and the decoded answer (errors included)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def records_for(path: Path, tag: str, count: int) -> list[TokenSamplingRecord]:
    """Wait (up to 60 s, not timed) until ``count`` emitted records of ``tag`` are on disk."""
    deadline = time.monotonic() + 60
    found: list[TokenSamplingRecord] = []
    error: RecordError | None = None
    while time.monotonic() < deadline:
        try:
            records = read_records(path).records
        except RecordError as exc:  # no file yet, or a reader error reported below
            error = exc
            records = ()
        found = [r for r in records if r.request_tag == tag and not r.discarded]
        if len(found) >= count:
            break
        time.sleep(0.05)
    assert len(found) >= count, f"{len(found)} of {count} records of {tag!r}; last error: {error}"
    return sorted(found, key=lambda r: r.token_index)


def complete(server: Server, tag: str, prompt: str, max_tokens: int) -> list[int]:
    """One ``/v1/completions`` request; returns the token ids the server sent."""
    body = {
        "model": server.model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "return_token_ids": True,
        "vllm_xargs": {"qr_request_tag": tag},
    }
    request = urllib.request.Request(
        f"{server.base_url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        data = json.loads(response.read())
    ids: list[int] = data["choices"][0]["token_ids"]
    return ids


@dataclass
class Stream:
    """A streaming request: the token ids received so far."""

    tag: str
    tokens: list[int] = field(default_factory=list)
    error: str | None = None


def stream(server: Server, out: Stream, prompt: str, max_tokens: int, **xargs: str | int) -> None:
    """Stream one completion into ``out.tokens`` until the server ends or drops it."""
    body = {
        "model": server.model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
        "vllm_xargs": {"qr_request_tag": out.tag, **xargs},
    }
    request = urllib.request.Request(
        f"{server.base_url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=STREAM_IDLE_S) as response:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line.removeprefix("data: "))
                for choice in chunk.get("choices", []):
                    out.tokens.extend(choice.get("token_ids") or [])
    except (OSError, ValueError, urllib.error.URLError) as exc:
        out.error = repr(exc)  # the server went away mid-stream: expected under SIGTERM


def kept_by_tag(
    records: Iterable[TokenSamplingRecord],
) -> dict[str | None, list[TokenSamplingRecord]]:
    """Records of emitted tokens (not ``discarded``) per request tag, in token order."""
    groups: dict[str | None, list[TokenSamplingRecord]] = collections.defaultdict(list)
    for r in records:
        if not r.discarded:
            groups[r.request_tag].append(r)
    for group in groups.values():
        group.sort(key=lambda r: r.token_index)
    return dict(groups)


def assert_each_token_once(
    returned: dict[str, list[int]], records: Sequence[TokenSamplingRecord], *, prefix: bool = False
) -> None:
    """Every returned token has exactly one record with its index and id.

    ``prefix``: the client may have seen fewer tokens than were recorded (a
    stream cut by a shutdown): the returned tokens must be the start of the
    recorded ones, and no index may be recorded twice.
    """
    kept = kept_by_tag(records)
    for tag, ids in returned.items():
        mine = kept.get(tag, [])
        indices = [r.token_index for r in mine]
        assert indices == list(range(len(mine))), f"{tag}: indices {indices}"
        recorded = [r.token_id for r in mine]
        if prefix:
            assert recorded[: len(ids)] == ids, f"{tag}: returned {ids} recorded {recorded}"
        else:
            assert recorded == ids, f"{tag}: returned {ids} recorded {recorded}"
