"""A vLLM driver run inside the Ray tests' loopback-only namespace.

The test process cannot reach the namespace's network, so everything that
talks to the engine runs here, and this script prints one line
``qr-ray-result: {json}`` for the test to read:

* ``generate``: ``LLM(...)`` over Ray (tensor parallel), one ``generate`` call;
  with ``--watch-ranks``, also the tokens each rank's processor forced, step
  by step (a callable sent with ``collective_rpc``: the driver needs
  ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``);
* ``serve``: ``vllm serve ...`` (the command after ``--``), then concurrent
  ``/v1/completions`` requests;
* ``idle``: wait until no actor holds a Ray "GPU" (run before each driver).

Both report the listening TCP sockets of the namespace while the engine is up,
the token ids per request tag, the first error and how long each phase took
(figures to print, not to assert).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "vllm"))  # serve_helpers, shared with the engine tests

RESULT_PREFIX = "qr-ray-result: "


def _listeners() -> list[str]:
    done = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line.strip()]


def _addresses() -> list[str]:
    """Every address of every interface here (``ip -o addr``: ``lo`` only, if confined)."""
    done = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True)
    return [line.split()[3] for line in done.stdout.splitlines() if len(line.split()) > 3]


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _watch_forced(worker: object) -> int:
    """In each worker: note the token each qr processor forces, one list per step.

    The processor forces a token by leaving only its logit finite, so the
    argmax of each row it returns is that token.
    """
    from qr_vllm import QRSamplingLogitsProcessor

    processors = QRSamplingLogitsProcessor.live_instances()
    for processor in processors:
        forced: list[list[int]] = []

        def watched(
            logits: Any, *rest: Any, _apply: Any = processor.apply, _forced: Any = forced
        ) -> Any:
            out = _apply(logits, *rest)
            _forced.append(out.argmax(dim=-1).tolist())
            return out

        watched.forced = forced  # type: ignore[attr-defined]
        processor.apply = watched  # type: ignore[method-assign]
    return len(processors)


def _forced_tokens(worker: object) -> list[list[list[int]]]:
    """In each worker: what :func:`_watch_forced` noted, per processor."""
    from qr_vllm import QRSamplingLogitsProcessor

    return [getattr(p.apply, "forced", []) for p in QRSamplingLogitsProcessor.live_instances()]


def generate(args: argparse.Namespace) -> dict[str, Any]:
    """``LLM(...)`` with the Ray executor, then one batch of requests."""
    result: dict[str, Any] = {"tokens": {}, "start_error": None, "request_error": None}
    t0 = time.monotonic()
    from vllm import LLM, SamplingParams

    result["import_s"] = time.monotonic() - t0
    t1 = time.monotonic()
    try:
        llm = LLM(
            model=args.model,
            tensor_parallel_size=args.tp,
            distributed_executor_backend=args.backend,
            enforce_eager=True,
            max_model_len=args.max_model_len,
            max_num_seqs=8,
            seed=0,
        )
    except Exception as exc:
        result["start_error"] = _error(exc)
        result["start_traceback"] = traceback.format_exc()[-4000:]
        result["start_s"] = time.monotonic() - t1
        return result
    result["start_s"] = time.monotonic() - t1
    result["listeners"] = _listeners()
    result["addresses"] = _addresses()
    if args.watch_ranks:
        result["watched"] = llm.collective_rpc(_watch_forced)
    requests: list[dict[str, Any]] = json.loads(args.requests)
    params = [
        SamplingParams(
            max_tokens=args.max_tokens,
            ignore_eos=True,
            extra_args={"qr_request_tag": r["tag"], **r.get("extra", {})},
        )
        for r in requests
    ]
    t2 = time.monotonic()
    try:
        outputs = llm.generate([r["prompt"] for r in requests], params, use_tqdm=False)
        result["tokens"] = {
            r["tag"]: list(o.outputs[0].token_ids) for r, o in zip(requests, outputs, strict=True)
        }
    except Exception as exc:
        result["request_error"] = _error(exc)
    result["run_s"] = time.monotonic() - t2
    if args.watch_ranks:
        result["forced_by_rank"] = llm.collective_rpc(_forced_tokens)
    t3 = time.monotonic()
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception as exc:  # a dead engine may fail to shut down cleanly
        result["shutdown_error"] = _error(exc)
    result["stop_s"] = time.monotonic() - t3
    return result


def serve(args: argparse.Namespace) -> dict[str, Any]:
    """``vllm serve`` (data parallel over Ray), then concurrent completions."""
    from serve_helpers import complete, start_server, stop_group

    result: dict[str, Any] = {"tokens": {}, "start_error": None, "request_error": None}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="qr-ray-serve"))
    t0 = time.monotonic()
    try:
        server = start_server(args.command, dict(os.environ), workdir, "serve")
    except AssertionError as exc:
        result["start_error"] = str(exc)[-4000:]
        result["start_s"] = time.monotonic() - t0
        return result
    result["start_s"] = time.monotonic() - t0
    result["log"] = str(server.log)
    try:
        result["listeners"] = _listeners()
        result["addresses"] = _addresses()
        tokens: dict[str, list[int]] = {}
        errors: list[str] = []

        def ask(tag: str) -> None:
            try:
                tokens[tag] = complete(server, tag, f"Tell {tag} a story", args.max_tokens)
            except Exception as exc:
                errors.append(_error(exc))

        t1 = time.monotonic()
        threads = [
            threading.Thread(target=ask, args=(f"{args.tag_prefix}{i}",))
            for i in range(args.requests)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result["run_s"] = time.monotonic() - t1
        result["tokens"] = tokens
        result["request_error"] = errors[0] if errors else None
    finally:
        t2 = time.monotonic()
        stop_group(server.proc)
        result["stop_s"] = time.monotonic() - t2
    return result


def idle(args: argparse.Namespace) -> dict[str, Any]:
    """Wait until every Ray "GPU" of the cluster is free again, up to ``--timeout`` s.

    A driver that ended (or was killed) leaves its actors to Ray, which ends
    them in its own time; until then they hold their resources.
    """
    import ray

    t0 = time.monotonic()
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level="ERROR")
    try:
        while True:
            total = ray.cluster_resources().get("GPU", 0.0)
            free = ray.available_resources().get("GPU", 0.0)
            waited = time.monotonic() - t0
            if free >= total > 0 or waited > args.timeout:
                return {"idle": free >= total > 0, "free": free, "total": total, "waited_s": waited}
            time.sleep(0.5)  # polling Ray's view of the resources: there is no event to wait on
    finally:
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--model", required=True)
    gen.add_argument("--tp", type=int, default=2)
    gen.add_argument("--backend", default="ray", help="distributed_executor_backend")
    gen.add_argument("--max-model-len", type=int, default=128)
    gen.add_argument("--max-tokens", type=int, default=8)
    gen.add_argument("--requests", required=True, help="JSON list of {tag, prompt, extra}")
    gen.add_argument(
        "--watch-ranks", action="store_true", help="report the tokens each rank forced"
    )
    wait = sub.add_parser("idle")
    wait.add_argument("--timeout", type=float, default=300.0)
    srv = sub.add_parser("serve")
    srv.add_argument("--requests", type=int, default=8)
    srv.add_argument("--max-tokens", type=int, default=16)
    srv.add_argument("--tag-prefix", default="dp-")
    srv.add_argument("--workdir", default=None)
    srv.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.scenario == "serve":
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        result = serve(args)
    elif args.scenario == "idle":
        result = idle(args)
    else:
        result = generate(args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
