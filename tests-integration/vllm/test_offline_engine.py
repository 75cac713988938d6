"""qr sampling inside a real vLLM engine (V1 runner, CPU, in-process).

One engine for the whole module. Its processor comes from the installed
entry point (no ``logits_processors`` argument) and its records are read
from the processor's diagnostic buffer and from the JSON Lines record file.
Requests set ``ignore_eos``: with physical entropy the tiny model can sample
its end-of-sequence token at any step, and the tests count tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from vllm import LLM, RequestOutput, SamplingParams
from vllm.inputs import TokensPrompt

from qr_core.records import TokenSamplingRecord, read_records, writer_file
from qr_vllm import QRSamplingLogitsProcessor

pytestmark = pytest.mark.slow

ByTag = Callable[[Iterable[TokenSamplingRecord]], dict[str | None, list[TokenSamplingRecord]]]
JustInTime = Callable[[Iterable[TokenSamplingRecord]], None]

PROMPT_A = "The nature of consciousness is"
PROMPT_B = "Once upon a time"


@pytest.fixture(scope="module")
def record_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("records") / "records.jsonl"


@pytest.fixture(scope="module")
def llm(tiny_model: Path, record_file: Path) -> Iterator[LLM]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        mp.setenv("QR_ENTROPY_SOURCE_TYPE", "system")
        mp.setenv("QR_DIAGNOSTIC_MODE", "true")
        mp.setenv("QR_LOG_LEVEL", "none")
        mp.setenv("QR_RECORD_PATH", str(record_file))
        mp.setenv("QR_RECORD_FLUSH_INTERVAL_S", "0.05")
        engine = LLM(
            model=str(tiny_model),
            enforce_eager=True,
            distributed_executor_backend="uni",
            max_model_len=256,
            seed=0,
        )
        yield engine
    for proc in QRSamplingLogitsProcessor.live_instances():
        proc.close()
    engine.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="module")
def processor(llm: LLM) -> QRSamplingLogitsProcessor:
    procs = QRSamplingLogitsProcessor.live_instances()
    assert len(procs) == 1, "the entry point must load exactly one qr processor"
    assert procs[0].runner == "v1"
    return procs[0]


def _fresh(processor: QRSamplingLogitsProcessor) -> int:
    """Number of diagnostic records so far; later records belong to the caller."""
    return len(processor.diagnostic_records())


def _since(processor: QRSamplingLogitsProcessor, start: int) -> list[TokenSamplingRecord]:
    return processor.diagnostic_records()[start:]


def test_batch_with_per_request_overrides(
    llm: LLM,
    processor: QRSamplingLogitsProcessor,
    by_tag: ByTag,
    assert_just_in_time: JustInTime,
) -> None:
    start = _fresh(processor)
    requests = [
        (
            PROMPT_A,
            SamplingParams(
                ignore_eos=True, max_tokens=10, extra_args={"qr_request_tag": "default"}
            ),
        ),
        (
            PROMPT_A,
            SamplingParams(
                ignore_eos=True, max_tokens=10, extra_args={"qr_request_tag": "k1", "qr_top_k": 1}
            ),
        ),
        (
            PROMPT_B,
            SamplingParams(
                ignore_eos=True,
                max_tokens=8,
                extra_args={
                    "qr_request_tag": "edt",
                    "qr_temperature_strategy": "edt",
                    "qr_top_p": 0.5,
                    "qr_sample_count": 4096,
                },
            ),
        ),
        (
            PROMPT_B,
            SamplingParams(ignore_eos=True, max_tokens=6, seed=3, extra_args={"qr_enabled": False}),
        ),
        (PROMPT_A, SamplingParams(ignore_eos=True, max_tokens=10, temperature=0.0)),
    ]
    outputs = llm.generate([p for p, _ in requests], [s for _, s in requests], use_tqdm=False)
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    records = _since(processor, start)
    groups = by_tag(records)

    assert set(groups) == {"default", "k1", "edt"}, "opted-out and greedy requests have no records"
    for tag, index in (("default", 0), ("k1", 1), ("edt", 2)):
        assert [r.token_id for r in groups[tag]] == tokens[index], tag
        assert [r.token_index for r in groups[tag]] == list(range(len(tokens[index])))
        assert len({r.request_id for r in groups[tag]}) == 1
    # qr_top_k = 1 leaves one candidate: the greedy token.
    assert tokens[1] == tokens[4]
    assert all(r.num_candidates == 1 and r.top_k == 1 for r in groups["k1"])
    assert all(r.temperature_strategy == "edt" and r.top_p == 0.5 for r in groups["edt"])
    assert all(r.sample_count == 4096 for r in groups["edt"])
    assert all(r.sample_count == 20480 and r.top_k == 50 for r in groups["default"])
    assert len({r.config_hash for r in records}) == 3
    assert all(r.entropy_source == "system" and not r.fallback for r in records)
    assert_just_in_time(records)


def test_requests_joining_and_leaving_keep_their_settings(
    llm: LLM, processor: QRSamplingLogitsProcessor, by_tag: ByTag
) -> None:
    engine = llm.llm_engine
    tokenizer = llm.get_tokenizer()
    prompt_a = TokensPrompt(prompt_token_ids=tokenizer.encode(PROMPT_A))
    prompt_b = TokensPrompt(prompt_token_ids=tokenizer.encode(PROMPT_B))
    start = _fresh(processor)
    finished: dict[str, list[int]] = {}

    def step(times: int) -> None:
        for _ in range(times):
            for out in engine.step():
                if isinstance(out, RequestOutput) and out.finished:
                    finished[out.request_id] = list(out.outputs[0].token_ids)

    engine.add_request(
        "A",
        prompt_a,
        SamplingParams(
            ignore_eos=True, max_tokens=14, extra_args={"qr_request_tag": "A", "qr_top_k": 1}
        ),
    )
    step(3)
    engine.add_request(
        "B",
        prompt_b,
        SamplingParams(
            ignore_eos=True,
            max_tokens=4,
            extra_args={
                "qr_request_tag": "B",
                "qr_top_k": 0,
                "qr_top_p": 1.0,
                "qr_fixed_temperature": 1.5,
                "qr_sample_count": 1024,
            },
        ),
    )
    step(2)
    engine.add_request(
        "C",
        prompt_b,
        SamplingParams(
            ignore_eos=True,
            max_tokens=6,
            extra_args={"qr_request_tag": "C", "qr_temperature_strategy": "edt"},
        ),
    )
    engine.add_request(
        "D",
        prompt_a,
        SamplingParams(ignore_eos=True, max_tokens=5, seed=1, extra_args={"qr_enabled": 0}),
    )
    while engine.has_unfinished_requests():
        step(1)

    groups = by_tag(_since(processor, start))
    assert set(groups) == {"A", "B", "C"}
    assert set(finished) == {"A", "B", "C", "D"}
    for tag in ("A", "B", "C"):
        assert [r.token_id for r in groups[tag]] == finished[tag], tag
        assert [r.token_index for r in groups[tag]] == list(range(len(finished[tag])))
    assert all(
        r.top_k == 1 and r.num_candidates == 1 and r.sample_count == 20480 for r in groups["A"]
    )
    assert all(
        r.top_k == 0
        and r.top_p == 1.0
        and r.temperature == pytest.approx(1.5)
        and r.sample_count == 1024
        for r in groups["B"]
    )
    assert all(r.temperature_strategy == "edt" for r in groups["C"])
    # The requests really shared steps: one step = one fetch = one request time.
    steps = {tag: {r.entropy_requested_ns for r in groups[tag]} for tag in groups}
    assert steps["A"] & steps["B"]
    assert steps["B"] & steps["C"]
    # B and C joined after A had started and left while A was still running.
    assert min(steps["A"]) < min(steps["B"]) < min(steps["C"])
    assert max(steps["B"]) < max(steps["A"])
    assert max(steps["C"]) < max(steps["A"])
    greedy = llm.generate(
        [PROMPT_A], SamplingParams(ignore_eos=True, max_tokens=14, temperature=0.0), use_tqdm=False
    )
    assert finished["A"] == list(greedy[0].outputs[0].token_ids)


def test_record_file_matches_the_run(
    llm: LLM, processor: QRSamplingLogitsProcessor, record_file: Path
) -> None:
    llm.generate(
        [PROMPT_B],
        SamplingParams(ignore_eos=True, max_tokens=5, extra_args={"qr_request_tag": "file"}),
        use_tqdm=False,
    )
    kept = processor.diagnostic_records()
    # Write-through: every settled record is in this process's own series.
    from_file = list(read_records(writer_file(record_file, processor.writer_id)).records)
    assert from_file == kept
    assert [r.token_index for r in from_file if r.request_tag == "file"] == list(range(5))
