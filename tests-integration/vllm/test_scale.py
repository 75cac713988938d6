"""Records that survive scale, on real CPU engines.

* Several writers on one ``QR_RECORD_PATH``, each rotating at 50 KB: a ``vllm
  serve`` with two data-parallel engines and two API servers, and a second
  ``vllm serve`` replica on the same path, all serving at once.
* SIGTERM in the middle of streaming requests: the data-parallel server with
  vLLM's default ``--shutdown-timeout 0`` (its engines are killed right after),
  the replica with ``--shutdown-timeout 300`` (it drains, then seals its series).
* The audit on those records: every writer's hash chain verifies (the replica's
  sealed; a killed engine's sealed or not, as its close raced vLLM's kill), each
  kind of tampering is found and named, and the pre-registered plan both
  servers ran under is analysed as registered (an interim look, tokens beyond
  the plan, a changed plan refused).
* Prompts longer than ``max_num_batched_tokens`` (chunked prefill) and a KV
  cache too small for the batch (preemption), in-process.

Every token a client received has exactly one record (same index, same id),
every line is a valid record, and ``qr-analyze`` reads the set as one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vllm import LLM, SamplingParams

from qr_core.analysis.cli import main as qr_analyze
from qr_core.records import (
    StoppingRule,
    preregistration_bytes,
    read_records,
    rotated_segments,
    verify_chain,
    writer_file,
    writer_files,
)
from qr_vllm import QRSamplingLogitsProcessor

from .serve_helpers import (
    REQUEST_TIMEOUT_S,
    Server,
    Stream,
    assert_each_token_once,
    complete,
    kept_by_tag,
    records_for,
    start_server,
    stop_group,
    stream,
)

ROTATE_AT = "50000"
_STREAM_TOKENS = 240  # with a prompt of about 8 tokens, within --max-model-len 256
_STREAM_SAMPLE_COUNT = 1 << 20  # entropy bytes per streamed token (default 20,480)


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


# The plan's arms are request tags that test_analysis_as_registered_as_the_arms_fill
# gives to requests of 10 tokens: one per arm (an interim look), then two more
# (tokens beyond the plan).
PLAN_ARMS = ("arm-a", "arm-b")
PLAN_TOKENS = 20


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pre-registered plan both servers run under (``QR_PREREGISTRATION_PATH``)."""
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    path.write_bytes(
        preregistration_bytes(
            hypothesis="the two arms' mean z differ",
            design="two-arm",
            group_by="tag",
            arms=PLAN_ARMS,
            tokens_per_arm=PLAN_TOKENS,
            alpha=0.05,
            primary_statistic="z",
            stopping=StoppingRule("fixed"),
        )
    )
    return path


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
    plan_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Server]]:
    """Two data-parallel engines behind two API servers, and a plain replica: one
    path, one pre-registered plan. The replica drains at SIGTERM (and seals)."""
    workdir = tmp_path_factory.mktemp("scale")
    common = ("--max-model-len", "256", "--seed", "0")
    plan = {"QR_PREREGISTRATION_PATH": str(plan_file)}
    dp = start_server(
        serve_command(*common, "--data-parallel-size", "2", "--api-server-count", "2"),
        # Two engines on one NUMA node need one core each.
        _env(shared_path, VLLM_CPU_OMP_THREADS_BIND="0|1", **plan),
        workdir,
        "dp2",
    )
    try:
        replica = start_server(
            serve_command(*common, "--shutdown-timeout", "300"),
            _env(shared_path, **plan),
            workdir,
            "replica",
        )
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
    assert qr_analyze([str(shared_path), "--json", "--exploratory"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens"] == 60 * 32  # one set: every writer's series, nothing twice


@pytest.mark.slow
def test_analysis_as_registered_as_the_arms_fill(
    servers: tuple[Server, Server],
    shared_path: Path,
    plan_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The plan (20 tokens per arm) analysed as registered: first an interim look (10
    tokens per arm), then a final analysis that leaves 10 tokens per arm beyond the
    plan out; a changed plan file is refused for these records."""
    _, replica = servers
    argv = [str(shared_path), "--preregistration", str(plan_file)]
    capsys.readouterr()

    def fill(requests: int) -> None:
        for _ in range(requests):
            for tag in PLAN_ARMS:
                assert len(complete(replica, tag, f"Arm {tag}", 10)) == 10

    fill(1)
    for tag in PLAN_ARMS:
        records_for(shared_path, tag, 10)
    assert qr_analyze(argv) == 0
    out = capsys.readouterr().out
    assert "stage           INTERIM LOOK: the planned tokens are not all in" in out
    assert "arm             arm-a: 10 tokens, first 0 analysed; 10 since the last look" in out
    assert f"no test before the planned tokens are in ({PLAN_TOKENS} per arm)" in out

    fill(2)
    for tag in PLAN_ARMS:
        records_for(shared_path, tag, 30)
    assert qr_analyze([*argv, "--json"]) == 0
    registered = json.loads(capsys.readouterr().out)["registered"]
    assert (registered["stage"], registered["interim"]) == ("final", False)
    assert [
        (a["arm"], a["available"], a["analysed"], a["beyond_plan"])
        for a in registered["arm_tokens"]
    ] == [
        ("arm-a", 30, PLAN_TOKENS, 10),
        ("arm-b", 30, PLAN_TOKENS, 10),
    ]
    assert qr_analyze(argv) == 0
    assert "arm-a: 30 tokens, first 20 analysed; 10 BEYOND THE PLAN, not analysed" in (
        capsys.readouterr().out
    )

    changed = tmp_path / "plan.json"
    changed.write_bytes(plan_file.read_bytes().replace(b'"alpha": 0.05', b'"alpha": 0.01'))
    assert qr_analyze([str(shared_path), "--preregistration", str(changed)]) == 3
    assert "not made under this plan file" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_mid_stream_loses_no_emitted_token(
    servers: tuple[Server, Server], shared_path: Path
) -> None:
    dp, replica = servers
    streams = [Stream(f"s-dp-{i}") for i in range(8)] + [Stream(f"s-rep-{i}") for i in range(8)]
    targets = [dp] * 8 + [replica] * 8
    # Each token draws _STREAM_SAMPLE_COUNT bytes: a step of 8 rows then takes tens of
    # milliseconds of CPU, so a stream lasts seconds and the SIGTERM lands mid-stream,
    # on an idle machine as beside CPU-bound work (where the tokens come slower too).
    threads = [
        threading.Thread(
            target=stream,
            args=(server, s, f"Stream {s.tag}", _STREAM_TOKENS),
            kwargs={"qr_sample_count": _STREAM_SAMPLE_COUNT},
        )
        for server, s in zip(targets, streams, strict=True)
    ]
    for t in threads:
        t.start()
    # Mid-stream: each server gets its SIGTERM as soon as one of its own streams has
    # a token. (One trigger for both let the data-parallel server's streams finish
    # on an idle machine while the replica's were still queued.)
    groups = (streams[:8], streams[8:])
    pending = {0: dp, 1: replica}
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while pending:
        assert time.monotonic() < deadline, [len(s.tokens) for s in streams]
        waiting = [s for i in pending for s in groups[i]]
        assert not any(s.error for s in waiting), [s.error for s in waiting]
        for i in [i for i in pending if any(s.tokens for s in groups[i])]:
            # vLLM's default --shutdown-timeout 0: the DP engines are killed right
            # after; the replica (--shutdown-timeout 300) finishes its streams first.
            pending.pop(i).proc.send_signal(signal.SIGTERM)
        time.sleep(0.01)
    for t in threads:  # ended by the server, or idle for STREAM_IDLE_S after the kill
        t.join(REQUEST_TIMEOUT_S)
    for server in (dp, replica):
        server.proc.wait(timeout=REQUEST_TIMEOUT_S)
    # The SIGTERM came mid-stream: the killed data-parallel server cut streams short.
    assert any(len(s.tokens) < _STREAM_TOKENS for s in groups[0]), (
        "no stream was cut short",
        [[len(s.tokens) for s in group] for group in groups],
    )

    records = read_records(shared_path).records  # a killed writer leaves no bad line
    assert_each_token_once({s.tag: s.tokens for s in streams}, records, prefix=True)
    # The streams drew 1 MiB per token: a second configuration beside the default one.
    assert qr_analyze([str(shared_path), "--exploratory", "--allow-mixed-configs"]) == 0


# ------------------------------------------- the audit of the records of both runs


def _copy(base: Path, into: Path) -> Path:
    """A copy of the whole record set (every writer's files) to tamper with."""
    into.mkdir()
    for f in base.parent.iterdir():
        if f.name.startswith(base.stem + "."):
            shutil.copy(f, into / f.name)
    return into / base.name


def _rewrite(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    path.write_bytes(b"".join(change(path.read_bytes().splitlines(True))))


def _tampered(base: Path, kind: str) -> list[str]:
    """The places of the findings other than the killed engines' ``unsealed``; all
    must be of ``kind``."""
    report = verify_chain(base)
    assert report.tampered
    found = [f for f in report.findings if f.tampering]
    assert {f.kind for f in found} == {kind}, [str(f) for f in found]
    return [f.where for f in found]


def _replica_writer(path: Path) -> str:
    """The writer of the replica's records (its requests are tagged ``rep-*``)."""
    writers = {r.writer_id for r in read_records(path).records if r.request_tag == "rep-0"}
    (writer,) = writers
    assert writer is not None
    return writer


def _without_tag(tag: str) -> Callable[[list[bytes]], list[bytes]]:
    needle = f'"request_tag":"{tag}"'.encode()
    return lambda lines: [x for x in lines if needle not in x]


@pytest.mark.slow
def test_records_verify_and_each_tampering_is_named(
    servers: tuple[Server, Server], shared_path: Path, tmp_path: Path
) -> None:
    """The records of three writers after the SIGTERM: the drained replica's series is
    sealed; each killed data-parallel engine's is sealed or unsealed (a crash, not
    tampering), as qr-vllm's close at engine shutdown did or did not finish before
    vLLM's kill. Every tampering below, on a fresh copy, is found, named by kind and
    place."""
    untouched = verify_chain(shared_path)
    assert not untouched.tampered, [str(f) for f in untouched.findings]
    assert {f.kind for f in untouched.findings} <= {"unsealed"}
    assert len(untouched.series) == 3
    mine = _replica_writer(shared_path)
    (replica,) = [s for s in untouched.series if s.writer_id == mine]
    assert replica.sealed
    assert replica.records >= 20 * 32 + 6 * 10  # the first run, the arms, any streams
    killed = sorted(s.writer_id for s in untouched.series if s.writer_id and not s.sealed)
    assert mine not in killed
    assert len(killed) == len(untouched.findings)
    engines = sorted(s.writer_id for s in untouched.series if s.writer_id and s.writer_id != mine)
    assert len(engines) == 2
    for finding, writer in zip(sorted(untouched.findings, key=str), killed, strict=True):
        assert finding.where.startswith(str(writer_file(shared_path, writer)))  # last record

    def files(base: Path, writer: str = mine) -> list[Path]:
        live = writer_file(base, writer)
        return [*rotated_segments(live), live]

    # One line deleted from the middle of a segment.
    base = _copy(shared_path, tmp_path / "line")
    segment = files(base)[len(files(base)) // 2]
    _rewrite(segment, lambda lines: lines[:10] + lines[11:])
    assert _tampered(base, "deleted") == [f"{segment}:11"]

    # A whole request deleted, from the replica and from the killed engine that ran it.
    base = _copy(shared_path, tmp_path / "request")
    for writer, tag in [(mine, "rep-3")] + [(w, "dp-5") for w in engines]:
        for f in files(base, writer):
            _rewrite(f, _without_tag(tag))
    places = _tampered(base, "deleted")
    assert any(p.startswith(str(writer_file(base, mine))) for p in places)
    assert any(p.startswith(str(writer_file(base, w))) for w in engines for p in places)

    # Two lines of one segment swapped.
    base = _copy(shared_path, tmp_path / "swap")
    segment = files(base)[3]
    _rewrite(segment, lambda lines: [*lines[:5], lines[20], *lines[6:20], lines[5], *lines[21:]])
    assert sorted(_tampered(base, "reordered")) == [f"{segment}:21", f"{segment}:6"]

    # One digit of a z edited, in a killed engine's series.
    base = _copy(shared_path, tmp_path / "digit")
    segment = files(base, engines[1])[2]
    lines = segment.read_bytes().splitlines(True)
    text = repr(json.loads(lines[7])["z_score"]).encode()
    at = next(i for i, c in enumerate(text) if chr(c) in "123456789")
    edited = text[:at] + str(int(chr(text[at])) % 9 + 1).encode() + text[at + 1 :]
    assert lines[7].count(b'"z_score":' + text) == 1
    lines[7] = lines[7].replace(b'"z_score":' + text, b'"z_score":' + edited)
    segment.write_bytes(b"".join(lines))
    assert _tampered(base, "edited") == [f"{segment}:8"]

    # A rotated segment dropped.
    base = _copy(shared_path, tmp_path / "segment")
    dropped = files(base)[4]
    dropped.unlink()
    assert str(dropped) in _tampered(base, "missing-segment")

    # The tail cut inside the last record, the seal gone with it (as a crash would
    # leave it): unsealed, with the last intact record; not tampering.
    base = _copy(shared_path, tmp_path / "tail")
    series = files(base)
    holder = next(f for f in reversed(series) if not f.read_bytes().startswith(b'{"seal":'))
    data = holder.read_bytes()
    end = data.find(b'{"seal":')
    last = data.rindex(b"\n", 0, (len(data) if end < 0 else end) - 1) + 1
    holder.write_bytes(data[: last + 200])
    for f in series[series.index(holder) + 1 :]:
        f.write_bytes(b"")  # a seal alone in a live file of its own goes too
    report = verify_chain(base)
    assert not report.tampered, [str(f) for f in report.findings]
    (cut,) = [f for f in report.findings if f.where.startswith(str(writer_file(base, mine)))]
    complete = holder.read_bytes().count(b"\n")
    assert cut.kind == "unsealed"
    assert cut.where == f"{holder}:{complete}"  # the last intact record
    assert f"{holder}:{complete + 1}, was cut short" in cut.message
    assert qr_analyze(["verify", str(base)]) == 6  # intact, but unsealed
    assert qr_analyze(["verify", str(shared_path)]) == (6 if killed else 0)


@pytest.mark.slow
def test_manifest_names_every_series_and_the_plan(
    servers: tuple[Server, Server],
    shared_path: Path,
    plan_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    report = verify_chain(shared_path)
    unsealed = any(not s.sealed for s in report.series)  # a killed engine's, at most
    assert qr_analyze(["verify", "--manifest", str(shared_path)]) == (6 if unsealed else 0)
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("# qr-sampler record manifest 1")
    plan_sha = hashlib.sha256(plan_file.read_bytes()).hexdigest()
    assert sorted(rows) == sorted(
        f"{s.final_sha256} {s.records} {plan_sha} {s.series} {s.writer_id} "
        f"{'sealed' if s.sealed else 'unsealed'}"
        for s in report.series
    )
    (replica,) = [row for row in rows if row.split()[-2] == _replica_writer(shared_path)]
    assert replica.endswith(" sealed")  # the drained replica
