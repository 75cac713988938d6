"""A record-writing process for the kill and SIGTERM tests.

Usage: python writer.py PATH MODE [N]

MODE:
  flood    write N records, print "ready", wait for SIGUSR1; then write forever.
           The parent waits until the file holds N lines, sends SIGUSR1 to start the
           flood, and kills the process with SIGKILL while it writes.
  term     write N records (never calling close), print "ready", sleep. The parent
           sends SIGTERM; the sink's handler must flush before the default action.
  chain    like "term", but a SIGTERM handler is installed first; it must still run
           (it exits with status 7).
  thread   create the sink on a worker thread (no SIGTERM handler possible), write N
           records, print the installed SIGTERM handler name, return normally
           without close(): the atexit hook must flush.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time

from qr_core.analysis import simulate_records
from qr_core.records import JsonlFileSink, TokenSamplingRecord

_ONE_REQUEST = 10**9  # token_index then numbers every record in order


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    if mode == "chain":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
    if mode == "thread":
        holder: list[JsonlFileSink] = []
        t = threading.Thread(
            target=lambda: holder.append(JsonlFileSink(path, flush_interval_s=3600.0))
        )
        t.start()
        t.join()
        holder[0].write(simulate_records(n, seed=1, tokens_per_request=_ONE_REQUEST))
        print(getattr(signal.getsignal(signal.SIGTERM), "__name__", "default"), flush=True)
        return
    flood = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: flood.set())
    # Outside "flood" only the shutdown paths under test can flush the tail.
    flush_interval_s = 0.05 if mode == "flood" else 3600.0
    sink = JsonlFileSink(path, flush_interval_s=flush_interval_s, queue_size=64)
    records = simulate_records(n, seed=1, tokens_per_request=_ONE_REQUEST)
    for i in range(0, n, 4):
        sink.write(records[i : i + 4])
    print("ready", flush=True)
    if mode != "flood":
        time.sleep(60)
        return
    flood.wait(60)
    template = simulate_records(1, seed=2)[0]
    index = n
    while True:
        sink.write([_numbered(template, index + k) for k in range(50)])
        index += 50


def _numbered(record: TokenSamplingRecord, index: int) -> TokenSamplingRecord:
    return dataclasses.replace(record, token_index=index)


if __name__ == "__main__":
    main()
