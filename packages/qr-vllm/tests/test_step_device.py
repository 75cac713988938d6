"""The device path of :class:`StepSampler`, forced onto CPU tensors (``engine="device"``).

What a GPU would run, counted without one by ``qr_core.testing``: no read
of device memory during ``sample`` (the one wait of a GPU step, for the logits
before the fetch, is a stream synchronisation that only CUDA makes), no
tensor made from host data (the per-row parameters travel in one reused packed
buffer), the same aten operations for B = 8 and 64 and for 1 and 3 groups of
settings, and the same tokens and records as the host path with the same
entropy bytes.

The byte source is deterministic (seeded per step): the tests compare two
paths on the same bytes, randomness is not what they check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from vllm import SamplingParams

from qr_core import QRCoreError, TemperatureStrategy
from qr_core.records import TokenSamplingRecord
from qr_core.testing import OpCount, count_ops
from qr_entropy import EntropyFetch
from qr_vllm import QRVllmError, SamplingSettings
from qr_vllm._batch import plan_for_params
from qr_vllm.step import Slot, StepSampler

VOCAB = 3000
ONE_GROUP: list[dict[str, Any]] = [
    {"qr_top_k": 50, "qr_top_p": 0.9},
    {"qr_top_k": 0, "qr_top_p": 1.0},
]
# Three groups (fixed 0.7, EDT, fixed 1.3), top-k / top-p varying inside them.
THREE_GROUPS: list[dict[str, Any]] = [
    {"qr_top_k": 50, "qr_top_p": 0.9},
    {"qr_top_k": 20, "qr_top_p": 0.95, "qr_temperature_strategy": "edt"},
    {"qr_top_k": 0, "qr_top_p": 0.8, "qr_fixed_temperature": 1.3},
    {"qr_top_k": 0, "qr_top_p": 1.0},
]


class Replay:
    """The same bytes for every sampler at a given step."""

    def __init__(self) -> None:
        self.step = 0

    def fetch(self, n: int) -> EntropyFetch:
        now = time.time_ns()
        data = np.random.default_rng(self.step).bytes(n)
        return EntropyFetch(data, "replay", "test", None, now, now, now)


def _slots(rows: int, settings: Sequence[dict[str, Any]]) -> list[Slot]:
    base = SamplingSettings(sample_count=256)
    out = []
    for i in range(rows):
        plan = plan_for_params(base, SamplingParams(extra_args=dict(settings[i % len(settings)])))
        assert plan is not None
        out.append(Slot(plan=plan, output_ids=[0] * i))
    return out


def _sampler(
    engine: str, entropy: Replay, records: list[TokenSamplingRecord] | None = None
) -> StepSampler:
    def emit(recs: Sequence[TokenSamplingRecord], _slots: Sequence[Slot]) -> None:
        if records is not None:
            records.extend(recs)

    return StepSampler(
        entropy.fetch,
        emit,
        wants_records=None if records is not None else (lambda _slots: False),
        engine=engine,  # type: ignore[arg-type]
    )


def _logits(rows: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def _count_step(rows: int, settings: Sequence[dict[str, Any]], records: bool) -> OpCount:
    entropy = Replay()
    sampler = _sampler("device", entropy, [] if records else None)
    slots = _slots(rows, settings)
    sampler.sample(_logits(rows, 0), list(range(rows)), slots)  # first-call costs
    logits = _logits(rows, 1)
    counts, _ = count_ops(lambda: sampler.sample(logits, list(range(rows)), slots))
    return counts


@pytest.mark.parametrize("records", [True, False], ids=["records", "no-records"])
def test_the_device_step_reads_no_device_memory_and_makes_no_upload(records: bool) -> None:
    counts = _count_step(8, THREE_GROUPS, records)
    assert counts.syncs == 0, counts.sync_sites
    # No tensor is made from host data: the per-row parameters travel in the
    # reused packed buffer, whose one copy is host-to-device only on a GPU.
    assert counts.uploads == 0


@pytest.mark.parametrize("records", [True, False], ids=["records", "no-records"])
def test_the_operations_do_not_grow_with_the_batch_or_the_groups(records: bool) -> None:
    by_case = {
        (rows, len(settings)): _count_step(rows, settings, records)
        for rows in (8, 64)
        for settings in (ONE_GROUP, THREE_GROUPS)
    }
    first = next(iter(by_case.values()))
    assert first.ops > 0
    for case, counts in by_case.items():
        assert counts.by_op == first.by_op, case


def _run_both(
    rows: int, qr_rows: list[int], settings: Sequence[dict[str, Any]], steps: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[Any], list[Any]]:
    forced: dict[str, list[torch.Tensor]] = {"host": [], "device": []}
    records: dict[str, list[TokenSamplingRecord]] = {"host": [], "device": []}
    entropy = Replay()
    samplers = {e: _sampler(e, entropy, records[e]) for e in forced}
    slots = {e: _slots(len(qr_rows), settings) for e in forced}
    for step in range(steps):
        for engine, sampler in samplers.items():
            entropy.step = step
            logits = _logits(rows, 100 + step)
            sampler.sample(logits, qr_rows, slots[engine])
            forced[engine].append(logits)
    return forced["host"], forced["device"], records["host"], records["device"]


def test_the_same_tokens_and_records_as_the_host_path() -> None:
    # 4 steps x 64 rows in 3 groups, float32 logits: the two engines compute
    # the same float32 weights here (a few-ulp exp difference could move a u
    # within ~1e-6 of a CDF boundary; with these fixed seeds none does).
    host, device, host_rec, dev_rec = _run_both(64, list(range(64)), THREE_GROUPS, 4)
    for h, d in zip(host, device, strict=True):
        assert torch.equal(h, d)  # identical forced logits: same tokens, same rows
    assert len(dev_rec) == len(host_rec) == 4 * 64
    for h_rec, d_rec in zip(host_rec, dev_rec, strict=True):
        assert (d_rec.token_id, d_rec.token_rank, d_rec.num_candidates) == (
            h_rec.token_id,
            h_rec.token_rank,
            h_rec.num_candidates,
        )
        # float32 arithmetic on float32 logits, summed in different orders by
        # numpy and torch: equal to a few float32 ulp (6e-8 each).
        assert d_rec.temperature == pytest.approx(h_rec.temperature, rel=1e-6)
        assert d_rec.shannon_entropy == pytest.approx(h_rec.shannon_entropy, rel=1e-6)
        # float32 weights: numpy's and torch's exp differ by a few ulp (6e-8 each).
        assert d_rec.token_prob == pytest.approx(h_rec.token_prob, rel=1e-6)
        assert (d_rec.u, d_rec.raw_sha256, d_rec.temperature_strategy) == (
            h_rec.u,
            h_rec.raw_sha256,
            h_rec.temperature_strategy,
        )


def test_only_the_qr_rows_are_forced() -> None:
    qr_rows = [0, 2, 3, 6]
    host, device, _, dev_rec = _run_both(8, qr_rows, ONE_GROUP, 2)
    untouched = _logits(8, 100)
    for h, d in zip(host, device, strict=True):
        assert torch.equal(h, d)
    first = device[0]
    for row in range(8):
        if row in qr_rows:
            assert int((first[row] == 0.0).sum()) == 1
            assert bool(torch.isneginf(first[row]).sum() == VOCAB - 1)
        else:
            assert torch.equal(first[row], untouched[row])
    assert [r.token_id for r in dev_rec[:4]] == [int(first[r].argmax()) for r in qr_rows]


def test_a_strategy_that_is_no_power_law_takes_the_group_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A third-party strategy has no power_law(); the base class's default.
    monkeypatch.setattr("qr_core.FixedTemperature.power_law", TemperatureStrategy.power_law)
    host, device, host_rec, dev_rec = _run_both(16, list(range(16)), THREE_GROUPS, 2)
    for h, d in zip(host, device, strict=True):
        assert torch.equal(h, d)
    assert [r.temperature for r in dev_rec] == pytest.approx(
        [r.temperature for r in host_rec], rel=1e-6
    )


def _nan_logits(rows: int) -> torch.Tensor:
    logits = _logits(rows, 7)
    logits[1, 5] = math.nan
    return logits


def _host_error() -> str:
    with pytest.raises(QRCoreError) as caught:
        _sampler("host", Replay(), []).sample(_nan_logits(4), [0, 1, 2, 3], _slots(4, ONE_GROUP))
    return str(caught.value)


def test_an_invalid_row_raises_when_the_records_are_built() -> None:
    want = _host_error()
    sampler = _sampler("device", Replay(), [])
    logits = _nan_logits(4)
    with pytest.raises(QRCoreError) as caught:
        sampler.sample(logits, [0, 1, 2, 3], _slots(4, ONE_GROUP))
    assert str(caught.value) == want  # "logits row 1 contains NaN"
    assert "row 1" in want


def test_an_invalid_row_of_an_unrecorded_step_raises_at_the_next_step() -> None:
    want = _host_error()
    sampler = _sampler("device", Replay())
    slots = _slots(4, ONE_GROUP)
    sampler.sample(_nan_logits(4), [0, 1, 2, 3], slots)  # deferred, nobody records
    with pytest.raises(QRCoreError) as caught:
        sampler.sample(_logits(4, 8), [0, 1, 2, 3], slots)
    assert str(caught.value) == want
    # Raised once: the step after is clean.
    sampler.sample(_logits(4, 9), [0, 1, 2, 3], slots)
    sampler.check_pending()


def test_check_pending_raises_what_the_last_step_deferred() -> None:
    sampler = _sampler("device", Replay())
    sampler.sample(_nan_logits(4), [0, 1, 2, 3], _slots(4, ONE_GROUP))
    with pytest.raises(QRCoreError, match="logits row 1 contains NaN"):
        sampler.check_pending()
    sampler.check_pending()  # nothing left


def test_timings_are_named_stages() -> None:
    sampler = _sampler("device", Replay(), [])
    slots = _slots(8, THREE_GROUPS)
    for step in range(3):
        sampler.sample(_logits(8, step), list(range(8)), slots)
    t = sampler.timings()
    assert (t.steps, t.rows) == (3, 24)
    stages = (t.temperature_s, t.fetch_s, t.amplify_s, t.select_s, t.force_s, t.record_s)
    assert all(s > 0 for s in stages)
    assert t.total_s >= sum(stages) * 0.999
    sampler.reset_timings()
    assert sampler.timings().steps == 0


def test_an_unknown_engine_is_refused_naming_the_choices() -> None:
    with pytest.raises(QRVllmError, match="engine must be one of 'auto', 'host', 'device'"):
        StepSampler(Replay().fetch, lambda _r, _s: None, engine="gpu")  # type: ignore[arg-type]


def test_the_deliberate_wait_uses_vllms_own_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import nullcontext

    from vllm.utils import gpu_sync_debug

    from qr_vllm.step._ops.transfer import sync_allowed

    # Under VLLM_GPU_SYNC_CHECK=error on a GPU, vLLM's permission is what lets
    # the wait pass; a spy shows that it is the one asked (no GPU here).
    asked: list[bool] = []

    def spy() -> nullcontext[None]:
        asked.append(True)
        return nullcontext()

    monkeypatch.setattr(gpu_sync_debug, "gpu_sync_allowed", spy)
    with sync_allowed():
        pass
    assert asked == [True]


class _Relay:
    """A follower rank's side of a token broadcast, fed by hand (one process)."""

    is_source = False

    def __init__(self, tokens: list[int]) -> None:
        self._tokens = torch.tensor(tokens, dtype=torch.int64)

    def send(self, tokens: torch.Tensor) -> None:
        raise AssertionError("a follower never sends")

    def receive(self, out: torch.Tensor) -> None:
        out.copy_(self._tokens)


def test_a_follower_rank_forces_the_received_tokens_without_reading_the_device() -> None:
    rows, tokens = [1, 4, 5], [7, 2999, 0]
    sampler = StepSampler(
        Replay().fetch, lambda _r, _s: None, broadcast=_Relay(tokens), engine="device"
    )
    logits = _logits(6, 3)
    untouched = logits.clone()
    counts, _ = count_ops(lambda: sampler.sample(logits, rows, _slots(3, ONE_GROUP)))
    assert counts.syncs == 0, counts.sync_sites
    # One staged copy of the row indices (pinned and asynchronous on a GPU).
    assert counts.uploads == 1
    for row in range(6):
        if row in rows:
            assert int(logits[row].argmax()) == tokens[rows.index(row)]
            assert bool(torch.isneginf(logits[row]).sum() == VOCAB - 1)
        else:
            assert torch.equal(logits[row], untouched[row])


@pytest.mark.parametrize("engine", ["host", "device"])
def test_a_step_without_records_forces_the_same_tokens(engine: str) -> None:
    # A step nobody records skips each row's byte mean (zscore_bits' second pass
    # over the bytes); the tokens must not depend on it, in one group or several.
    settings = [
        {"qr_signal_amplifier_type": "zscore_bits", "qr_top_k": 50},
        {"qr_signal_amplifier_type": "zscore_mean", "qr_top_k": 50},
    ]
    forced: dict[bool, list[torch.Tensor]] = {}
    records: list[TokenSamplingRecord] = []
    for recorded in (True, False):
        entropy = Replay()
        sampler = _sampler(engine, entropy, records if recorded else None)
        for group_settings in (settings[:1], settings):
            slots = _slots(8, group_settings)
            for step in range(3):
                entropy.step = step
                logits = _logits(8, 300 + step)
                sampler.sample(logits, list(range(8)), slots)
                forced.setdefault(recorded, []).append(logits)
    assert len(forced[True]) == len(forced[False]) == 6
    for with_records, without in zip(forced[True], forced[False], strict=True):
        assert torch.equal(with_records, without)
    assert len(records) == 6 * 8
    bits = [r for r in records if r.amplifier == "zscore_bits"]
    assert len(bits) == 3 * 8 + 3 * 4
    assert all(0.0 < r.sample_mean < 255.0 for r in records)
