"""One Ray head node inside a :class:`~namespace.LoopbackNamespace`, and its drivers.

The head is started once per test session (``ray start --head``, every address
option set to 127.0.0.1, though in the namespace nothing else exists). Its
processes, and the Ray workers they start, inherit the environment given to
``ray start``: the CPU platform plugin on ``PYTHONPATH`` and no ``QR_*``
setting at all, so a worker sees a ``QR_*`` value only when vLLM carried it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .namespace import LoopbackNamespace

HERE = Path(__file__).resolve().parent
PLATFORM_PLUGIN = HERE / "cpu_platform"
RUNNER = HERE / "runner.py"
RESULT_PREFIX = "qr-ray-result: "
GCS_PORT = 6379  # the namespace has its own port space: no clash with another cluster
# vLLM ranks the cluster can hold at once (each takes one Ray "GPU", see
# cpu_platform/qr_ray_cpu_platform.py); logical CPUs for the data-parallel
# engines' placement bundles. Neither limits the real cores.
RAY_GPUS = 2
RAY_CPUS = 4
DRIVER_TIMEOUT_S = 600.0  # liveness bound on two shared cores, not a timing
# How long the actors of an ended (or killed) driver may keep their Ray "GPUs".
IDLE_TIMEOUT_S = 300.0

# Never inherited by the cluster: the scenarios decide what reaches the workers.
_SCENARIO_PREFIXES = ("QR_", "VLLM_RAY_", "RAY_ADDRESS")


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``QR_*``/``VLLM_RAY_*``, plus the plugin path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCENARIO_PREFIXES)}
    path = [str(PLATFORM_PLUGIN), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(path),
            "RAY_USAGE_STATS_ENABLED": "0",
            "VLLM_HOST_IP": "127.0.0.1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    env.update(extra or {})
    return env


def _result_line(stdout: str) -> dict[str, Any]:
    """The JSON of runner.py's last ``qr-ray-result:`` line; empty if it printed none."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX)) if lines else {}


@dataclass
class DriverRun:
    """One run of runner.py: its result line, return code and output."""

    result: dict[str, Any]
    returncode: int
    output: str
    wall_s: float

    def tail(self, n: int = 6000) -> str:
        return self.output[-n:]


@dataclass
class RayCluster:
    """A running Ray head in its namespace."""

    namespace: LoopbackNamespace
    temp_dir: Path
    start_s: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{GCS_PORT}"

    def driver_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a driver: the cluster's, ``RAY_ADDRESS``, then ``extra``."""
        return clean_environment({"RAY_ADDRESS": self.address, **(extra or {})})

    def run_driver(
        self,
        args: Sequence[str],
        extra_env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> DriverRun:
        """Run ``runner.py args`` inside the namespace (from ``cwd``); parse its result line.

        First waits until no earlier driver's actors hold a Ray "GPU", so that
        one test that failed or ran past its bound cannot fail the next.
        """
        waited = self.wait_until_idle()
        print(f"Ray GPUs all free after {waited:.1f} s")
        t0 = time.monotonic()
        done = self.namespace.run(
            # Not under `nice`: beside CPU-bound work a niced driver gets a tenth of a
            # core and ran past DRIVER_TIMEOUT_S (`hatch run test-under-load`).
            [sys.executable, str(RUNNER), *args],
            env=self.driver_env(extra_env),
            timeout=DRIVER_TIMEOUT_S,
            cwd=cwd,
        )
        wall = time.monotonic() - t0
        output = done.stdout + done.stderr
        result = _result_line(done.stdout)
        return DriverRun(result, done.returncode, output, wall)

    def wait_until_idle(self) -> float:
        """Wait until every Ray "GPU" of the cluster is free; return the seconds waited."""
        done = self.namespace.run(
            [sys.executable, str(RUNNER), "idle", "--timeout", str(IDLE_TIMEOUT_S)],
            env=self.driver_env(),
            timeout=IDLE_TIMEOUT_S + 120,  # plus the check's own start, on shared cores
        )
        state = _result_line(done.stdout)
        assert state.get("idle"), (
            f"the Ray cluster's GPUs are still held by an earlier driver's actors: {state}\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
        waited: float = state["waited_s"]
        self.timings["idle_wait_s"] = self.timings.get("idle_wait_s", 0.0) + waited
        return waited

    def stop(self) -> list[int]:
        """``ray stop --force`` inside, then end the namespace (and whatever is left).

        Returns:
            The PIDs of the cluster's processes still alive afterwards (none).
        """
        try:
            ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
            self.namespace.run([ray, "stop", "--force"], env=clean_environment(), timeout=120)
        finally:
            self.namespace.close()
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        left: list[int] = self.namespace.member_pids()
        return left


def start_cluster(namespace: LoopbackNamespace) -> RayCluster:
    """``ray start --head`` inside ``namespace``, bound to 127.0.0.1."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray is not None, "the `ray` command must be installed next to python"
    # Short: Ray's unix sockets live under it (about 100 bytes at most).
    temp_dir = Path(tempfile.mkdtemp(prefix="qr-ray-"))
    env = clean_environment(
        {
            # No idle Python workers started ahead of need: two shared cores.
            "RAY_enable_worker_prestart": "0",
            "RAY_prestart_worker_first_driver": "0",
            # Ray starts its workers (vLLM's ranks and engines: the actors) at nice
            # 15 by default. Beside CPU-bound work they then get a few percent of a
            # core: under `hatch run test-under-load` the tensor-parallel workers
            # took 6 minutes to import vLLM, and the driver ran past its bound.
            "RAY_worker_niceness": "0",
        }
    )
    argv = [
        ray,
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={GCS_PORT}",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--num-cpus={RAY_CPUS}",
        f"--num-gpus={RAY_GPUS}",
        "--object-store-memory=100000000",
        f"--temp-dir={temp_dir}",
    ]
    t0 = time.monotonic()
    # Ray's processes (and the workers they start) run in the cluster's own
    # directory, never in a driver's: a relative QR_RECORD_PATH would differ.
    done = namespace.run(argv, env=env, timeout=180, cwd=temp_dir)
    start_s = time.monotonic() - t0
    cluster = RayCluster(namespace, temp_dir, start_s)
    if done.returncode != 0:
        cluster.stop()
        raise AssertionError(f"ray start failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return cluster
