"""Shared fixtures: a clean ``QR_*`` environment for every test."""

from __future__ import annotations

import os

import pytest

from qr_vllm import QRSamplingLogitsProcessor


@pytest.fixture(autouse=True)
def clean_qr_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Remove every ``QR_*`` variable and run from an empty directory (no ``.env``)."""
    for name in list(os.environ):
        if name.startswith("QR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    # validate_params caches the server-wide defaults per process.
    monkeypatch.setattr(QRSamplingLogitsProcessor, "_base", None)


@pytest.fixture
def seeded_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A seeded ``mock_uniform`` engine of 256 bytes per token that records
    everything, raw bytes included; returned to add more variables."""
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    monkeypatch.setenv("QR_MOCK_UNIFORM_SEED", "3")
    monkeypatch.setenv("QR_SAMPLE_COUNT", "256")
    monkeypatch.setenv("QR_DIAGNOSTIC_MODE", "true")
    monkeypatch.setenv("QR_LOG_LEVEL", "none")
    monkeypatch.setenv("QR_RECORD_RAW_BYTES", "true")
    return monkeypatch
