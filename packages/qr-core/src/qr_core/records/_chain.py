"""The hash chain of one writer's record series: the line envelope, the start and the seal.

Every record line a :class:`~qr_core.records.JsonlFileSink` writes is the record's
JSON object with one more key, ``"chain"``, always last::

    {...record fields...,"chain":{"n":5,"prev":"<sha256 of the previous line>"}}

* ``n`` is the record's position in its series (0, 1, 2, ...), ``prev`` the SHA-256
  (hex) of the exact bytes of the series' previous record line, newline included.
* The first record of a series carries ``"prev":null`` and the series-start marker
  ``"start":{"series":<random id>,"writer_id":...,"started_ns":...}``.
* The first line the writer puts into each file carries ``"seg"``: the segment number
  that file has (or, for the live file, will have when it is rotated), so a missing
  or renamed segment shows.
* A clean shutdown (``close``, interpreter exit, SIGTERM) ends the series with a seal
  line, which is no record::

    {"seal":{"series":...,"writer_id":...,"count":N,"last_sha256":...,"sealed_ns":...}}

  ``count`` records were written and ``last_sha256`` is the hash of the last one's
  line. The SHA-256 of the seal line itself is the series' final hash (the one
  ``qr-analyze verify --manifest`` prints).

The chain lives in the line, not in :class:`~qr_core.records.TokenSamplingRecord`:
a record is made before the writer knows its place in the file, and the same record
goes to other sinks too. Readers take the ``"chain"`` key off and skip seal lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from typing import Final

__all__ = [
    "CHAIN_KEY",
    "CHAIN_MARK",
    "SEAL_KEY",
    "SEAL_PREFIX",
    "SeriesChain",
    "is_seal",
    "split_chain",
]

_logger = logging.getLogger(__name__)

CHAIN_KEY: Final = "chain"
"""The envelope key of a record line."""
SEAL_KEY: Final = "seal"
"""The only key of a seal line."""
CHAIN_MARK: Final = b',"chain":{'
"""Where the envelope starts in a record line (it is the line's last key; a string
value cannot hold these bytes, since JSON escapes every quote inside a string)."""
SEAL_PREFIX: Final = b'{"seal":'
"""How a seal line starts."""

_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def split_chain(line: bytes) -> tuple[bytes, bytes | None]:
    """Split a record line into the record's JSON object and its envelope's JSON.

    Returns:
        ``(record_json, envelope_json)``; ``envelope_json`` is ``None`` for a line
        without a chain (written before version 3, or not by a file sink).
    """
    at = line.rfind(CHAIN_MARK)
    if at < 0:
        return line, None
    tail = line.rstrip(b"\r\n")
    # {..., "chain":{...}}  ->  {...}  and  {...}
    return line[:at] + b"}", tail[at + len(CHAIN_MARK) - 1 : -1]


def is_seal(line: bytes) -> bool:
    """Whether ``line`` is a seal line (no record)."""
    return line.startswith(SEAL_PREFIX)


class SeriesChain:
    """The chain state of one writer's series: position, last hash, the next ``seg``.

    Not thread-safe: the sink calls it from one thread at a time, like the file.

    Args:
        writer_id: The writer's id, put into the start marker and the seal.
        started_ns: Start time (wall clock, ns) for the start marker; now by default.
    """

    def __init__(self, writer_id: str | None, started_ns: int | None = None) -> None:
        self.series = secrets.token_hex(8)
        """Random id of the series (16 hex characters)."""
        self.writer_id = writer_id
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        self.count = 0
        """Records chained so far."""
        self.last_sha256: str | None = None
        """SHA-256 of the last record line."""
        self.final_sha256: str | None = None
        """SHA-256 of the seal line, once sealed."""
        self._segment: int | None = None
        start = {"series": self.series, "writer_id": writer_id, "started_ns": self.started_ns}
        self._start: Final = ',"start":' + _JSON.encode(start)

    def new_file(self, segment: int) -> None:
        """The next line goes to a new file, which is (or will be) segment ``segment``."""
        self._segment = segment

    def envelope(self) -> str:
        """The ``"chain"`` key and value of the next record line, with the comma before it.

        Pure: :meth:`commit` the line once it is decided where it goes (a rotation
        in between calls for a new envelope, with the new file's ``seg``).
        """
        prev = "null" if self.last_sha256 is None else '"' + self.last_sha256 + '"'
        text = ',"chain":{"n":' + str(self.count) + ',"prev":' + prev
        if self._segment is not None:
            text += ',"seg":' + str(self._segment)
        if self.count == 0:
            text += self._start
        return text + "}"

    def commit(self, line: bytes) -> None:
        """``line`` (from :meth:`line`) is written: it is now the last in the chain."""
        self.last_sha256 = hashlib.sha256(line).hexdigest()
        self.count += 1
        self._segment = None

    def seal_line(self, sealed_ns: int | None = None) -> bytes:
        """Return the seal line of the series, and remember its hash as the final one."""
        seal = {
            "series": self.series,
            "writer_id": self.writer_id,
            "count": self.count,
            "last_sha256": self.last_sha256,
            "sealed_ns": time.time_ns() if sealed_ns is None else sealed_ns,
        }
        line = ('{"seal":' + _JSON.encode(seal) + "}\n").encode("ascii")
        self.final_sha256 = hashlib.sha256(line).hexdigest()
        return line
