"""Child process of test_tensor_parallel_engine.py: one 2-rank TP generation.

Prints one JSON object: the token ids vLLM returned per request tag. The
records go to ``QR_RECORD_PATH`` (set by the test), written by the first rank
of the tensor-parallel group only.
"""

from __future__ import annotations

import json
import sys

from vllm import LLM, SamplingParams

from qr_vllm.demo import build_tiny_model

TAGS = ("tp-0", "tp-1")
RESULT_PREFIX = "qr-tp-result: "  # vLLM logs to stdout too


def main() -> int:
    """Generate with tensor_parallel_size=2 and print the returned token ids."""
    llm = LLM(
        model=str(build_tiny_model()),
        tensor_parallel_size=2,
        distributed_executor_backend="mp",
        enforce_eager=True,
        max_model_len=256,
        seed=0,
    )
    params = [
        SamplingParams(max_tokens=8, ignore_eos=True, extra_args={"qr_request_tag": tag})
        for tag in TAGS
    ]
    outputs = llm.generate(["Hello there", "Once upon"], params, use_tqdm=False)
    returned = {tag: list(out.outputs[0].token_ids) for tag, out in zip(TAGS, outputs, strict=True)}
    print(RESULT_PREFIX + json.dumps(returned), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
