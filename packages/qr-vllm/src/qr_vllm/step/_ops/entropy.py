"""The entropy of one step: the fetch after the logits exist, and its amplification.

:func:`draw` is the stage: the wait for the logits (device path), the fetch
(:func:`fetch_entropy`) and the amplification (:mod:`.amplify`).

One fetch for all rows, or one per experiment arm in use: each arm's bytes come
from its own fetch (all fetches at once, see
:meth:`qr_entropy.ArmSources.fetch_many`) and are laid out over the arm's rows
in ascending row order, so a row's bytes are exactly the ones its own arm
delivered, and the step's byte layout (row ``i`` owns
``[offset_i, offset_i + sample_count_i)``) is the same as with one source.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from qr_entropy import EntropyFetch
from qr_vllm._errors import QRVllmError
from qr_vllm.step._interface import Fetch, FetchMany, Slot
from qr_vllm.step._metadata import StepMetadata
from qr_vllm.step._ops.amplify import amplify
from qr_vllm.step._ops.transfer import wait_for_logits
from qr_vllm.step._outputs import ArmShare, Drawn
from qr_vllm.step._timings import StageClock

__all__ = ["byte_positions", "draw", "fetch_entropy"]


def draw(
    meta: StepMetadata,
    fetch: Fetch,
    fetch_many: FetchMany | None,
    clock: StageClock,
    wait_for: torch.device | None = None,
) -> Drawn:
    """The fetch (after the logits exist) and the amplification, on the host.

    Args:
        meta: The step's rows, byte offsets and groups.
        fetch: The default source's fetch (rows without an arm).
        fetch_many: Concurrent fetches for several arms.
        clock: Receives the fetch and amplification times.
        wait_for: The device whose logits the host must wait for first.
    """
    t1 = time.perf_counter()
    if wait_for is not None:
        wait_for_logits(wait_for)
    logits_ready_ns = time.time_ns()
    raw, fetched, shares = fetch_entropy(meta.slots, meta.offsets, fetch, fetch_many)
    t2 = time.perf_counter()
    clock.fetch_s += t2 - t1
    u, z, mean = amplify(raw, meta)
    clock.amplify_s += time.perf_counter() - t2
    return Drawn(fetched, raw, logits_ready_ns, u, z, mean, shares)


def fetch_entropy(
    slots: Sequence[Slot],
    offsets: np.ndarray,
    fetch: Fetch,
    fetch_many: FetchMany | None,
) -> tuple[np.ndarray, Sequence[EntropyFetch], tuple[ArmShare, ...]]:
    """Fetch the bytes of one step's rows, one fetch per arm in use.

    Args:
        slots: The step's rows.
        offsets: ``offsets[i]`` is the first byte of row ``i``; ``offsets[-1]``
            the step's byte count.
        fetch: The default source's fetch (rows without an arm).
        fetch_many: Concurrent fetches for several arms.

    Returns:
        The step's bytes in row layout, the fetch that supplied each row, and each
        arm's fetch with its rows.

    Raises:
        QRVllmError: A row names an arm but there is no ``fetch_many``.
    """
    n = len(slots)
    arm = slots[0].arm
    if all(s.arm == arm for s in slots):
        total = int(offsets[-1])
        fetched = fetch(total) if arm is None else _many(fetch_many, {arm: total})[arm]
        share = (ArmShare(arm, fetched, None),)
        return np.frombuffer(fetched.data, dtype=np.uint8), [fetched] * n, share
    rows_of: dict[str | None, list[int]] = {}
    for i, s in enumerate(slots):
        rows_of.setdefault(s.arm, []).append(i)
    positions = {a: np.asarray(r, dtype=np.int64) for a, r in rows_of.items()}
    lengths = offsets[1:] - offsets[:-1]
    fetches = _many(fetch_many, {a: int(lengths[p].sum()) for a, p in positions.items()})
    raw = np.empty(int(offsets[-1]), dtype=np.uint8)
    for a, p in positions.items():
        raw[byte_positions(offsets, p)] = np.frombuffer(fetches[a].data, dtype=np.uint8)
    shares = tuple(ArmShare(a, fetches[a], p) for a, p in positions.items())
    return raw, [fetches[s.arm] for s in slots], shares


def byte_positions(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Indices of the step's bytes that belong to ``rows``, row after row.

    Args:
        offsets: Row byte offsets (``n + 1`` entries).
        rows: Row indices, ascending.

    Returns:
        For byte ``k`` of the rows' concatenated bytes, its index in the step.
    """
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    before = np.cumsum(lengths) - lengths  # where each row starts in the concatenation
    index: np.ndarray = np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()))
    return index


def _many(
    fetch_many: FetchMany | None, counts: Mapping[str | None, int]
) -> Mapping[str | None, EntropyFetch]:
    if fetch_many is None:
        raise QRVllmError(
            f"rows name experiment arms {sorted(a for a in counts if a)} but the sampler "
            "was given no arm sources (fetch_many)"
        )
    fetched = fetch_many(counts)
    missing = [a for a in counts if a not in fetched]
    if missing:
        raise QRVllmError(f"fetch_many returned no bytes for arms {missing}")
    return fetched
