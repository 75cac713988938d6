"""Fixtures for the real-engine tests: the tiny local model and record helpers."""

from __future__ import annotations

import os
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

# Set before vLLM reads them; the hub is never contacted.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from qr_core.records import TokenSamplingRecord
from qr_vllm.demo import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random-weight Llama (vocabulary 1,024), built once and cached."""
    return build_tiny_model()


ServeCommand = Callable[..., list[str]]


@pytest.fixture(scope="session")
def serve_command(tiny_model: Path) -> ServeCommand:
    """``vllm serve`` of the tiny model on 127.0.0.1 (eager), followed by extra arguments."""
    vllm_cmd = shutil.which("vllm", path=str(Path(sys.executable).parent))
    assert vllm_cmd is not None, "the `vllm` command must be installed next to python"

    def command(*extra: str) -> list[str]:
        base = [vllm_cmd, "serve", str(tiny_model), "--host", "127.0.0.1", "--enforce-eager"]
        return [*base, *extra]

    return command


def _by_tag(records: Iterable[TokenSamplingRecord]) -> dict[str | None, list[TokenSamplingRecord]]:
    """Group records by request tag, each group in token order."""
    groups: dict[str | None, list[TokenSamplingRecord]] = defaultdict(list)
    for r in records:
        groups[r.request_tag].append(r)
    for group in groups.values():
        group.sort(key=lambda r: r.token_index)
    return dict(groups)


def _assert_just_in_time(records: Iterable[TokenSamplingRecord]) -> None:
    """Every record's entropy was requested and generated after its logits existed."""
    for r in records:
        assert r.logits_ready_ns <= r.entropy_requested_ns, r
        assert r.logits_ready_ns < r.entropy_generated_ns, r
        assert r.entropy_generated_ns <= r.entropy_received_ns, r


ByTag = Callable[[Iterable[TokenSamplingRecord]], dict[str | None, list[TokenSamplingRecord]]]
JustInTime = Callable[[Iterable[TokenSamplingRecord]], None]


@pytest.fixture(scope="session")
def by_tag() -> ByTag:
    """Group records by request tag, each group in token order."""
    return _by_tag


@pytest.fixture(scope="session")
def assert_just_in_time() -> JustInTime:
    """Assert that every record's entropy came after its logits."""
    return _assert_just_in_time
