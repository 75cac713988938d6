"""A write-through record writer for the kill test of records/test_sinks_writers.py.

Usage: python through_writer.py BASE WRITER_ID N

Writes N records in steps of 8 through ``JsonlFileSink(BASE, writer_id=WRITER_ID,
write_through=True)`` with rotation at 20 kB and an fsync interval of an hour (so
nothing but write-through can have put them in the file), prints "written N", then
waits to be killed without ever closing the sink.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from qr_core.analysis import simulate_records
from qr_core.records import JsonlFileSink


def main() -> None:
    base, writer, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sink = JsonlFileSink(
        base, writer_id=writer, write_through=True, flush_interval_s=3600.0, max_bytes=20_000
    )
    records = [
        dataclasses.replace(r, writer_id=writer)
        for r in simulate_records(n, seed=1, tokens_per_request=10**9)
    ]
    for i in range(0, n, 8):
        sink.write(records[i : i + 8])
    print(f"written {n}", flush=True)
    time.sleep(120)


if __name__ == "__main__":
    main()
