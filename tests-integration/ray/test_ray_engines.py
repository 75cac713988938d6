"""vLLM on a real Ray cluster (Ray from PyPI, vLLM CPU), confined to 127.0.0.0/8.

One Ray head shared by the tests (conftest.py), in a network namespace whose
only interface is ``lo`` (namespace.py); every vLLM driver runs inside it too
(runner.py). vLLM CPU needs a Ray resource key to run on Ray at all: the
platform plugin in cpu_platform/ gives it one, for these tests only.

* Tensor parallelism (2 ranks, vLLM's default Ray executor) and data
  parallelism (``vllm serve --data-parallel-backend ray``, 2 engines): every
  returned token has exactly one record, and both tensor-parallel ranks force
  the same tokens, step by step.
  The records are checked right after the engine has stopped, with no wait:
  Ray kills its actors, so only qr-vllm's close at vLLM's engine shutdown
  (qr_vllm._shutdown) gets the last records out and seals the files.
* The ``QR_*`` settings must be the same in every process that builds the
  processor. Where they are not, the engine refuses to start and says how to
  carry them (qr_vllm._stamp); no request can kill it.

Each run prints its phases' durations (cluster, engine start, requests).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qr_core.records import RecordError, read_records, verify_chain, writer_files

from ..vllm.serve_helpers import assert_each_token_once  # noqa: TID252 - shared helper
from .cluster import DriverRun, RayCluster
from .namespace import is_loopback_address, parse_listeners

pytestmark = pytest.mark.slow

ARM_SOURCES = json.dumps({"sham": {"entropy_source_type": "system"}})
_PROMPTS = ("Hello there", "Once upon", "The quick", "In the")
COPY_QR = {"VLLM_RAY_EXTRA_ENV_VAR_PREFIXES_TO_COPY": "QR_"}
OLDER_EXECUTOR = {"VLLM_USE_RAY_V2_EXECUTOR_BACKEND": "0"}
# The engine core in the driver process: one process less to start (the
# workers are Ray actors either way).
IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
MISMATCH = "ConfigurationMismatchError"
# The runner sends a function to the workers (collective_rpc) to see what each rank forced.
WATCH = {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}


def _requests(n: int, **extra: Any) -> str:
    return json.dumps(
        [{"tag": f"r{i}", "prompt": _PROMPTS[i % len(_PROMPTS)], "extra": extra} for i in range(n)]
    )


def _generate(
    cluster: RayCluster,
    model: Path,
    tp: int,
    requests: str,
    env: dict[str, str],
    cwd: Path | None = None,
    *extra: str,
) -> DriverRun:
    run = cluster.run_driver(
        ["generate", "--model", str(model), "--tp", str(tp), "--requests", requests, *extra],
        env,
        cwd,
    )
    _report(run)
    return run


def _report(run: DriverRun) -> None:
    r = run.result
    phases = ", ".join(
        f"{k} {r[k]:.1f} s" for k in ("import_s", "start_s", "run_s", "stop_s") if k in r
    )
    print(f"driver {run.wall_s:.1f} s ({phases})")


def _assert_loopback_only(run: DriverRun) -> None:
    """While the engine was up, nothing in the namespace listened beyond loopback.

    Some sockets are bound to the wildcard address (torch's TCPStore in a Ray
    worker): in the namespace that means loopback, since no other address exists.
    """
    listeners = parse_listeners("\n".join(run.result.get("listeners", [])))
    assert listeners, "no listening socket seen: the check would prove nothing"
    assert run.result["addresses"], "no address seen"
    assert all(is_loopback_address(a) for a in run.result["addresses"]), run.result["addresses"]
    outside = [x for x in listeners if not (x.is_loopback or x.is_wildcard)]
    assert not outside, outside
    wildcards = [f"*:{x.port} {x.process}" for x in listeners if x.is_wildcard]
    print(f"{len(listeners)} listening sockets, on the wildcard address: {wildcards}")


def _assert_started(run: DriverRun) -> None:
    assert run.returncode == 0, run.tail()
    assert run.result, run.tail()
    assert run.result["start_error"] is None, run.result.get("start_traceback") or run.tail()
    assert run.result["request_error"] is None, run.tail()


def _assert_sealed(path: Path, writers: int) -> None:
    """Every writer's series ends with its seal: its processor was closed, on Ray too."""
    report = verify_chain(path)
    assert len(report.series) == writers, report.series
    assert all(s.sealed for s in report.series), report.findings
    assert not report.findings, report.findings


def _records(path: Path) -> list[Any]:
    try:
        return list(read_records(path).records)
    except RecordError:  # no file at all
        return []


# ------------------------------------------------------------------ the cluster


def test_the_cluster_is_confined_to_loopback(ray_cluster: RayCluster) -> None:
    print(f"ray start {ray_cluster.start_s:.1f} s")
    namespace = ray_cluster.namespace
    assert namespace.interfaces() == ["lo"]
    listeners = namespace.listeners()
    assert any(x.port == 6379 for x in listeners), listeners  # Ray's GCS is up
    assert all(x.is_loopback for x in listeners), listeners
    # Every process of the cluster (its PID namespace) is in the loopback-only network.
    assert len(namespace.member_pids()) > 3
    assert namespace.outside_network() == []
    assert namespace.listeners_outside() == []


def test_a_command_past_its_bound_is_killed_with_what_it_started(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    # What a driver past DRIVER_TIMEOUT_S leaves behind must not hold the next
    # test's resources: nsenter's child and its children go too.
    namespace = ray_cluster.namespace
    script = "sleep 4711 & touch started; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        namespace.run(["sh", "-c", script], timeout=5, cwd=tmp_path)
    assert (tmp_path / "started").exists(), "the command did not start in 5 s"

    def left() -> list[int]:
        found = []
        for pid in namespace.member_pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:  # exited meanwhile
                continue
            if b"4711" in argv or script.encode() in argv:
                found.append(pid)
        return found

    assert left() == []


# ------------------------------------------------------------------ records on Ray


def test_tensor_parallel_over_ray_records_each_token_once(
    ray_cluster: RayCluster, tiny_model: Path, tmp_path: Path
) -> None:
    # Relative, as a user may give it: the Ray workers run in another directory
    # (the cluster's), and resolve it against the driver's (qr_vllm._fingerprint).
    path = tmp_path / "records.jsonl"
    env = {"QR_RECORD_PATH": "records.jsonl", "QR_LOG_LEVEL": "none", **WATCH}
    run = _generate(ray_cluster, tiny_model, 2, _requests(2), env, tmp_path, "--watch-ranks")
    _assert_started(run)
    assert "is relative and this process runs in" in run.output
    _assert_loopback_only(run)
    returned: dict[str, list[int]] = run.result["tokens"]
    assert sorted(returned) == ["r0", "r1"]
    assert all(len(ids) == 8 for ids in returned.values())
    records = _records(path)
    assert_each_token_once(returned, records)
    assert len(records) == 16
    # Both ranks forced the same tokens, step by step: those returned.
    assert run.result["watched"] == [1, 1], "one processor on each rank"
    (first,), (second,) = run.result["forced_by_rank"]
    assert first == second
    assert sorted(t for step in first for t in step) == sorted(
        t for ids in returned.values() for t in ids
    )
    # One writer: the first rank fetches, selects and writes; the other only
    # forces the ids it receives, so both ranks force the same tokens.
    assert len(writer_files(path)) == 1
    assert len({r.writer_id for r in records}) == 1
    # One fetch per step for all its rows.
    by_fetch: dict[int, list[str | None]] = {}
    for r in records:
        by_fetch.setdefault(r.entropy_requested_ns, []).append(r.request_tag)
    assert all(len(set(tags)) == len(tags) for tags in by_fetch.values())
    assert len(by_fetch) < len(records)
    _assert_sealed(path, 1)


def test_data_parallel_serve_over_ray_records_each_returned_token(
    ray_cluster: RayCluster, serve_command: Any, tmp_path: Path
) -> None:
    path = tmp_path / "records.jsonl"
    # One API server (vLLM's default with DP=2 is two): 30 CPU-seconds less on two
    # cores. The path with several API servers is the one tests-integration/vllm/
    # test_scale.py runs (on vLLM's mp backend).
    command = serve_command(
        "--max-model-len", "128", "--seed", "0", "--api-server-count", "1",
        "--data-parallel-size", "2", "--data-parallel-backend", "ray",
    )  # fmt: skip
    env = {"QR_RECORD_PATH": str(path), "QR_LOG_LEVEL": "none", **COPY_QR}
    run = ray_cluster.run_driver(
        [
            "serve",
            "--requests",
            "8",
            "--max-tokens",
            "16",
            "--workdir",
            str(tmp_path),
            "--",
            *command,
        ],
        env,
    )
    _report(run)
    _assert_started(run)
    _assert_loopback_only(run)
    returned: dict[str, list[int]] = run.result["tokens"]
    assert len(returned) == 8
    assert all(len(ids) == 16 for ids in returned.values())
    records = _records(path)
    assert_each_token_once(returned, records)
    assert len(records) == 8 * 16
    # One series per engine.
    assert len({r.writer_id for r in records}) == 2
    assert len(writer_files(path)) == 2
    _assert_sealed(path, 2)


# ------------------------------------------------------- one configuration everywhere


def test_settings_missing_in_the_workers_refuse_the_start(
    ray_cluster: RayCluster, tiny_model: Path, tmp_path: Path
) -> None:
    # The older Ray executor copies VLLM_*, HF_*... to its workers, not QR_*.
    path = tmp_path / "records.jsonl"
    env = {"QR_RECORD_PATH": str(path), "QR_LOG_LEVEL": "none", **OLDER_EXECUTOR, **IN_PROCESS}
    run = _generate(ray_cluster, tiny_model, 1, _requests(2), env)
    assert run.result, run.tail()
    # Without the check the engine started, sampled on the defaults and wrote no record.
    assert run.result["start_error"] is not None, f"started; {len(_records(path))} records"
    # The refusal names the missing settings and the fix (in the worker's log).
    assert MISMATCH in run.output, run.tail()
    assert f"QR_RECORD_PATH (front end '{path}', here '')" in run.output
    assert "QR_LOG_LEVEL (front end 'none', here 'summary')" in run.output
    assert "VLLM_RAY_EXTRA_ENV_VAR_PREFIXES_TO_COPY=QR_" in run.output
    assert not _records(path)


def test_an_arm_known_only_to_the_front_end_refuses_the_start(
    ray_cluster: RayCluster, tiny_model: Path, tmp_path: Path
) -> None:
    # The workers get the variables named here, not QR_SOURCES: the front end
    # would accept requests for an arm that the workers cannot serve.
    path = tmp_path / "records.jsonl"
    env = {
        "QR_RECORD_PATH": str(path),
        "QR_LOG_LEVEL": "none",
        "QR_SOURCES": ARM_SOURCES,
        "VLLM_RAY_EXTRA_ENV_VARS_TO_COPY": "QR_RECORD_PATH,QR_LOG_LEVEL",
        **OLDER_EXECUTOR,
        **IN_PROCESS,
    }
    run = _generate(ray_cluster, tiny_model, 1, _requests(2, qr_entropy_source="sham"), env)
    assert run.result, run.tail()
    # Without the check the engine started and the first request naming the arm
    # killed it (the worker raised QRParamsError: "... but none is configured").
    assert run.result["request_error"] is None, run.result["request_error"]
    assert run.result["start_error"] is not None
    assert MISMATCH in run.output, run.tail()
    assert "QR_SOURCES (front end ['sham'], here [])" in run.output
    assert "QR_RECORD_PATH (front end" not in run.output, "that one was carried"
    assert not _records(path)
