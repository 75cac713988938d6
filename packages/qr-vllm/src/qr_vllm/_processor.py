"""The vLLM logits processor, for both model runners of vLLM 0.32.

vLLM reads the entry-point group ``vllm.logits_processors`` from two model
runners with two interfaces:

* the V1 runner (``vllm.v1.sample.logits_processor.LogitsProcessor``):
  ``__init__(vllm_config, device, is_pin_memory)``, ``update_state(BatchUpdate)``,
  ``apply(logits)``, ``is_argmax_invariant()``;
* Model Runner V2 (``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor``):
  ``__init__(vllm_config, req_states)``, ``add_request(slot, params)``,
  ``apply_staged_writes()``, ``apply(logits, ctx)``. Its loader refuses any
  class of the group that is not a V2 subclass.

Because both runners load the same entry point, :class:`QRSamplingLogitsProcessor`
subclasses both interfaces and tells them apart by its constructor
arguments. Both paths feed one :class:`~qr_vllm._batch.BatchState` and one
:class:`~qr_vllm.step.StepSampler`; only the mapping from logits rows to
slots differs (:mod:`qr_vllm._logits_rows`; V1: row = slot; V2:
``ctx.idx_mapping_np``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from vllm.v1.sample.logits_processor.interface import BatchUpdate
from vllm.v1.sample.logits_processor.interface import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsContext,
    LogitsProcRequestState,
)
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsProcessor as V2LogitsProcessor,
)

from qr_core import Calibration, QRCoreError, build_amplifier
from qr_core.records import TokenSamplingRecord
from qr_entropy import ArmSources, EntropyFetch
from qr_vllm._adapter_config import AdapterConfig
from qr_vllm._batch import ARM_KEY, BatchState, arm_for_params, plan_for_params
from qr_vllm._engine_guard import check_engine
from qr_vllm._errors import QRParamsError
from qr_vllm._logits_rows import v1_rows, v2_rows
from qr_vllm._monitor import EngineMonitor
from qr_vllm._record_router import RecordRouter, warn_if_records_can_be_lost, writer_id_for
from qr_vllm._settings import SamplingSettings
from qr_vllm._shutdown import track
from qr_vllm._stamp import check_fingerprint
from qr_vllm._start_probe import start_up_checks
from qr_vllm._tensor_parallel import tensor_parallel_broadcast
from qr_vllm.step import Slot, StepSampler, StepTimings

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

__all__ = ["QRSamplingLogitsProcessor"]

logger = logging.getLogger(__name__)


class QRSamplingLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """Samples every qr-enabled request's token with external entropy.

    The selected token's logit becomes 0.0 and every other logit ``-inf``, so
    vLLM's own temperature, top-k/top-p, min-p and penalties cannot change
    the choice.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _base: ClassVar[SamplingSettings | None] = None
    # Arm names (QR_SOURCES) that requests may choose; set together with _base.
    _arms: ClassVar[tuple[str, ...]] = ()
    # Calibration by arm (None: the default source); an uncalibrated arm is absent.
    _calibrations: ClassVar[Mapping[str | None, Calibration]] = {}
    _live: ClassVar[weakref.WeakSet[QRSamplingLogitsProcessor]] = weakref.WeakSet()

    def __init__(self, vllm_config: VllmConfig, *args: Any) -> None:
        """Create the processor for either model runner.

        Args:
            vllm_config: The engine configuration.
            *args: ``(device, is_pin_memory)`` from the V1 runner, or
                ``(req_states,)`` from Model Runner V2.

        Raises:
            UnsupportedEngineError: Speculative decoding or a pooling model
                while ``QR_ENABLED`` is true.
            ConfigurationMismatchError: This process reads another qr
                configuration than the front end stamped into ``vllm_config``.
            TypeError: The arguments match neither runner.
        """
        self._req_states: LogitsProcRequestState | None = None
        if len(args) == 1 and isinstance(args[0], LogitsProcRequestState):
            self.runner = "v2"
            self._req_states = args[0]
        elif len(args) == 2 and isinstance(args[0], torch.device | str):
            self.runner = "v1"
        else:
            raise TypeError(
                "QRSamplingLogitsProcessor(vllm_config, *args): args must be "
                "(device, is_pin_memory) for the V1 runner or (req_states,) for "
                f"Model Runner V2, got {tuple(type(a).__name__ for a in args)}"
            )
        # The front end's configuration, or no start (issue 29: _stamp.py).
        self.config = check_fingerprint(vllm_config, AdapterConfig.from_env())
        if self.config.sampling.enabled:
            # With QR_ENABLED=false every request is vLLM's own unless it opts
            # in, which the front end's engine guard refuses in such modes.
            check_engine(vllm_config)
        with QRSamplingLogitsProcessor._lock:
            QRSamplingLogitsProcessor._base = self.config.sampling
            QRSamplingLogitsProcessor._arms = tuple(self.config.sources)
            QRSamplingLogitsProcessor._calibrations = self.config.calibrations
        self._state = BatchState(self.config.sampling, self.config.sources)
        broadcast = tensor_parallel_broadcast(vllm_config)
        self._is_source = broadcast is None or broadcast.is_source
        # Only the rank that fetches entropy opens sources and writes records.
        self._sources = (
            ArmSources.build(self.config.entropy, self.config.sources) if self._is_source else None
        )
        # A server refusing the configuration (issue 26) or a calibration of another
        # device (issue 24) stops the start.
        self._device_check = start_up_checks(self._sources, self.config)
        self.writer_id = writer_id_for(vllm_config)
        counts = self._monitor = EngineMonitor.start(self._sources, self.config.engine, vllm_config)
        self._router = (
            RecordRouter(self.config.records, self.writer_id, counts) if self._is_source else None
        )
        if self._router is not None and self._router.file is not None:
            warn_if_records_can_be_lost(vllm_config, self.runner)
        self._sampler = StepSampler(
            self._fetch,
            self._emit,
            fetch_many=self._fetch_many,
            wants_records=self._wants_records,
            record_raw_bytes=self.config.records.record_raw_bytes,
            broadcast=broadcast,
            writer_id=self.writer_id,
            calibrations=self.config.calibrations,
            preregistration_sha256=(
                None if self.config.preregistration is None else self.config.preregistration.sha256
            ),
            observe=None if self._monitor is None else self._monitor.observe,
        )
        self._closed = False
        QRSamplingLogitsProcessor._live.add(self)
        atexit.register(_close_quietly, weakref.ref(self))
        track(self)  # closed when vLLM stops the engine, also where atexit never runs (Ray)
        logger.info(
            "qr sampling active: model runner %s, entropy source %r, fallback %r, records %s, "
            "arms %s",
            self.runner,
            self.config.entropy.entropy_source_type,
            self.config.entropy.fallback_mode,
            self.config.records.record_path or "(no file)",
            {n: c.entropy_source_type for n, c in self.config.sources.items()} or "(none)",
        )

    # ------------------------------------------------------------------ both runners

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Reject bad ``qr_*`` keys when a request is admitted (vLLM answers 400).

        Raises:
            QRParamsError: (a ``ValueError``) naming the key and the allowed values.
        """
        plan = plan_for_params(cls._base_settings(), sampling_params)
        arm = arm_for_params(sampling_params, cls._arm_names())
        with cls._lock:
            calibration = cls._calibrations.get(arm)
        if plan is not None and calibration is not None:
            try:
                build_amplifier(plan.core, calibration)
            except QRCoreError as exc:
                # A request may not change what its arm's calibration was measured for.
                where = (
                    "with QR_CALIBRATION_PATH set"
                    if arm is None
                    else f"{ARM_KEY}={arm!r} is calibrated (calibration_path in QR_SOURCES)"
                )
                raise QRParamsError(f"{where}: {exc}") from None

    @classmethod
    def _base_settings(cls) -> SamplingSettings:
        with cls._lock:
            if cls._base is None:
                # The API server process validates requests but never builds a processor.
                config = AdapterConfig.from_env()
                cls._base = config.sampling
                cls._arms = tuple(config.sources)
                cls._calibrations = config.calibrations
            return cls._base

    @classmethod
    def _arm_names(cls) -> tuple[str, ...]:
        cls._base_settings()
        with cls._lock:
            return cls._arms

    @classmethod
    def live_instances(cls) -> list[QRSamplingLogitsProcessor]:
        """Processors alive and not closed in this process (for tests and benchmarks)."""
        return [p for p in list(cls._live) if not p._closed]

    def is_argmax_invariant(self) -> bool:
        """``False``: forcing a sampled token changes the argmax."""
        return False

    def apply(self, logits: torch.Tensor, ctx: LogitsContext | None = None) -> torch.Tensor:
        """Force the qr-selected token in every qr-sampled row, in place.

        Args:
            logits: ``(rows, vocab)`` logits of this step.
            ctx: Model Runner V2's batch layout; ``None`` under the V1 runner.

        Returns:
            ``logits`` (modified in place).
        """
        if ctx is None:
            rows, slots = v1_rows(logits, self._state)
        else:
            assert self._req_states is not None
            rows, slots = v2_rows(logits, ctx, self._req_states, self._state)
        self._sampler.sample(logits, rows, slots)
        return logits

    # ------------------------------------------------------------------ V1 runner

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """V1 runner: apply the batch changes (removed, then added, then moved).

        Called at the start of every step, after vLLM has stored the previous
        step's tokens: the moment to settle the rows it may have discarded.
        """
        if self._router is not None:
            self._router.settle()
        if batch_update is None:
            return
        before = self._request_ids()
        self._state.apply_update(batch_update.removed, batch_update.added, batch_update.moved)
        self._finished(before - self._request_ids())

    # ------------------------------------------------------------------ V2 runner

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        """Model Runner V2: a request takes slot ``req_idx``.

        Returns:
            Whether this processor changes the request's logits.
        """
        # V2 reports no removals: a request is over when its slot is reused.
        previous = self._state.get(req_idx)
        taken = self._state.add(req_idx, sampling_params, None)
        if previous is not None:
            self._finished({previous.plan.request_id})
        return taken

    def apply_staged_writes(self) -> None:
        """Model Runner V2: nothing is staged on the device."""

    # ------------------------------------------------------------------ finished requests

    def _request_ids(self) -> set[str]:
        return {slot.plan.request_id for slot in self._state.slots().values()}

    def _finished(self, request_ids: set[str]) -> None:
        """Requests that left the batch: their ``summary`` log lines."""
        if request_ids and self._router is not None:
            self._router.finish(request_ids)

    # ------------------------------------------------------------------ records

    def diagnostic_records(self) -> list[TokenSamplingRecord]:
        """Records of ``diagnostic_mode`` requests still held in memory, oldest first.

        Call it while the engine is idle (between ``generate`` calls): it settles
        the last step's rows first (see :mod:`qr_vllm._emitted`).
        """
        if self._router is None:
            return []
        self._router.settle()
        return self._router.diagnostic.records()

    def record_file(self) -> Path | None:
        """The JSON Lines file this processor writes (``None`` without ``QR_RECORD_PATH``).

        With a writer id it is this process's own series under ``QR_RECORD_PATH``.
        """
        if self._router is None or self._router.file is None:
            return None
        return self._router.file.path

    def timings(self) -> StepTimings:
        """Cumulative per-stage time of this processor's sampling steps."""
        return self._sampler.timings()

    def reset_timings(self) -> None:
        """Zero the cumulative timings."""
        self._sampler.reset_timings()

    def close(self) -> None:
        """Flush and close the record file and the entropy source. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for part in (self._router, self._monitor, self._sources):
            if part is not None:
                part.close()

    def _fetch(self, n: int) -> EntropyFetch:
        assert self._sources is not None
        fetched = self._sources.default.fetch(n)
        if self._device_check.pending:
            self._device_check.check(None, fetched)
        return fetched

    def _fetch_many(self, counts: Mapping[str | None, int]) -> Mapping[str | None, EntropyFetch]:
        assert self._sources is not None
        fetched = self._sources.fetch_many(counts)
        if self._device_check.pending:
            for arm, fetch in fetched.items():
                self._device_check.check(arm, fetch)
        return fetched

    def _wants_records(self, slots: Sequence[Slot]) -> bool:
        assert self._router is not None
        return self._router.wants(slots)

    def _emit(self, records: Sequence[TokenSamplingRecord], slots: Sequence[Slot]) -> None:
        assert self._router is not None
        self._router.emit(records, slots)


def _close_quietly(ref: weakref.ReferenceType[QRSamplingLogitsProcessor]) -> None:
    processor = ref()
    if processor is not None:
        try:
            processor.close()
        except Exception:
            logger.exception("closing the qr sampling processor failed")
