"""One sampling step over the whole batch: the adapter's hot path.

For the qr-sampled rows of a logits tensor, :class:`StepSampler` makes ONE
entropy fetch for all rows after the logits exist, amplifies the bytes,
computes the temperatures, selects the tokens with :func:`qr_core.select_tokens`
and forces each selected token (0.0, all others ``-inf``). The device path's
operations are in :mod:`qr_vllm._step_device`, its two copies in
:mod:`qr_vllm._step_transfer`, array helpers in :mod:`qr_vllm._step_arrays`;
records are built by :mod:`qr_vllm._step_records`, stage times kept by
:mod:`qr_vllm._step_timings`.

Two paths, chosen by ``engine`` (see :class:`StepSampler`):

* host (CPU logits): every per-row array stays in numpy, qr_core works on a
  zero-copy view of the logits; rows whose settings shape the amplifier or
  the temperature strategy differently are processed in a few groups.
* device (GPU logits, or CPU tensors with ``engine="device"``): one wait for
  the logits just before the fetch (the just-in-time guarantee), then nothing
  reads device memory until the tokens are forced. u, top-k, top-p, the
  power-law temperature parameters and the row index go to the device in ONE
  host-to-device copy; temperatures of any mix of fixed and EDT rows and the
  selection are the same whole-batch operations whatever the batch size and
  the number of groups. Value checks that need device values (u, temperature,
  top-p, NaN/inf logits) are deferred: they come back with the per-row values
  the records need, in one asynchronous copy into a pinned buffer with an
  event, and raise exactly the error an immediate check would -- when the
  records are built, after forcing, or, when nobody records, at the start of
  the next step (where the wait for the logits has already completed the copy).

Entropy bytes are laid out row by row in ascending row order: row ``i`` of the
step receives bytes ``[offset_i, offset_i + sample_count_i)`` of the fetch.

Experiment arms (``qr_entropy_source``): a step whose rows use several arms
makes one fetch per arm, all at once (:meth:`qr_entropy.ArmSources.fetch_many`),
each after the logits exist; each arm's bytes are laid out over its own rows in
ascending row order, and each row's record carries its arm's fetch. Each
row's statistic is standardised against its arm's calibration (none for an
uncalibrated arm): rows of differently calibrated arms are amplified in
separate groups, and each record carries its arm's calibration hash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import get_args

import numpy as np
import torch

from qr_core import (
    Calibration,
    Engine,
    select_tokens,
)
from qr_core.records import TokenSamplingRecord
from qr_entropy import EntropyFetch
from qr_vllm._arms import FetchMany, step_entropy
from qr_vllm._batch import Slot
from qr_vllm._errors import QRVllmError
from qr_vllm._step_arrays import force, gather, host, host_array, native, scatter, tensor
from qr_vllm._step_device import select_on_device
from qr_vllm._step_groups import Group, GroupParts
from qr_vllm._step_records import Drawn, Selected, build_records
from qr_vllm._step_timings import StageClock, StepTimings
from qr_vllm._step_transfer import (
    HostBuffers,
    Readback,
    sync_allowed,
    upload_rows,
)
from qr_vllm._tp import FAILED, TokenBroadcast

__all__ = ["StepSampler", "StepTimings"]

logger = logging.getLogger(__name__)

Fetch = Callable[[int], EntropyFetch]


class StepSampler:
    """Samples and forces the qr-sampled rows of one logits tensor per call."""

    def __init__(
        self,
        fetch: Fetch,
        emit: Callable[[Sequence[TokenSamplingRecord], Sequence[Slot]], None],
        *,
        fetch_many: FetchMany | None = None,
        wants_records: Callable[[Sequence[Slot]], bool] | None = None,
        record_raw_bytes: bool = False,
        broadcast: TokenBroadcast | None = None,
        writer_id: str | None = None,
        calibrations: Mapping[str | None, Calibration] | None = None,
        engine: Engine = "auto",
    ) -> None:
        """Create a sampler.

        Args:
            fetch: The default entropy source's ``fetch(n)`` (rows without an arm).
            emit: Receives the step's records with their slots.
            fetch_many: Fetches for several experiment arms at once (byte
                count per arm name, ``None`` for the default source); needed
                when a slot names an arm.
            wants_records: Whether any sink would receive the records of a step
                with these slots; when it says no, the step builds no records,
                does not call ``emit`` and skips the entropy of strategies that
                do not use it. ``None``: always build them.
            record_raw_bytes: Put each row's raw bytes (hex) into its record.
            broadcast: Tensor-parallel coordination; ``None`` for one rank.
            writer_id: Written into every record (the process that wrote it).
            calibrations: The device calibration of each calibrated arm (``None``:
                the default source, ``QR_CALIBRATION_PATH``): a row's amplifier
                standardises against its arm's calibration, whose hash goes into
                the row's record; an arm absent here is uncalibrated.
            engine: ``"auto"``: the host path for CPU logits, the device path
                for any other device. ``"device"``: the device path also for
                CPU tensors (the GPU path, run and counted without a GPU).
                ``"host"``: the host path (CPU logits only).

        Raises:
            QRVllmError: ``engine`` is none of the three.
        """
        if engine not in get_args(Engine):
            raise QRVllmError(f"engine must be one of 'auto', 'host', 'device', got {engine!r}")
        self._fetch = fetch
        self._fetch_many = fetch_many
        self._emit = emit
        self._wants = wants_records
        self._raw = record_raw_bytes
        self._broadcast = broadcast
        self._writer_id = writer_id
        self._calibrations: dict[str | None, Calibration] = dict(calibrations or {})
        self._engine = engine
        self._parts = GroupParts(self._calibrations)
        self._clock = StageClock()
        self._buffers: HostBuffers | None = None
        # The device path's deferred value checks of a step nobody recorded:
        # done at the start of the next step, or by check_pending().
        self._pending: Readback | None = None

    def timings(self) -> StepTimings:
        """Return the cumulative stage timings since creation or :meth:`reset_timings`."""
        return self._clock.snapshot()

    def reset_timings(self) -> None:
        """Zero the cumulative timings."""
        self._clock = StageClock()

    def check_pending(self) -> None:
        """Raise what the last unrecorded device step deferred, if anything.

        Raises:
            qr_core.QRCoreError: An invalid value of that step (u, temperature,
                top-p, a logits row with NaN, +inf or only -inf).
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.check()

    def sample(self, logits: torch.Tensor, rows: Sequence[int], slots: Sequence[Slot]) -> None:
        """Select and force one token for each of ``rows``, in place.

        Args:
            logits: ``(num_rows, vocab)`` float logits of the step.
            rows: The qr-sampled rows, ascending.
            slots: The slot of each row.

        Raises:
            qr_core.QRCoreError: An invalid value (see :meth:`check_pending`);
                on the device path after forcing, or at the next step.
        """
        if not rows:
            return
        broadcast = self._broadcast
        if broadcast is not None and not broadcast.is_source:
            self._follow(logits, rows)
            return
        t0 = time.perf_counter()
        clock = self._clock
        device = logits.device
        on_device = self._on_device(device)
        # Asked once, before anything is computed: a step nobody records needs
        # no records, nor the entropy of a strategy that does not use it.
        wanted = self._wants is None or self._wants(slots)
        rows_t: torch.Tensor | None = None
        try:
            if on_device:
                step = self._select_on_device(logits, rows, slots, wanted)
                rows_t = step.rows_t
            else:
                if len(rows) != logits.shape[0]:
                    rows_t = torch.as_tensor(rows, device=device)
                sub = logits if rows_t is None else logits.index_select(0, rows_t)
                step = self._select(sub, slots, wanted)
        except BaseException:
            if broadcast is not None:
                # Followers are waiting for this step's ids; release them with a failure.
                failed = torch.full((len(rows),), FAILED, dtype=torch.int64, device=device)
                broadcast.send(failed)
            raise
        t4 = time.perf_counter()
        if broadcast is not None:
            broadcast.send(step.token)
        force(logits, rows_t, step.token, via_numpy=not on_device)
        t5 = time.perf_counter()
        clock.force_s += t5 - t4

        if wanted:
            # Reads the device's per-row values back (after forcing) and raises
            # any check the device path deferred.
            values = step.values()
            records = build_records(values, slots, self._raw, self._writer_id, self._calibrations)
            for slot in slots:
                slot.sampled += 1
            self._emit(records, slots)
        else:
            self._pending = step.readback  # checked at the next step at the latest
            for slot in slots:
                slot.sampled += 1
        t6 = time.perf_counter()
        clock.record_s += t6 - t5
        clock.total_s += t6 - t0
        clock.steps += 1
        clock.rows += len(rows)

    def _select(self, sub: torch.Tensor, slots: Sequence[Slot], entropy: bool) -> Selected:
        """The host path: temperatures, the fetch, amplification and selection.

        ``entropy``: whether the records need the Shannon entropy (strategies
        that use it compute it anyway). Every per-row array stays in numpy
        (qr_core works on a zero-copy view of the CPU logits) and becomes a
        tensor only where one is needed, without a copy.
        """
        t0 = time.perf_counter()
        clock = self._clock
        n = len(slots)
        device = sub.device
        groups = self._parts.groups(slots)
        if len(groups) == 1:
            _, strategy = self._parts.component(groups[0])
            result = strategy.compute_batch(native(sub), entropy=entropy)
            temperature: torch.Tensor | np.ndarray = result.temperature
            shannon: torch.Tensor | np.ndarray = result.shannon_entropy
        else:
            temperature = torch.empty(n, dtype=torch.float64, device=device)
            shannon = torch.empty(n, dtype=torch.float64, device=device)
            for group in groups:
                _, strategy = self._parts.component(group)
                pos = torch.as_tensor(group.positions, device=device)
                block = native(sub.index_select(0, pos))
                result = strategy.compute_batch(block, entropy=entropy)
                scatter(temperature, pos, torch.as_tensor(result.temperature, device=device))
                scatter(shannon, pos, torch.as_tensor(result.shannon_entropy, device=device))
        clock.temperature_s += time.perf_counter() - t0

        drawn = self._draw(slots, groups, entropy)
        t3 = time.perf_counter()
        top_k = np.fromiter((s.plan.core.top_k for s in slots), dtype=np.int64, count=n)
        top_p = np.fromiter((s.plan.core.top_p for s in slots), dtype=np.float64, count=n)
        logits = native(sub)
        host_engine: Engine = "host" if self._engine == "host" else "auto"
        if isinstance(logits, np.ndarray):
            sel = select_tokens(
                logits,
                drawn.u,
                temperature=host(temperature),
                top_k=top_k,
                top_p=top_p,
                engine=host_engine,
            )
        else:
            sel = select_tokens(
                logits,
                torch.from_numpy(drawn.u).to(device),
                temperature=torch.as_tensor(temperature, device=device),
                top_k=torch.from_numpy(top_k).to(device),
                top_p=torch.from_numpy(top_p).to(device),
                engine=host_engine,
            )
        token = tensor(sel.token_id, device).to(torch.int64)
        clock.select_s += time.perf_counter() - t3
        per_row = (temperature, shannon, sel.token_id, sel.token_rank, sel.token_prob)
        on_host = tuple(host_array(v) for v in (*per_row, sel.num_candidates))
        return Selected(token=token, drawn=drawn, host=on_host, readback=None, rows_t=None)

    def _on_device(self, device: torch.device) -> bool:
        """Whether this sampler takes the device path for logits on ``device``."""
        return self._engine == "device" or (self._engine == "auto" and device.type != "cpu")

    def _select_on_device(
        self, logits: torch.Tensor, rows: Sequence[int], slots: Sequence[Slot], entropy: bool
    ) -> Selected:
        """The device path: one wait, the fetch, one upload, whole-batch operations.

        No Python loop over rows or groups touches the device (only the
        fallback for strategies that are no power law loops over groups).
        """
        n = len(slots)
        device = logits.device
        groups = self._parts.groups(slots)
        # The deferred checks of the previous step: its copy is complete (the
        # wait below would finish it anyway), and its buffer is reused now.
        self.check_pending()
        drawn = self._draw(slots, groups, entropy, device)
        laws = [(group.positions, self._parts.law(group)) for group in groups]
        buffers = self._host_buffers(n, device)

        def fallback(sub: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self._group_temperatures(sub, groups, entropy)

        return select_on_device(logits, rows, slots, drawn, laws, buffers, fallback, self._clock)

    def _draw(
        self,
        slots: Sequence[Slot],
        groups: list[Group],
        recorded: bool,
        wait_for: torch.device | None = None,
    ) -> Drawn:
        """The fetch (after the logits exist) and the amplification, on the host.

        ``recorded``: whether the step builds records (only they need each row's
        byte mean). ``wait_for``: the device whose logits the host must wait for first.
        """
        clock = self._clock
        t1 = time.perf_counter()
        if wait_for is not None and wait_for.type == "cuda":
            # The just-in-time guarantee: entropy is asked for only once the
            # kernels producing the logits have run. The one wait of the step;
            # vLLM's sync check (VLLM_GPU_SYNC_CHECK) is told it is deliberate.
            with sync_allowed():
                torch.cuda.current_stream(wait_for).synchronize()
        logits_ready_ns = time.time_ns()
        n = len(slots)
        counts = np.fromiter((s.plan.core.sample_count for s in slots), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        raw, fetched = step_entropy(slots, offsets, self._fetch, self._fetch_many)
        t2 = time.perf_counter()
        clock.fetch_s += t2 - t1

        names: list[tuple[str, str, str]] = [("", "", "")] * n
        if len(groups) == 1:
            group = groups[0]
            amplifier, strategy = self._parts.component(group)
            amp = amplifier.amplify_batch(
                raw.reshape(n, group.config.sample_count), sample_mean=recorded
            )
            u, z, mean = amp.u, amp.z_score, amp.sample_mean
            names = [(str(amplifier.name), str(strategy.name), amplifier.u_transform)] * n
        else:
            u = np.empty(n, dtype=np.float64)
            z = np.empty(n, dtype=np.float64)
            mean = np.empty(n, dtype=np.float64) if recorded else None
            for group in groups:
                amplifier, strategy = self._parts.component(group)
                block_bytes = gather(raw, offsets, group.positions, group.config.sample_count)
                amp = amplifier.amplify_batch(block_bytes, sample_mean=recorded)
                u[group.positions] = amp.u
                z[group.positions] = amp.z_score
                if mean is not None and amp.sample_mean is not None:
                    mean[group.positions] = amp.sample_mean
                triple = (str(amplifier.name), str(strategy.name), amplifier.u_transform)
                for p in group.positions.tolist():
                    names[p] = triple
        clock.amplify_s += time.perf_counter() - t2
        return Drawn(fetched, raw, offsets, logits_ready_ns, names, mean, z, u)

    def _group_temperatures(
        self, sub: torch.Tensor, groups: list[Group], entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-group temperatures, for a strategy that is no power law (a
        third-party one): a loop over the groups, each checked on the device."""
        n = sub.shape[0]
        temperature = torch.empty(n, dtype=torch.float64, device=sub.device)
        shannon = torch.empty(n, dtype=torch.float64, device=sub.device)
        for group in groups:
            _, strategy = self._parts.component(group)
            pos = torch.as_tensor(group.positions, device=sub.device)
            block = sub.index_select(0, pos)
            result = strategy.compute_batch(block, entropy=entropy, defer_checks=True)
            scatter(temperature, pos, torch.as_tensor(result.temperature, device=sub.device))
            scatter(shannon, pos, torch.as_tensor(result.shannon_entropy, device=sub.device))
        return temperature, shannon

    def _host_buffers(self, n: int, device: torch.device) -> HostBuffers:
        buffers = self._buffers
        if buffers is None or buffers.capacity < n or buffers.pinned != (device.type == "cuda"):
            buffers = self._buffers = HostBuffers(max(n, 256), device.type == "cuda")
        return buffers

    def _follow(self, logits: torch.Tensor, rows: Sequence[int]) -> None:
        """Non-source rank: force exactly the tokens the source rank chose."""
        assert self._broadcast is not None
        device = logits.device
        token_t = torch.empty(len(rows), dtype=torch.int64, device=device)
        self._broadcast.receive(token_t)
        rows_t = None if len(rows) == logits.shape[0] else upload_rows(list(rows), device)
        force(logits, rows_t, token_t, via_numpy=not self._on_device(device))
