"""The processor's monitoring: its metrics, its endpoint and the entropy budget (issue 26).

Built on the rank that fetches entropy and writes records (one per data-parallel
rank): :class:`EngineMonitor` counts every step (:mod:`qr_vllm._metrics`), keeps the
entropy budget and its warning (:mod:`qr_vllm._budget`, whether or not anything
scrapes) and serves the metrics on ``QR_METRICS_PORT + rank``
(:mod:`qr_vllm._metrics_endpoint`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from qr_entropy import ArmSources
from qr_vllm._metrics import EngineMetrics
from qr_vllm._metrics_endpoint import MetricsEndpoint, serve_rank
from qr_vllm._record_router import data_parallel_index
from qr_vllm._settings import EngineSettings
from qr_vllm.step import ArmTally

if TYPE_CHECKING:
    from vllm.config import VllmConfig

__all__ = ["EngineMonitor"]

logger = logging.getLogger(__name__)


class EngineMonitor:
    """One processor's metrics and, when ``QR_METRICS_PORT`` is not 0, their endpoint."""

    def __init__(self, metrics: EngineMetrics, endpoint: MetricsEndpoint | None) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self._failed = False

    @classmethod
    def start(
        cls, sources: ArmSources | None, settings: EngineSettings, vllm_config: VllmConfig
    ) -> EngineMonitor | None:
        """Start monitoring on the rank that fetches (``sources`` set); ``None`` elsewhere.

        Raises:
            QRParamsError: ``QR_METRICS_PORT`` plus this rank is above 65535.
        """
        if sources is None:
            return None
        metrics = EngineMetrics(sources)
        rank = data_parallel_index(vllm_config)
        endpoint = serve_rank(
            metrics.registry, settings.metrics_address, settings.metrics_port, rank
        )
        return cls(metrics, endpoint)

    def observe(self, tallies: Sequence[ArmTally]) -> None:
        """Count one step; a failure of the metrics is logged once, never raised."""
        try:
            self.metrics.observe(tallies)
        except Exception:
            if not self._failed:
                self._failed = True
                logger.exception("qr metrics: counting a step failed; sampling goes on")

    def records_written(self, count: int) -> None:
        """The record file accepted ``count`` records."""
        self.metrics.records_written(count)

    def records_failed(self, count: int) -> None:
        """The record file refused ``count`` records."""
        self.metrics.records_failed(count)

    def close(self) -> None:
        """Stop serving this processor's metrics. Idempotent."""
        if self.endpoint is not None:
            self.endpoint.close()
