"""How the test servers run as processes: listen, print the ready line, serve until SIGTERM.

Imported by ``fault_server.py`` and ``qrng_server.py``, which run as scripts (their
folder is then first on ``sys.path``).
"""

from __future__ import annotations

import signal
import threading

import grpc


def serve_until_sigterm(server: grpc.Server, address: str, ready: str) -> None:
    """Listen on ``address``, print ``ready`` + the bound address, serve until SIGTERM."""
    port = server.add_insecure_port(address)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    bound = address if address.startswith("unix:") else f"127.0.0.1:{port}"
    print(ready + bound, flush=True)
    stop.wait()
    server.stop(0).wait()
