"""The public modules export what they define, each name once, and nothing from elsewhere."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from types import ModuleType

import pytest

PUBLIC = {
    "qr_core": "qr_core",
    "qr_core.records": "qr_core.records",
    "qr_core.analysis": "qr_core.analysis",
    "qr_core.testing": "qr_core.testing",
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_exported_name_exists_and_comes_from_the_module(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    for member in exported:
        value = getattr(module, member)
        if inspect.isclass(value) or inspect.isfunction(value):
            home = value.__module__
            assert home == PUBLIC[name] or home.startswith(PUBLIC[name] + "._"), (member, home)


def test_records_and_analysis_share_no_name() -> None:
    records = importlib.import_module("qr_core.records")
    analysis = importlib.import_module("qr_core.analysis")
    assert not set(records.__all__) & set(analysis.__all__)


def test_records_need_numpy_alone() -> None:
    code = (
        "import sys, qr_core.records;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('scipy', 'matplotlib', 'torch') or m.startswith('qr_core.analysis')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
