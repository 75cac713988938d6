"""Generation with the in-process engine, and the provenance of every token.

:func:`generate_with_records` runs prompts and collects the records of the
tokens vLLM emitted from the live processors' in-memory buffers;
:func:`generate` is ``python -m qr_vllm.demo``'s default run: the text, one
provenance line per token, where the records went and a summary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

import qr_vllm
from qr_vllm.demo._progress import TokenProgress

if TYPE_CHECKING:
    from vllm import LLM, RequestOutput, SamplingParams

    from qr_core.records import TokenSamplingRecord
    from qr_vllm import QRSamplingLogitsProcessor

__all__ = ["generate", "generate_with_records", "say_record_files"]


def generate_with_records(
    llm: LLM,
    prompts: Sequence[str],
    params: list[SamplingParams],
    chat: bool,
    progress: TextIO | None = None,
) -> tuple[list[RequestOutput], list[QRSamplingLogitsProcessor], list[TokenSamplingRecord], float]:
    """Run the prompts (as chats when ``chat``) and collect the emitted tokens' records.

    Args:
        llm: The engine.
        prompts: The prompts.
        params: One ``SamplingParams`` per prompt.
        chat: Send the prompts as chat messages.
        progress: A terminal to draw a progress bar of the tokens on (nothing
            is drawn on anything that is not a terminal).

    Returns:
        The outputs, the live qr processors (the caller closes them), the records
        of every emitted token, and the wall-clock seconds the generation took.
    """
    planned = sum(p.max_tokens or 0 for p in params)
    started = time.perf_counter()
    with TokenProgress(planned, progress):
        if chat:
            conversations = [[{"role": "user", "content": p}] for p in prompts]
            outputs = llm.chat(conversations, params, use_tqdm=False)  # type: ignore[arg-type]
        else:
            outputs = llm.generate(list(prompts), params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    processors = qr_vllm.QRSamplingLogitsProcessor.live_instances()
    records = [r for p in processors for r in p.diagnostic_records() if not r.discarded]
    return outputs, list(processors), records, elapsed


def generate(
    model: str,
    *,
    local: bool,
    chat: bool,
    prompts: Sequence[str],
    max_tokens: int,
    ignore_eos: bool,
    xargs: dict[str, object],
    say: Callable[[str], None],
    table: int | None = None,
    console: TextIO | None = None,
) -> int:
    """Generate one completion per prompt and print each token's provenance.

    Args:
        model: The model to load.
        local: Whether it is one of the two models built locally (eager, short context).
        chat: Send the prompts as chat messages (instruction-tuned model).
        prompts: The prompts.
        max_tokens: Tokens per prompt at most.
        ignore_eos: Generate exactly ``max_tokens`` tokens.
        xargs: Per-request ``qr_*`` keys for every request.
        say: Prints a progress line.
        table: Rows of the provenance table per prompt (``None``: all; 0: none).
        console: The terminal, for the progress bar and the warnings.

    Returns:
        The exit status: 1 when the records do not match the generated tokens.
    """
    say("Starting the vLLM engine (CPU, in-process) ...")
    started = time.perf_counter()
    # vLLM logs while it is imported: only now, once the caller has sent file
    # descriptor 2 to the log file and set the environment vLLM reads.
    from vllm import LLM, SamplingParams

    engine_args: dict[str, object] = {"model": model, "distributed_executor_backend": "uni"}
    if local:
        engine_args.update(enforce_eager=True, max_model_len=1024 if chat else 512, seed=0)
    llm = LLM(**engine_args)  # type: ignore[arg-type]
    say(
        f"Engine ready in {time.perf_counter() - started:.1f} s. Generating {len(prompts)} "
        f"completions of up to {max_tokens} tokens with qr sampling ..."
    )
    params = [
        SamplingParams(
            max_tokens=max_tokens,
            ignore_eos=ignore_eos,
            extra_args={
                **xargs,
                "qr_request_tag": f"demo-{i}",
                "qr_diagnostic_mode": True,
                "qr_log_level": "none",
            },
        )
        for i in range(len(prompts))
    ]
    say_record_files(say)
    outputs, processors, records, elapsed = generate_with_records(
        llm, prompts, params, chat, progress=console
    )
    decode = llm.get_tokenizer().decode

    for i, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
        completion = output.outputs[0]
        mine = sorted(
            (r for r in records if r.request_tag == f"demo-{i}"), key=lambda r: r.token_index
        )
        print(f"\n=== prompt {i}: {prompt!r}")
        print(f"--- text: {completion.text.strip()!r}")
        _print_table(mine, decode, table)
        stop = "end-of-sequence token" if completion.finish_reason == "stop" else "token limit"
        print(f"--- demo-{i}: {_summary(mine)}; ended by the {stop}")
        if [r.token_id for r in mine] != list(completion.token_ids):
            print("!!! records do not match the generated tokens")
            return 1
    files = [f for f in (p.record_file() for p in processors) if f is not None]
    for p in processors:
        p.close()  # flushes the record file
    print(f"\nall: {_summary(records)}; {len(records) / elapsed:.1f} tokens/s")
    warn_fallbacks(records, console)
    if files:
        where = ", ".join(str(f.resolve()) for f in files)
        print(f"records: {len(records)} appended to {where}")
        print(f"analyse: qr-analyze {os.environ['QR_RECORD_PATH']} --tag-a demo-0 --tag-b demo-1")
    else:
        print("records: in memory only; set QR_RECORD_PATH=records.jsonl to keep them")
    return 0


def say_record_files(say: Callable[[str], None]) -> None:
    """Say which record file each live processor writes (its own series under the base)."""
    base = os.environ.get("QR_RECORD_PATH")
    files = [
        f
        for f in (p.record_file() for p in qr_vllm.QRSamplingLogitsProcessor.live_instances())
        if f
    ]
    if base and files:
        where = ", ".join(str(f.resolve()) for f in files)
        say(f"records: writing {where} (this engine's series under QR_RECORD_PATH={base})")


def warn_fallbacks(records: Sequence[TokenSamplingRecord], console: TextIO | None) -> None:
    """A console line when tokens came from the fallback source, with the reasons."""
    fell = [r for r in records if r.fallback]
    if not fell or console is None:
        return
    reasons = ", ".join(sorted({str(r.fallback_reason) for r in fell}))
    print(
        f"warning: {len(fell)} of {len(records)} tokens came from the fallback source "
        f"(fallback_reason {reasons}); they are flagged in their records",
        file=console,
        flush=True,
    )


def _print_table(
    records: Sequence[TokenSamplingRecord], decode: object, rows: int | None = None
) -> None:
    if rows == 0:
        return
    print(
        f"{'#':>3} {'id':>6} {'rank':>4} {'prob':>7} {'u':>9} {'z':>8} {'T':>5} "
        f"{'source':<14} {'seq':>6} {'fb':<3} token"
    )
    hidden = len(records) - rows if rows is not None and len(records) > rows else 0
    if hidden:
        records = records[:rows]
    for r in records:
        seq = "-" if r.sequence_id is None else str(r.sequence_id)
        text = repr(decode([r.token_id]))  # type: ignore[operator]
        print(
            f"{r.token_index:>3} {r.token_id:>6} {r.token_rank:>4} {r.token_prob:>7.4f} "
            f"{r.u:>9.6f} {r.z_score:>+8.4f} {r.temperature:>5.2f} {r.entropy_source:<14} "
            f"{seq:>6} {'yes' if r.fallback else 'no':<3} {text}"
        )
    if hidden:
        print(f"  ... {hidden} more (--table all shows every row)")


def _summary(records: Sequence[TokenSamplingRecord]) -> str:
    n = len(records)
    mean_z = sum(r.z_score for r in records) / n if n else 0.0
    fallbacks = sum(r.fallback for r in records)
    sources = sorted({r.entropy_source for r in records})
    return (
        f"tokens {n}, mean z {mean_z:+.4f}, fallbacks {fallbacks}, "
        f"sources {', '.join(sources) or '-'}"
    )
