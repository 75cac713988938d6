"""Tensor parallelism on a real engine: vLLM CPU with two ranks on two cores.

vLLM's CPU worker binds each rank's OpenMP threads to a NUMA node and refuses
two ranks on this one-node machine unless the binding is given by hand
(``VLLM_CPU_OMP_THREADS_BIND="0|1"``: rank 0 on core 0, rank 1 on core 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qr_core.records import read_records

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_two_ranks_record_once_and_return_the_recorded_tokens(tmp_path: Path) -> None:
    records_path = tmp_path / "records.jsonl"
    env = {
        **os.environ,
        "VLLM_CPU_OMP_THREADS_BIND": "0|1",
        "QR_RECORD_PATH": str(records_path),
        "QR_LOG_LEVEL": "none",
    }
    child = subprocess.run(
        [sys.executable, str(HERE / "tp_engine_run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    (result,) = [line for line in child.stdout.splitlines() if line.startswith("qr-tp-result: ")]
    returned: dict[str, list[int]] = json.loads(result.removeprefix("qr-tp-result: "))

    records = read_records(records_path).records
    # One set of records: the first rank writes, the other only forces tokens.
    assert len(records) == sum(len(ids) for ids in returned.values()) == 16
    for tag, ids in returned.items():
        mine = sorted((r for r in records if r.request_tag == tag), key=lambda r: r.token_index)
        assert [r.token_index for r in mine] == list(range(len(ids)))
        assert [r.token_id for r in mine] == ids
    # One fetch per step for all its rows: rows that share a fetch belong to
    # different requests, and the two requests shared fetches.
    by_fetch: dict[int, list[str | None]] = {}
    for r in records:
        by_fetch.setdefault(r.entropy_requested_ns, []).append(r.request_tag)
    assert all(len(set(tags)) == len(tags) for tags in by_fetch.values())
    assert len(by_fetch) < len(records)
