"""The public names: qr_vllm, qr_vllm.step and qr_vllm.demo export what their own modules define.

Also what the layout promises: the step and the demo are importable without
vLLM being imported (the step runs on hosts without vLLM; the demo sends vLLM's
import-time messages to its log file first), and ``python -m qr_vllm.demo``
starts without an engine for ``--help``.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from types import ModuleType

import pytest

# Each public module, and the prefixes of the modules its exported classes and
# functions may come from.
PUBLIC = {
    "qr_vllm": ("qr_vllm._", "qr_vllm.step."),
    "qr_vllm.step": ("qr_vllm.step._",),
    "qr_vllm.demo": ("qr_vllm.demo._",),
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_exported_name_exists_and_comes_from_the_package(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    for member in exported:
        assert not member.startswith("_") or member == "__version__", member
        value = getattr(module, member)
        if inspect.isclass(value) or inspect.isfunction(value):
            home = value.__module__
            assert home.startswith(PUBLIC[name]), (member, home)


def test_the_demo_and_the_tiny_model_are_not_in_the_top_level_api() -> None:
    qr_vllm = importlib.import_module("qr_vllm")
    assert not {"build_tiny_model", "TinyModelSpec", "main"} & set(qr_vllm.__all__)


@pytest.mark.parametrize("name", ["qr_vllm", "qr_vllm.step", "qr_vllm.demo"])
def test_importing_does_not_import_vllm(name: str) -> None:
    code = f"import sys, {name}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'vllm'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_m_qr_vllm_demo_answers_help_without_an_engine() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "qr_vllm.demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.startswith("usage: python -m qr_vllm.demo")
    assert "--arms" in out.stdout
