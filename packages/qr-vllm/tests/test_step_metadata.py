"""StepMetadata: a step's rows read once, and the groups that carry their components."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from vllm import SamplingParams

from qr_core import PowerLaw
from qr_entropy import MockUniformSource
from qr_vllm import SamplingSettings
from qr_vllm._batch import plan_for_params
from qr_vllm.step import Slot, StepMetadata, StepSampler
from qr_vllm.step import _sampler as sampler_module
from qr_vllm.step._groups import RowGrouper

MIXED: list[dict[str, Any]] = [
    {"qr_top_k": 50, "qr_top_p": 0.9},
    {"qr_top_k": 20, "qr_top_p": 0.95, "qr_temperature_strategy": "edt", "qr_sample_count": 128},
    {"qr_top_k": 0, "qr_top_p": 1.0},
]


def _slots(settings: list[dict[str, Any]]) -> list[Slot]:
    base = SamplingSettings(sample_count=256)
    out = []
    for extra in settings:
        plan = plan_for_params(base, SamplingParams(extra_args=dict(extra)))
        assert plan is not None
        out.append(Slot(plan=plan, output_ids=[]))
    return out


def test_the_per_row_arrays_and_groups_of_a_mixed_step() -> None:
    slots = _slots(MIXED)
    meta = StepMetadata.build(5, [0, 2, 4], slots, RowGrouper({}), recorded=True, on_device=False)
    assert meta.size == 3
    assert not meta.whole
    assert meta.top_k.dtype == np.int64
    assert meta.top_k.tolist() == [50, 20, 0]
    assert meta.top_p.tolist() == [0.9, 0.95, 1.0]
    # Row i owns bytes [offsets[i], offsets[i + 1]) of the step's fetch.
    assert meta.offsets.tolist() == [0, 256, 384, 640]
    # Rows 0 and 2 share every setting but top-k / top-p: one group.
    assert [g.positions.tolist() for g in meta.groups] == [[0, 2], [1]]
    assert meta.power_laws
    fixed, edt = meta.groups
    t = slots[0].plan.core.fixed_temperature
    assert fixed.law == PowerLaw(t, 0.0, t, t)
    assert edt.strategy.name == "edt"
    assert edt.law == edt.strategy.power_law()


def test_each_group_builds_its_components_once_per_sampler() -> None:
    grouper = RowGrouper({})
    first = grouper.groups(_slots(MIXED))
    second = grouper.groups(_slots(MIXED))
    for a, b in zip(first, second, strict=True):
        assert a.amplifier is b.amplifier
        assert a.strategy is b.strategy


@pytest.mark.parametrize("engine", ["host", "device"])
def test_one_metadata_per_step(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[StepMetadata] = []
    real = StepMetadata.build

    def spy(*args: Any, **kwargs: Any) -> StepMetadata:
        meta = real(*args, **kwargs)
        built.append(meta)
        return meta

    monkeypatch.setattr(sampler_module.StepMetadata, "build", spy)
    source = MockUniformSource(seed=1)
    sampler = StepSampler(source.fetch, lambda _r, _s: None, engine=engine)  # type: ignore[arg-type]
    slots = _slots(MIXED)
    for step in range(3):
        logits = torch.randn(3, 100, generator=torch.Generator().manual_seed(step))
        sampler.sample(logits, [0, 1, 2], slots)
    assert len(built) == 3
    assert all(m.on_device == (engine == "device") and m.whole for m in built)
