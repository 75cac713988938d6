"""A progress bar of the tokens sampled while vLLM generates, on a terminal only.

vLLM's own bar counts finished requests, which in the demo all finish at about
the same moment. This one counts tokens: a thread reads, a few times a
second, how many rows the live qr processors have sampled
(:meth:`~qr_vllm.QRSamplingLogitsProcessor.timings`), against the tokens
planned (``max_tokens`` of every request; fewer when a request ends at its
end-of-sequence token). It draws with ``tqdm``, which every vLLM release
requires, so the demo adds no dependency to a host that can run it.

Nothing is drawn unless the stream is a terminal: CI logs and files stay quiet.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

import qr_vllm

__all__ = ["TokenProgress"]

_INTERVAL_S = 0.2


def _sampled() -> int:
    return sum(p.timings().rows for p in qr_vllm.QRSamplingLogitsProcessor.live_instances())


class TokenProgress:
    """``with TokenProgress(planned, stream):`` around a blocking ``generate``/``chat``.

    Args:
        planned: Tokens planned in all (the bar's total).
        stream: Where to draw; ``None`` or a stream that is not a terminal: nothing.
    """

    def __init__(self, planned: int, stream: TextIO | None) -> None:
        self._planned = planned
        self._stream = stream if stream is not None and stream.isatty() else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: tqdm | None = None
        self._start = 0

    def __enter__(self) -> TokenProgress:
        if self._stream is None:
            return self
        self._start = _sampled()
        self._bar = tqdm(
            total=self._planned,
            desc="Generating",
            unit="tok",
            file=self._stream,
            leave=False,
        )
        self._thread = threading.Thread(target=self._run, name="qr-demo-progress", daemon=True)
        self._thread.start()
        return self

    def _update(self) -> None:
        assert self._bar is not None
        done = min(_sampled() - self._start, self._planned)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def _run(self) -> None:
        while not self._stop.wait(_INTERVAL_S):
            self._update()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is None or self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._update()
        self._bar.refresh()
        self._bar.close()
