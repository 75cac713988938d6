"""Registries: decorator registration, entry-point discovery and their errors.

Entry points are real: a ``*.dist-info`` directory with ``entry_points.txt`` is
written under ``tmp_path`` and put on ``sys.path``, as an installed plugin would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pytest

from qr_core import (
    QRCoreError,
    SamplingConfig,
    SignalAmplifier,
    TemperatureStrategy,
    ZScoreMeanAmplifier,
    available_amplifiers,
    available_temperature_strategies,
    build_amplifier,
    build_temperature_strategy,
    register_amplifier,
    register_temperature_strategy,
)


def test_builtins_are_listed() -> None:
    assert {"zscore_mean", "zscore_bits"} <= set(available_amplifiers())
    assert {"fixed", "edt"} <= set(available_temperature_strategies())


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(
        QRCoreError, match=r"unknown amplifier 'nope'; known: .*zscore_bits, zscore_mean"
    ):
        build_amplifier(SamplingConfig(signal_amplifier_type="nope"))
    with pytest.raises(
        QRCoreError, match=r"unknown temperature strategy 'nope'; known: edt, fixed"
    ):
        build_temperature_strategy(SamplingConfig(temperature_strategy="nope"))


def test_decorator_registers_and_names_the_class() -> None:
    @register_temperature_strategy("test_registry_constant")
    class Constant(TemperatureStrategy):
        @classmethod
        def from_config(cls, config: SamplingConfig) -> Self:
            return cls()

        def _temperatures(self, xp: object, entropy: np.ndarray, vocab_size: int) -> np.ndarray:
            return np.full(entropy.shape, 1.5)

    assert Constant.name == "test_registry_constant"
    strategy = build_temperature_strategy(
        SamplingConfig(temperature_strategy="test_registry_constant")
    )
    assert strategy.compute(np.zeros(4)).temperature == 1.5
    with pytest.raises(QRCoreError, match="already registered"):
        register_temperature_strategy("test_registry_constant")(type("Other", (Constant,), {}))


def test_decorator_rejects_a_wrong_base_class() -> None:
    with pytest.raises(QRCoreError, match="does not derive from SignalAmplifier"):
        register_amplifier("test_registry_wrong")(int)  # type: ignore[arg-type]


def _install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: str) -> None:
    (tmp_path / "qr_test_plugin.py").write_text(
        "from qr_core import ZScoreMeanAmplifier\n"
        "class Doubled(ZScoreMeanAmplifier):\n"
        "    pass\n"
        "class NotAnAmplifier:\n"
        "    pass\n"
    )
    dist = tmp_path / "qr_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: qr-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[qr_sampler.amplifiers]\n{entries}")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_entry_point_plugin_is_found_and_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, monkeypatch, "test_doubled = qr_test_plugin:Doubled\n")
    assert "test_doubled" in available_amplifiers()
    amp = build_amplifier(SamplingConfig(signal_amplifier_type="test_doubled", sample_count=10))
    assert isinstance(amp, ZScoreMeanAmplifier)
    assert type(amp).__name__ == "Doubled"
    # Two statistic bytes averaging 127.5 give z = 0; the last 8 bytes only draw V.
    assert amp.amplify(b"\x7f\x80" + bytes(8)).z_score == 0.0


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (
            "test_broken = qr_test_missing_module:Thing\n",
            "entry point 'test_broken' = 'qr_test_missing_module:Thing'",
        ),
        ("test_wrong = qr_test_plugin:NotAnAmplifier\n", "is not a subclass of SignalAmplifier"),
    ],
)
def test_failing_entry_point_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, needle: str
) -> None:
    _install_plugin(tmp_path, monkeypatch, entry)
    name = entry.split(" = ")[0]
    with pytest.raises(QRCoreError) as info:
        build_amplifier(SamplingConfig(signal_amplifier_type=name))
    assert needle in str(info.value)
    # The broken plugin does not break the built-ins.
    assert isinstance(build_amplifier(SamplingConfig()), SignalAmplifier)
