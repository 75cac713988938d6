"""Records that survive scale, on real CPU engines.

* Several writers on one ``QR_RECORD_PATH``, each rotating at 50 KB: a ``vllm
  serve`` with two data-parallel engines and two API servers, and a second
  ``vllm serve`` replica on the same path, all serving at once.
* SIGTERM in the middle of streaming requests, with vLLM's default
  ``--shutdown-timeout 0`` (the engines are killed right after).
* Prompts longer than ``max_num_batched_tokens`` (chunked prefill) and a KV
  cache too small for the batch (preemption), in-process.

Every token a client received has exactly one record (same index, same id),
every line is a valid record, and ``qr-analyze`` reads the set as one.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vllm import LLM, SamplingParams

from qr_core.analysis.cli import main as qr_analyze
from qr_core.records import read_records, rotated_segments, writer_files
from qr_vllm import QRSamplingLogitsProcessor

from .serve_helpers import (
    REQUEST_TIMEOUT_S,
    Server,
    Stream,
    assert_each_token_once,
    complete,
    kept_by_tag,
    start_server,
    stop_group,
    stream,
)

ROTATE_AT = "50000"
_STREAM_TOKENS = 240  # with a prompt of about 8 tokens, within --max-model-len 256


# ---------------------------------------------------- chunked prefill, preemption


@pytest.fixture(scope="module")
def small_kv(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LLM, Path, list[int]]]:
    """In-process engine: 64 tokens per step (chunked prefill), 10 KV blocks of 32 tokens."""
    path = tmp_path_factory.mktemp("small-kv") / "records.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        mp.setenv("QR_ENTROPY_SOURCE_TYPE", "system")
        mp.setenv("QR_LOG_LEVEL", "none")
        mp.setenv("QR_RECORD_PATH", str(path))
        llm = LLM(
            model=str(tiny_model),
            enforce_eager=True,
            distributed_executor_backend="uni",
            max_model_len=256,
            max_num_batched_tokens=64,
            enable_chunked_prefill=True,
            num_gpu_blocks_override=10,
            block_size=32,
            enable_prefix_caching=False,
            seed=0,
        )
        scheduler = llm.llm_engine.engine_core.engine_core.scheduler  # type: ignore[attr-defined]
        preempted: list[int] = []
        real = scheduler._preempt_request

        def counting(*args: object, **kwargs: object) -> None:
            # A spy, not a fake: vLLM's own preemption runs; this only counts it.
            preempted.append(1)
            real(*args, **kwargs)

        scheduler._preempt_request = counting
        yield llm, path, preempted
    for proc in QRSamplingLogitsProcessor.live_instances():
        proc.close()
    llm.llm_engine.engine_core.shutdown()


@pytest.mark.slow
def test_chunked_prefill_and_preemption_record_each_emitted_token_once(
    small_kv: tuple[LLM, Path, list[int]],
) -> None:
    llm, path, preempted = small_kv
    # About 73 prompt tokens each (> 64 per step); 8 x (73 + 64) tokens need far
    # more than the 320 KV slots, so vLLM must preempt and recompute.
    prompts = [f"word{i} " * 18 for i in range(8)]
    params = [
        SamplingParams(max_tokens=64, ignore_eos=True, extra_args={"qr_request_tag": f"p{i}"})
        for i in range(8)
    ]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    assert preempted, "the KV cache must be small enough for vLLM to preempt"
    (processor,) = QRSamplingLogitsProcessor.live_instances()
    processor.diagnostic_records()  # settles the last step's rows (engine idle)
    returned = {f"p{i}": list(o.outputs[0].token_ids) for i, o in enumerate(outputs)}
    records = read_records(path).records
    assert_each_token_once(returned, records)
    discarded = [r for r in records if r.discarded]
    # Each prompt takes two prefill steps: the first one's row is dropped by vLLM.
    assert len(discarded) >= len(prompts)
    assert all(r.raw_sha256 and r.sample_count > 0 for r in discarded)  # entropy accounted
    assert len(records) - len(discarded) == sum(len(t) for t in returned.values())
    assert qr_analyze([str(path)]) == 0


# ------------------------------------------------------------ many writers at once


@pytest.fixture(scope="module")
def shared_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared") / "records.jsonl"


def _env(path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "QR_ENTROPY_SOURCE_TYPE": "system",
        "QR_LOG_LEVEL": "none",
        "QR_RECORD_PATH": str(path),
        "QR_RECORD_MAX_BYTES": ROTATE_AT,
        **extra,
    }


@pytest.fixture(scope="module")
def servers(
    serve_command: Callable[..., list[str]],
    shared_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Server]]:
    """Two data-parallel engines behind two API servers, and a plain replica: one path."""
    workdir = tmp_path_factory.mktemp("scale")
    common = ("--max-model-len", "256", "--seed", "0")
    dp = start_server(
        serve_command(*common, "--data-parallel-size", "2", "--api-server-count", "2"),
        # Two engines on one NUMA node need one core each.
        _env(shared_path, VLLM_CPU_OMP_THREADS_BIND="0|1"),
        workdir,
        "dp2",
    )
    try:
        replica = start_server(serve_command(*common), _env(shared_path), workdir, "replica")
    except BaseException:
        stop_group(dp.proc)
        raise
    try:
        yield dp, replica
    finally:
        stop_group(replica.proc)
        stop_group(dp.proc)


def _in_threads(jobs: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S)


@pytest.mark.slow
def test_data_parallel_api_servers_and_a_replica_share_one_path(
    servers: tuple[Server, Server], shared_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dp, replica = servers
    returned: dict[str, list[int]] = {}

    def ask(server: Server, tag: str) -> Callable[[], None]:
        return lambda: returned.__setitem__(tag, complete(server, tag, f"Tell {tag} a story", 32))

    jobs = [ask(dp, f"dp-{i}") for i in range(40)] + [ask(replica, f"rep-{i}") for i in range(20)]
    _in_threads(jobs)
    assert len(returned) == 60
    assert all(len(ids) == 32 for ids in returned.values())

    records = read_records(shared_path).records  # every line valid, no segment missing
    assert_each_token_once(returned, records)
    assert len(kept_by_tag(records)) == 60
    writers = {r.writer_id for r in records}
    # Two engines of the DP server and the replica's engine: three series.
    assert len(writers) == 3
    assert sorted(f.name for f in writer_files(shared_path)) == sorted(
        f"records.{w}.jsonl" for w in writers if w is not None
    )
    # 1,920 records of about 1 KB each: every series rotated at 50 KB.
    for live in writer_files(shared_path):
        assert rotated_segments(live), f"{live.name} never rotated"
    assert not shared_path.exists()
    assert qr_analyze([str(shared_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens"] == 60 * 32  # one set: every writer's series, nothing twice


@pytest.mark.slow
def test_sigterm_mid_stream_loses_no_emitted_token(
    servers: tuple[Server, Server], shared_path: Path
) -> None:
    dp, replica = servers
    streams = [Stream(f"s-dp-{i}") for i in range(8)] + [Stream(f"s-rep-{i}") for i in range(8)]
    targets = [dp] * 8 + [replica] * 8
    threads = [
        threading.Thread(target=stream, args=(server, s, f"Stream {s.tag}", _STREAM_TOKENS))
        for server, s in zip(targets, streams, strict=True)
    ]
    for t in threads:
        t.start()
    # Mid-stream: each server has begun streaming, or the fastest stream is
    # half-way; the SIGTERM must cut streams short. (Waiting for every stream to
    # begin let one server's streams finish while the other's were still queued.)
    groups = (streams[:8], streams[8:])
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while not (
        all(any(s.tokens for s in group) for group in groups)
        or any(len(s.tokens) >= _STREAM_TOKENS // 2 for s in streams)
    ):
        assert time.monotonic() < deadline, [len(s.tokens) for s in streams]
        assert not any(s.error for s in streams), [s.error for s in streams]
        time.sleep(0.05)
    # vLLM's default --shutdown-timeout 0: engines are SIGKILLed right after SIGTERM.
    for server in (dp, replica):
        server.proc.send_signal(signal.SIGTERM)
    for t in threads:  # ended by the server, or idle for STREAM_IDLE_S after the kill
        t.join(REQUEST_TIMEOUT_S)
    for server in (dp, replica):
        server.proc.wait(timeout=REQUEST_TIMEOUT_S)
    # The SIGTERM came mid-stream: some stream was cut short. (Not necessarily on
    # both servers: in two full runs on a 2-core machine, all 8 streams of one
    # server had finished by the time the kill took effect. Every record of both
    # servers is checked below either way.)
    assert any(len(s.tokens) < _STREAM_TOKENS for s in streams), (
        "no stream was cut short",
        [[len(s.tokens) for s in group] for group in groups],
    )

    records = read_records(shared_path).records  # a killed writer leaves no bad line
    assert_each_token_once({s.tag: s.tokens for s in streams}, records, prefix=True)
    assert qr_analyze([str(shared_path)]) == 0
