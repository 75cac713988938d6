"""``QR_LOG_LEVEL=summary``: one log line per finished request.

A line per token floods an operator's log at production rates, so the
``summary`` level keeps a small tally per request (tokens, sum of z,
fallbacks, sources) and logs it once, when the request leaves the batch::

    qr request req=3f2a... tag=experiment tokens=128 mean_z=+0.0412 fallbacks=0 sources=system=128

"Leaves the batch" is what the processor sees: the V1 runner removes the
request's slot (finished, aborted or preempted; a preempted request that
resumes gets a fresh id and a line of its own), Model Runner V2 gives the slot
to another request, or the processor closes. Discarded records (entropy spent
on a token vLLM did not emit) are not tokens of the request and are left out.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from qr_core.records import TokenSamplingRecord

__all__ = ["RequestSummaries", "RequestSummary"]


@dataclass
class RequestSummary:
    """Running tally of one request's tokens."""

    tag: str | None
    """The request's ``qr_request_tag``."""
    tokens: int = 0
    """Tokens sampled so far."""
    z_sum: float = 0.0
    """Sum of their z-scores."""
    fallbacks: int = 0
    """Tokens whose entropy came from the fallback source."""
    sources: Counter[str] = field(default_factory=Counter)
    """Tokens per delivering source name."""

    @property
    def mean_z(self) -> float:
        """Mean z-score of the tokens (0.0 for none)."""
        return self.z_sum / self.tokens if self.tokens else 0.0


class RequestSummaries:
    """Tallies ``summary``-level requests and logs one line when each one ends.

    Args:
        log: Logger receiving the lines at INFO.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._open: dict[str, RequestSummary] = {}

    def add(self, records: Sequence[TokenSamplingRecord]) -> None:
        """Count ``records`` into their requests' tallies."""
        with self._lock:
            for r in records:
                if r.discarded:
                    continue
                tally = self._open.get(r.request_id)
                if tally is None:
                    tally = self._open[r.request_id] = RequestSummary(tag=r.request_tag)
                tally.tokens += 1
                tally.z_sum += r.z_score
                tally.fallbacks += r.fallback
                tally.sources[r.entropy_source] += 1

    def finish(self, request_ids: Iterable[str]) -> None:
        """Log and forget the tallies of requests that left the batch.

        Requests that logged nothing (another level, or no token yet) are skipped.
        """
        with self._lock:
            done = [(rid, self._open.pop(rid)) for rid in request_ids if rid in self._open]
        for rid, tally in done:
            self._log.info(
                "qr request req=%s tag=%s tokens=%d mean_z=%+.4f fallbacks=%d sources=%s",
                rid,
                tally.tag,
                tally.tokens,
                tally.mean_z,
                tally.fallbacks,
                ",".join(f"{name}={n}" for name, n in sorted(tally.sources.items())),
            )

    def finish_all(self) -> None:
        """Log every open tally (the processor is closing)."""
        with self._lock:
            ids = list(self._open)
        self.finish(ids)

    def pending(self) -> int:
        """Number of requests with an open tally."""
        with self._lock:
            return len(self._open)
