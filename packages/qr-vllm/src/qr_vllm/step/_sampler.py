"""One sampling step over the whole batch: the adapter's hot path.

For the qr-sampled rows of a logits tensor, :class:`StepSampler` reads the rows
once (:class:`~qr_vllm.step.StepMetadata`), makes ONE entropy fetch for all rows
after the logits exist, amplifies the bytes, computes the temperatures, selects
the tokens with :func:`qr_core.select_tokens` and forces each selected token
(0.0, all others ``-inf``); then, when a sink receives them, it builds the
records. The operations are in :mod:`qr_vllm.step._ops`; this module runs them
in order and times each stage.

Two paths, chosen by ``engine`` (see :class:`StepSampler`):

* host (CPU logits): temperatures, then the fetch and the amplification, then
  the selection; every per-row array stays in numpy, qr_core works on a
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

import time
from collections.abc import Mapping, Sequence
from typing import get_args

import torch

from qr_core import Calibration, Engine
from qr_vllm._errors import QRVllmError
from qr_vllm.step._groups import RowGrouper
from qr_vllm.step._interface import (
    FAILED,
    EmitRecords,
    Fetch,
    FetchMany,
    Slot,
    TokenBroadcast,
    WantsRecords,
)
from qr_vllm.step._metadata import StepMetadata
from qr_vllm.step._ops.arrays import force
from qr_vllm.step._ops.device import device_temperatures, select_on_device, upload
from qr_vllm.step._ops.entropy import draw
from qr_vllm.step._ops.host import host_temperatures, host_values, select_on_host
from qr_vllm.step._ops.transfer import HostBuffers, Readback, upload_rows
from qr_vllm.step._outputs import Selected
from qr_vllm.step._records import step_records
from qr_vllm.step._tally import ObserveStep, tally
from qr_vllm.step._timings import StageClock, StepTimings

__all__ = ["StepSampler"]


class StepSampler:
    """Samples and forces the qr-sampled rows of one logits tensor per call."""

    def __init__(
        self,
        fetch: Fetch,
        emit: EmitRecords,
        *,
        fetch_many: FetchMany | None = None,
        wants_records: WantsRecords | None = None,
        record_raw_bytes: bool = False,
        broadcast: TokenBroadcast | None = None,
        writer_id: str | None = None,
        calibrations: Mapping[str | None, Calibration] | None = None,
        engine: Engine = "auto",
        preregistration_sha256: str | None = None,
        observe: ObserveStep | None = None,
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
            preregistration_sha256: The pre-registered plan's hash
                (``QR_PREREGISTRATION_PATH``), written into every record and folded
                into its config hash; ``None``: not pre-registered.
            observe: Receives each step's :class:`~qr_vllm.step.ArmTally` per arm
                (tokens, z sum, fetch), after the tokens are forced; ``None``: nobody
                counts, and the step computes no tallies.

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
        self._preregistration = preregistration_sha256
        self._observe = observe
        self._engine = engine
        self._host_engine: Engine = "host" if engine == "host" else "auto"
        self._grouper = RowGrouper(self._calibrations)
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
        on_device = self._on_device(logits.device)
        # Asked once, before anything is computed: a step nobody records needs
        # no records, nor the entropy of a strategy that does not use it.
        recorded = self._wants is None or self._wants(slots)
        try:
            meta = StepMetadata.build(
                logits.shape[0], rows, slots, self._grouper, recorded=recorded, on_device=on_device
            )
            if on_device:
                step = self._select_on_device(logits, meta)
            else:
                step = self._select_on_host(logits, meta)
        except BaseException:
            if broadcast is not None:
                # Followers are waiting for this step's ids; release them with a failure.
                failed = torch.full((len(rows),), FAILED, dtype=torch.int64, device=logits.device)
                broadcast.send(failed)
            raise
        t4 = time.perf_counter()
        if broadcast is not None:
            broadcast.send(step.token)
        force(logits, step.rows_t, step.token, via_numpy=not on_device)
        t5 = time.perf_counter()
        clock.force_s += t5 - t4

        if recorded:
            # Reads the device's per-row values back (after forcing) and raises
            # any check the device path deferred.
            records = step_records(
                meta,
                step.drawn,
                step.values(),
                keep_raw=self._raw,
                writer_id=self._writer_id,
                calibrations=self._calibrations,
                preregistration_sha256=self._preregistration,
            )
            for slot in slots:
                slot.sampled += 1
            self._emit(records, slots)
        else:
            self._pending = step.readback  # checked at the next step at the latest
            for slot in slots:
                slot.sampled += 1
        if self._observe is not None:
            self._observe(tally(step.drawn))
        t6 = time.perf_counter()
        clock.record_s += t6 - t5
        clock.total_s += t6 - t0
        clock.steps += 1
        clock.rows += len(rows)

    def _select_on_host(self, logits: torch.Tensor, meta: StepMetadata) -> Selected:
        """The host path: temperatures, the fetch and amplification, selection."""
        clock = self._clock
        rows_t = None if meta.whole else torch.as_tensor(meta.rows, device=logits.device)
        sub = logits if rows_t is None else logits.index_select(0, rows_t)
        t0 = time.perf_counter()
        temperature, shannon = host_temperatures(sub, meta.groups, meta.recorded)
        clock.temperature_s += time.perf_counter() - t0

        drawn = draw(meta, self._fetch, self._fetch_many, clock)

        t3 = time.perf_counter()
        token, sel = select_on_host(sub, drawn.u, temperature, meta, self._host_engine)
        clock.select_s += time.perf_counter() - t3
        values = host_values(temperature, shannon, sel)
        return Selected(token=token, rows_t=rows_t, drawn=drawn, host=values, readback=None)

    def _select_on_device(self, logits: torch.Tensor, meta: StepMetadata) -> Selected:
        """The device path: one wait, the fetch, one upload, whole-batch operations.

        No Python loop over rows or groups touches the device (only the
        fallback for strategies that are no power law loops over groups).
        """
        clock = self._clock
        # The deferred checks of the previous step: its copy is complete (the
        # wait below would finish it anyway), and its buffer is reused now.
        self.check_pending()
        drawn = draw(meta, self._fetch, self._fetch_many, clock, wait_for=logits.device)
        buffers = self._buffers = HostBuffers.fit(self._buffers, meta.size, logits.device)

        t3 = time.perf_counter()
        up = upload(logits, meta, drawn.u, buffers)
        clock.amplify_s += time.perf_counter() - t3

        t4 = time.perf_counter()
        temperature, shannon = device_temperatures(up, meta)
        t5 = time.perf_counter()
        clock.temperature_s += t5 - t4

        token, readback = select_on_device(up, temperature, shannon, buffers)
        clock.select_s += time.perf_counter() - t5
        return Selected(token=token, rows_t=up.rows_t, drawn=drawn, host=None, readback=readback)

    def _on_device(self, device: torch.device) -> bool:
        """Whether this sampler takes the device path for logits on ``device``."""
        return self._engine == "device" or (self._engine == "auto" and device.type != "cpu")

    def _follow(self, logits: torch.Tensor, rows: Sequence[int]) -> None:
        """Non-source rank: force exactly the tokens the source rank chose."""
        assert self._broadcast is not None
        device = logits.device
        token_t = torch.empty(len(rows), dtype=torch.int64, device=device)
        self._broadcast.receive(token_t)
        rows_t = None if len(rows) == logits.shape[0] else upload_rows(list(rows), device)
        force(logits, rows_t, token_t, via_numpy=not self._on_device(device))
