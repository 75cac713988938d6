"""Rows whose token vLLM may drop: held, then settled as kept or discarded.

The engine itself is exercised in tests-integration/vllm/test_scale.py (long
prompts under chunked prefill, preemption); here the rules, row by row.
"""

from __future__ import annotations

import dataclasses

from vllm import SamplingParams

from qr_core.analysis import simulate_records
from qr_core.records import TokenSamplingRecord
from qr_vllm import SamplingSettings
from qr_vllm._batch import plan_for_params
from qr_vllm._emitted import EmittedTokens
from qr_vllm.step import Slot

_TEMPLATE = simulate_records(1, seed=1)[0]


def _slot(output_ids: list[int] | None) -> Slot:
    plan = plan_for_params(SamplingSettings(), SamplingParams())
    assert plan is not None
    return Slot(plan=plan, output_ids=output_ids)


def _record(slot: Slot) -> TokenSamplingRecord:
    return dataclasses.replace(_TEMPLATE, token_index=slot.token_index)


def _step(holder: EmittedTokens, slots: list[Slot]) -> list[TokenSamplingRecord]:
    """One engine step: settle the previous one, then pass this step's rows."""
    settled, _ = holder.settle()
    passed, _ = holder.hold_uncertain([_record(s) for s in slots], slots)
    return [*settled, *passed]


def test_chunked_prefill_rows_are_discarded_and_the_last_chunk_kept() -> None:
    out: list[int] = []
    slot = _slot(out)
    holder = EmittedTokens()
    seen: list[TokenSamplingRecord] = []
    for _chunk in range(3):  # two partial chunks: vLLM drops their tokens
        seen += _step(holder, [slot])
    out.append(7)  # the third chunk completes the prompt: its token is kept
    seen += _step(holder, [slot])  # first decode row: certain, passes at once
    out.append(8)
    assert [(r.token_index, r.discarded) for r in seen] == [
        (0, True),
        (0, True),
        (0, False),
        (1, False),
    ]
    assert len(holder) == 0
    # Every row's entropy is accounted for; only kept rows are tokens.
    assert sum(not r.discarded for r in seen) == len(out)


def test_a_resumed_request_does_not_repeat_token_indices() -> None:
    out = [5, 6, 7]  # generated before preemption; vLLM keeps the list
    resumed = _slot(out)
    holder = EmittedTokens()
    seen = _step(holder, [resumed])  # recompute chunk 1 of 2: dropped
    seen += _step(holder, [resumed])  # last recompute chunk: kept
    out.append(9)
    seen += holder.settle()[0]
    assert [(r.token_index, r.discarded) for r in seen] == [(3, True), (3, False)]
    kept = [r.token_index for r in seen if not r.discarded]
    assert len(kept) == len(set(kept))


def test_held_rows_settled_late_keep_only_the_newest_per_index() -> None:
    # Two chunks sampled before one settle (an idle engine, then settle on read).
    out: list[int] = []
    slot = _slot(out)
    holder = EmittedTokens()
    holder.hold_uncertain([_record(slot)], [slot])
    holder.hold_uncertain([_record(slot)], [slot])
    out.append(3)
    records, slots = holder.settle()
    assert [r.discarded for r in records] == [True, False]
    assert slots == [slot, slot]


def test_decoding_rows_and_runner_v2_rows_pass_through() -> None:
    decoding = _slot([])
    decoding.output_ids.append(1)  # type: ignore[union-attr]
    v2 = _slot(None)
    fresh = _slot([])
    holder = EmittedTokens()
    records = [_record(s) for s in (decoding, fresh, v2)]
    passed, slots = holder.hold_uncertain(records, [decoding, fresh, v2])
    assert list(slots) == [decoding, v2]
    assert list(passed) == [records[0], records[2]]
    assert len(holder) == 1
