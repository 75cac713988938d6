"""qr sampling inside Hugging Face transformers' ``generate()``: qr-core without vLLM.

qr-core's amplifier, temperature strategy and ``select_tokens`` and a qr-entropy
source (any: ``system``, ``quantum_grpc``, ``mock_uniform``, a plug-in) pick
every token through transformers' ``LogitsProcessor`` hook; every token's
:class:`~qr_core.records.TokenSamplingRecord` goes to the same sinks qr-vllm
uses (a JSON Lines file, the log, an in-memory buffer), so ``qr-analyze``
reads the result like any other record file.

How it steers ``generate()``: the processor selects the token itself, after
the logits exist, and returns a row of ``-inf`` with ``0.0`` at that token.
``generate(do_sample=False)`` then takes exactly that token; transformers'
own sampling never draws.

Run it::

    python examples/transformers_qr_sampling.py --model PATH_TO_HF_FOLDER \\
        --prompt "Describe the ocean." --max-new-tokens 40 --records records.jsonl

The entropy source comes from the ``QR_*`` environment as in qr-vllm, e.g.
``QR_ENTROPY_SOURCE_TYPE=quantum_grpc QR_GRPC_SERVER_ADDRESS=127.0.0.1:50051``;
``--chat`` applies the tokenizer's chat template to each prompt. The folder
``hatch run generate`` converts SmolLM2-135M-Instruct into (printed on its
first run, ``~/.cache/qr-sampler/smollm2-135m-instruct-bf16``) works here.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
)

from qr_core import SamplingConfig, build_amplifier, build_temperature_strategy, select_tokens
from qr_core.records import (
    LOG_SINK_LOGGER,
    JsonlFileSink,
    LogSink,
    RecordSink,
    RingBufferSink,
    build_token_records,
    config_hash,
)
from qr_entropy import EntropyConfig, EntropySource, build_source


class QRLogitsProcessor(LogitsProcessor):
    """Selects each row's next token with external entropy and forces it.

    One processor serves one ``generate()`` call: it learns the prompt length
    on its first call. Rows that produced an end-of-sequence token are left
    alone afterwards (transformers pads them): they consume no entropy and get
    no record, so the records are exactly the generated tokens.

    Args:
        source: Where the entropy bytes come from; fetched once per step, after
            the step's logits exist.
        config: Amplifier, temperature and top-k / top-p settings.
        sinks: Receive each step's records.
        eos_token_ids: Tokens that end a row.
        request_tag: Copied into every record (``qr_request_tag`` in qr-vllm).
    """

    def __init__(
        self,
        source: EntropySource,
        config: SamplingConfig | None = None,
        *,
        sinks: Sequence[RecordSink] = (),
        eos_token_ids: Iterable[int] = (),
        request_tag: str | None = None,
    ) -> None:
        self._source = source
        self._config = config or SamplingConfig()
        self._amplifier = build_amplifier(self._config)
        self._strategy = build_temperature_strategy(self._config)
        self._hash = config_hash(dataclasses.asdict(self._config))
        self._sinks = list(sinks)
        self._eos = np.array(sorted(set(eos_token_ids)), dtype=np.int64)
        self._tag = request_tag
        self._prompt_len: int | None = None
        self._finished = np.zeros(0, dtype=bool)
        self._request_ids: list[str] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        """Return ``scores`` with each unfinished row forced to its qr-selected token."""
        batch = scores.shape[0]
        if self._prompt_len is None:
            self._prompt_len = input_ids.shape[1]
            self._finished = np.zeros(batch, dtype=bool)
            self._request_ids = [uuid.uuid4().hex[:16] for _ in range(batch)]
        token_index = input_ids.shape[1] - self._prompt_len
        if token_index > 0:
            last = input_ids[:, -1].cpu().numpy()
            self._finished |= np.isin(last, self._eos)
        rows = np.flatnonzero(~self._finished)
        if rows.size == 0:
            return scores
        logits = scores[torch.from_numpy(rows)].to(torch.float32).cpu().numpy()
        temps = self._strategy.compute_batch(logits)
        logits_ready_ns = time.time_ns()
        n = self._config.sample_count
        fetched = self._source.fetch(rows.size * n)
        raw = np.frombuffer(fetched.data, dtype=np.uint8).reshape(rows.size, n)
        amp = self._amplifier.amplify_batch(raw)
        chosen = select_tokens(
            logits,
            amp.u,
            temperature=temps.temperature,
            top_k=self._config.top_k,
            top_p=self._config.top_p,
        )
        tokens = np.asarray(chosen.token_id, dtype=np.int64)
        forced = scores.clone()
        rows_t = torch.from_numpy(rows)
        forced[rows_t] = float("-inf")
        forced[rows_t, torch.from_numpy(tokens)] = 0.0
        if self._sinks:
            records = build_token_records(
                amp,
                temps,
                chosen,
                request_id=[self._request_ids[row] for row in rows.tolist()],
                request_tag=self._tag,
                token_index=token_index,
                logits_ready_ns=logits_ready_ns,
                fetch=fetched,
                raw=raw,
                amplifier=self._amplifier.name,
                temperature_strategy=self._strategy.name,
                u_transform=self._amplifier.u_transform,
                top_k=self._config.top_k,
                top_p=self._config.top_p,
                config_hash=self._hash,
            )
            for sink in self._sinks:
                sink.write(records)
        return forced


def eos_ids(model: Any) -> list[int]:
    """The model's end-of-sequence token ids (its generation config may list several)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    processor: QRLogitsProcessor,
    *,
    max_new_tokens: int,
    chat: bool = False,
) -> list[list[int]]:
    """Generate one completion per prompt, every token chosen by ``processor``.

    Returns:
        The generated token ids of each prompt, up to and including the
        end-of-sequence token where one ended it (padding removed).
    """
    if chat:
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
    else:
        texts = list(prompts)
    tokenizer.padding_side = "left"  # decoder-only: new tokens follow the prompt directly
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    with torch.no_grad():
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList([processor]),
            pad_token_id=tokenizer.pad_token_id,
        )
    stop = set(eos_ids(model))
    completions: list[list[int]] = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        ids: list[int] = []
        for token in row:
            ids.append(int(token))
            if token in stop:
                break
        completions.append(ids)
    return completions


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate with qr sampling and print text, records and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a transformers model folder or name")
    parser.add_argument("--prompt", action="append", default=None, help="repeatable")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--chat", action="store_true", help="apply the chat template")
    parser.add_argument("--records", default=None, help="JSON Lines file for the records")
    parser.add_argument(
        "--log",
        choices=["summary", "full"],
        default=None,
        help="also log every record on stderr: one line per token, or its whole JSON",
    )
    parser.add_argument("--tag", default="transformers", help="request tag of the records")
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # float32: CPUs without bf16 arithmetic run a bf16 checkpoint many times slower.
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    memory = RingBufferSink(100_000)
    sinks: list[RecordSink] = [memory]
    if args.records:
        sinks.append(JsonlFileSink(args.records))
    if args.log:
        sinks.append(LogSink(args.log))
        # The sink logs at INFO on qr-core's record logger, which nothing
        # configures in a plain script: give it a handler, or it prints nothing.
        record_logger = logging.getLogger(LOG_SINK_LOGGER)
        record_logger.addHandler(logging.StreamHandler(sys.stderr))
        record_logger.setLevel(logging.INFO)
    prompts = args.prompt or ["Once upon a time"]
    with build_source(EntropyConfig()) as source:
        processor = QRLogitsProcessor(
            source,
            SamplingConfig(),
            sinks=sinks,
            eos_token_ids=eos_ids(model),
            request_tag=args.tag,
        )
        completions = generate(
            model,
            tokenizer,
            prompts,
            processor,
            max_new_tokens=args.max_new_tokens,
            chat=args.chat,
        )
    for sink in sinks:
        sink.close()
    records = memory.records()
    for prompt, ids in zip(prompts, completions, strict=True):
        print(f"=== {prompt!r}\n{tokenizer.decode(ids, skip_special_tokens=True)!r}")
    mean_z = sum(r.z_score for r in records) / max(1, len(records))
    sources = sorted({r.entropy_source for r in records})
    print(
        f"tokens {len(records)}, mean z {mean_z:+.4f}, "
        f"fallbacks {sum(r.fallback for r in records)}, sources {', '.join(sources)}"
    )
    if args.records:
        print(f"records: {len(records)} appended to {args.records}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
