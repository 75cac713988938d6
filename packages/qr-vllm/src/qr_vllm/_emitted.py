"""Which sampled rows became output tokens: records of rows vLLM may discard wait.

vLLM's V1 model runner samples every row of a step, including a prompt that is
only partly prefilled (chunked prefill, or the recompute of a preempted
request), and then drops that row's token. The processor cannot tell such a
row at sampling time; it can tell afterwards: vLLM appends a kept token to the
request's live output list (``Slot.output_ids``) before the next step, and a
dropped one it does not append.

So a row whose request has not yet shown a kept token since it entered the
batch (``Slot.decoding`` false) is *uncertain*: its record is held until
:meth:`EmittedTokens.settle`, which marks it ``discarded=true`` when the output
list did not grow past its ``token_index`` (or a later row of the same request
took that index). Its entropy stays accounted for in the record. Rows of
decoding requests, and rows of a runner that passes only token-producing rows
(Model Runner V2, ``output_ids is None``), are certain and pass straight
through.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

from qr_core.records import TokenSamplingRecord
from qr_vllm.step import Slot

__all__ = ["EmittedTokens"]


class EmittedTokens:
    """Holds uncertain rows' records until vLLM has kept or dropped their tokens."""

    def __init__(self) -> None:
        """Create an empty holder."""
        self._held: list[tuple[TokenSamplingRecord, Slot]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def hold_uncertain(
        self, records: Sequence[TokenSamplingRecord], slots: Sequence[Slot]
    ) -> tuple[Sequence[TokenSamplingRecord], Sequence[Slot]]:
        """Keep the records of uncertain rows; return the certain ones with their slots."""
        if all(s.decoding for s in slots):
            return records, slots  # every row decodes: the usual step
        kept_records: list[TokenSamplingRecord] = []
        kept_slots: list[Slot] = []
        held: list[tuple[TokenSamplingRecord, Slot]] = []
        for record, slot in zip(records, slots, strict=True):
            if slot.decoding:
                kept_records.append(record)
                kept_slots.append(slot)
            else:
                held.append((record, slot))
        with self._lock:
            self._held.extend(held)
        return kept_records, kept_slots

    def settle(self) -> tuple[list[TokenSamplingRecord], list[Slot]]:
        """Decide every held row; return their records (in sampling order) and slots.

        Call it only after vLLM has finished the step that sampled them (the
        next step's ``update_state``, or when the engine is idle).
        """
        with self._lock:
            if not self._held:
                return [], []
            held, self._held = self._held, []
        records: list[TokenSamplingRecord] = []
        slots: list[Slot] = []
        later: set[tuple[int, int]] = set()
        # Newest first: of several held rows of one request at one index (prefill
        # chunks seen in one settle), only the newest can be the kept one.
        for record, slot in reversed(held):
            assert slot.output_ids is not None
            key = (id(slot), record.token_index)
            if key in later or len(slot.output_ids) <= record.token_index:
                record = dataclasses.replace(record, discarded=True)
            later.add(key)
            records.append(record)
            slots.append(slot)
        records.reverse()
        slots.reverse()
        return records, slots
