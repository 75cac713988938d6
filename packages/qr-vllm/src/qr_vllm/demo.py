"""Generate text with vLLM and qr sampling, and show where every token came from.

``python -m qr_vllm.demo`` (``hatch run generate``) builds the tiny local model
on first use (cached outside the repository), starts an in-process vLLM
engine, generates with qr sampling and the configured entropy source
(``QR_ENTROPY_SOURCE_TYPE``, default ``system``), and prints the text and one
provenance line per token. ``--model`` uses any model vLLM can load instead;
``--serve`` starts ``vllm serve`` with the processor loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_DEFAULT_PROMPTS = ("The nature of consciousness is", "Once upon a time")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qr_vllm.demo",
        description="Generate with vLLM + qr sampling and print per-token provenance.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model path or hub name (default: the tiny local model, built on first use)",
    )
    parser.add_argument(
        "--prompt", action="append", default=None, help="prompt (repeatable; default: two)"
    )
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per prompt (16)")
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
    return parser


def _xargs(pairs: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--xarg {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _prepare_env(args: argparse.Namespace, local_model: bool) -> None:
    if local_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.serve:
        # One process: starts in seconds and keeps the live processor reachable.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if args.seed is not None:
        os.environ["QR_ENTROPY_SOURCE_TYPE"] = "mock_uniform"
        os.environ["QR_MOCK_UNIFORM_SEED"] = str(args.seed)
    elif args.source:
        os.environ["QR_ENTROPY_SOURCE_TYPE"] = args.source


def _resolve_model(args: argparse.Namespace) -> tuple[str, bool]:
    if args.model:
        return str(args.model), False
    from qr_vllm._tiny_model import build_tiny_model

    print("Building / reusing the tiny local model ...", flush=True)
    return str(build_tiny_model()), True


def _serve(model: str, local: bool, port: int) -> int:
    vllm_cmd = shutil.which("vllm", path=str(Path(sys.executable).parent)) or shutil.which("vllm")
    if vllm_cmd is None:
        print("the `vllm` command is not installed", file=sys.stderr)
        return 2
    argv = [vllm_cmd, "serve", model, "--host", "127.0.0.1", "--port", str(port)]
    if local:
        argv += ["--enforce-eager", "--max-model-len", "512"]
    print("Starting:", " ".join(argv), flush=True)
    print(
        "Then try:\n"
        f"  curl http://127.0.0.1:{port}/v1/completions -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "prompt": "The nature of", "max_tokens": 16, '
        '"vllm_xargs": {"qr_top_k": 20, "qr_request_tag": "demo"}}\'',
        flush=True,
    )
    return subprocess.call(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    args = _parser().parse_args(argv)
    model, local = _resolve_model(args)
    _prepare_env(args, local)
    if args.serve:
        return _serve(model, local, args.port)

    from vllm import LLM, SamplingParams

    from qr_vllm import QRSamplingLogitsProcessor

    engine_args: dict[str, object] = {"model": model, "distributed_executor_backend": "uni"}
    if local:
        engine_args.update(enforce_eager=True, max_model_len=512, seed=0)
    llm = LLM(**engine_args)  # type: ignore[arg-type]
    prompts = list(args.prompt or _DEFAULT_PROMPTS)
    base_xargs = _xargs(args.xarg)
    params = [
        SamplingParams(
            max_tokens=args.max_tokens,
            extra_args={
                **base_xargs,
                "qr_request_tag": f"demo-{i}",
                "qr_diagnostic_mode": True,
                "qr_log_level": "none",
            },
        )
        for i in range(len(prompts))
    ]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    processors = QRSamplingLogitsProcessor.live_instances()
    records = [r for p in processors for r in p.diagnostic_records()]
    tokenizer = llm.get_tokenizer()

    for i, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
        completion = output.outputs[0]
        print(f"\n=== prompt {i}: {prompt!r}")
        print(f"--- text: {prompt}{completion.text}")
        mine = sorted(
            (r for r in records if r.request_tag == f"demo-{i}"), key=lambda r: r.token_index
        )
        print(
            f"{'#':>3} {'token':<14} {'id':>6} {'rank':>4} {'prob':>7} {'u':>9} "
            f"{'z':>8} {'T':>5} {'source':<14} {'seq':>6} fallback"
        )
        for r in mine:
            text = repr(tokenizer.decode([r.token_id]))[:14]
            seq = "-" if r.sequence_id is None else str(r.sequence_id)
            print(
                f"{r.token_index:>3} {text:<14} {r.token_id:>6} {r.token_rank:>4} "
                f"{r.token_prob:>7.4f} {r.u:>9.6f} {r.z_score:>+8.4f} {r.temperature:>5.2f} "
                f"{r.entropy_source:<14} {seq:>6} {'yes' if r.fallback else 'no'}"
            )
        if [r.token_id for r in mine] != list(completion.token_ids):
            print("!!! records do not match the generated tokens", file=sys.stderr)
            return 1
    for p in processors:
        t = p.timings()
        if t.steps:
            print(
                f"\nqr steps: {t.steps}, rows: {t.rows}, fetch {t.fetch_s * 1e3:.1f} ms, "
                f"adapter {t.adapter_s * 1e3:.1f} ms in total"
            )
        p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
