"""Tensor parallelism: two real ``torch.distributed`` ranks (gloo, CPU), one fetch per step.

The mechanism the processor uses under TP (the source rank selects and
broadcasts token ids, the others force them), run on a real two-process
group without an engine, including a failing source rank. The same mechanism
inside a real 2-rank vLLM CPU engine is tested in
``tests-integration/vllm/test_tensor_parallel_engine.py``.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
from typing import Any

import pytest
import torch
from vllm import SamplingParams

from qr_entropy import EntropyUnavailableError, SystemEntropySource
from qr_vllm import SamplingSettings
from qr_vllm._batch import plan_for_params
from qr_vllm._tensor_parallel import DistributedTokenBroadcast
from qr_vllm.step import Slot, StepSampler

STEPS = 4
ROWS = 3
VOCAB = 200


def _rank_main(rank: int, port: int, fail_at: int | None, results: Any) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    fetches = 0
    records: list[int] = []
    source = SystemEntropySource()

    def fetch(n: int) -> Any:
        nonlocal fetches
        fetches += 1
        if fetches == fail_at:
            raise EntropyUnavailableError("test: the source failed")
        return source.fetch(n)

    sampler = StepSampler(
        fetch,
        lambda recs, _slots: records.extend(r.token_id for r in recs),
        broadcast=DistributedTokenBroadcast(None, source_global_rank=0, is_source=rank == 0),
    )
    base = SamplingSettings(sample_count=512)
    slots = []
    for i in range(ROWS):
        plan = plan_for_params(base, SamplingParams(extra_args={"qr_top_k": 0, "qr_top_p": 1.0}))
        assert plan is not None
        slots.append(Slot(plan=plan, output_ids=[0] * i))
    forced: list[list[int]] = []
    error = ""
    try:
        for step in range(STEPS):
            # Every rank sees the same logits, as with vLLM's gathered logits.
            logits = torch.randn(ROWS + 1, VOCAB, generator=torch.Generator().manual_seed(step))
            sampler.sample(logits, [0, 1, 3], slots)
            forced.append([int(torch.argmax(logits[r])) for r in (0, 1, 3)])
    except Exception as exc:
        error = type(exc).__name__
    results.put((rank, fetches, records, forced, error))
    torch.distributed.destroy_process_group()


def _run_two_ranks(fail_at: int | None) -> dict[int, tuple[int, list[int], list[list[int]], str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(r, port, fail_at, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    out = {}
    for _ in procs:
        rank, fetches, records, forced, error = results.get(timeout=120)
        out[rank] = (fetches, records, forced, error)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


def test_one_fetch_per_step_and_the_same_tokens_on_every_rank() -> None:
    out = _run_two_ranks(fail_at=None)
    fetches0, records0, forced0, error0 = out[0]
    fetches1, records1, forced1, error1 = out[1]
    assert (error0, error1) == ("", "")
    assert fetches0 == STEPS, "the source rank fetches once per step"
    assert fetches1 == 0, "other ranks never fetch"
    assert records1 == [], "only the source rank writes records"
    assert forced0 == forced1
    assert records0 == [t for step in forced0 for t in step]


def test_a_failing_source_releases_the_other_ranks() -> None:
    out = _run_two_ranks(fail_at=2)
    assert out[0][3] == "EntropyUnavailableError"
    assert out[1][3] == "QRVllmError", "the follower fails instead of waiting forever"
    assert out[0][2] == out[1][2], "both forced the same tokens before the failure"
    assert len(out[1][2]) == 1


@pytest.mark.parametrize("is_source", [True, False])
def test_broadcast_reports_its_role(is_source: bool) -> None:
    assert DistributedTokenBroadcast(None, 0, is_source).is_source is is_source
