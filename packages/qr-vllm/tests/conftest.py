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
