"""``python -m qr_vllm.demo --arms``: a small two-arm experiment in one engine.

Requests of two experiment arms (``QR_SOURCES``; by default ``system``
against ``sham``) are sent together, alternating, so that both arms are
sampled in the same engine steps and nothing differs between them but the
entropy. The records show that each token came from its own arm; the
comparison is :func:`qr_core.analysis.analyze` grouped by arm.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from qr_core.analysis import analyze
from qr_vllm._adapter_config import AdapterConfig
from qr_vllm.demo._generate import generate_with_records, say_record_files, warn_fallbacks

if TYPE_CHECKING:
    from qr_core.analysis import GroupStats
    from qr_core.records import TokenSamplingRecord

__all__ = ["DEFAULT_ARMS", "analysis_command", "run_arms"]

DEFAULT_ARMS = {
    "system": {"entropy_source_type": "system"},
    "sham": {"entropy_source_type": "sham"},
}
"""The arms used when ``QR_SOURCES`` is unset: OS entropy against the blinded sham."""

_PROMPTS = (
    "The nature of consciousness is",
    "Once upon a time",
    "The sea at night",
    "A short note on randomness:",
)


def run_arms(
    model: str,
    engine_args: dict[str, object],
    *,
    chat: bool,
    requests_per_arm: int,
    max_tokens: int,
    say: Callable[[str], None],
    console: TextIO | None = None,
) -> int:
    """Run the experiment and print the comparison.

    Args:
        model: The model to load.
        engine_args: Extra ``LLM`` arguments (``enforce_eager``...).
        chat: Send the prompts as chat messages (instruction-tuned model).
        requests_per_arm: Requests in each arm.
        max_tokens: Tokens per request (end-of-sequence is ignored, so every
            request contributes exactly this many).
        say: Prints a progress line.
        console: The terminal, for the progress bar and the warnings.

    Returns:
        The exit status: 1 when a record does not match its token or arm.
    """
    os.environ.setdefault("QR_SOURCES", json.dumps(DEFAULT_ARMS))
    arms = list(AdapterConfig.from_env().sources)
    if len(arms) < 2:
        say(f"--arms needs two arms in QR_SOURCES, found {arms}")
        return 2
    a, b = arms[:2]
    # vLLM logs while it is imported: only now, once the caller has sent file
    # descriptor 2 to the log file and set the environment vLLM reads.
    from vllm import LLM, SamplingParams

    say(f"Two-arm experiment: arm {a!r} against arm {b!r}, in one engine ...")
    llm = LLM(model=model, distributed_executor_backend="uni", **engine_args)  # type: ignore[arg-type]
    plan = [(arm, f"{arm}-{i}") for i in range(requests_per_arm) for arm in (a, b)]
    prompts = [_PROMPTS[i % len(_PROMPTS)] for i in range(len(plan))]
    params = [
        SamplingParams(
            max_tokens=max_tokens,
            ignore_eos=True,
            extra_args={
                "qr_entropy_source": arm,
                "qr_request_tag": tag,
                "qr_diagnostic_mode": True,
                "qr_log_level": "none",
            },
        )
        for arm, tag in plan
    ]
    say_record_files(say)
    say(f"Generating {len(plan)} requests of {max_tokens} tokens, alternating arms ...")
    outputs, processors, records, elapsed = generate_with_records(
        llm, prompts, params, chat, progress=console
    )
    for p in processors:
        p.close()  # flushes the record file
    for (arm, tag), output in zip(plan, outputs, strict=True):
        mine = sorted((r for r in records if r.request_tag == tag), key=lambda r: r.token_index)
        if [r.token_id for r in mine] != list(output.outputs[0].token_ids):
            say(f"!!! the records of {tag} do not match its tokens")
            return 1
        if any(r.arm != arm for r in mine):
            say(f"!!! a record of {tag} names another arm than {arm!r}")
            return 1
    shared = _shared_steps(records, a, b)
    say(
        f"{len(records)} tokens in {elapsed:.1f} s; every record matches its token and arm; "
        f"{shared} engine steps sampled both arms"
    )
    warn_fallbacks(records, console)
    report = analyze(records, by="arm", a=a, b=b)
    print(_table([g for g in report.groups if g.label in (f"arm={a}", f"arm={b}")]))
    if report.comparison is not None:
        test = report.comparison.test
        print(
            f"\n{a} - {b}: difference of mean z {test.difference:+.4f} "
            f"(standard error {test.standard_error:.4f}), Welch t {test.statistic:+.3f}, "
            f"p {test.p_value:.3g}"
        )
    print(
        "\nA demonstration, not an experiment: far too few tokens to detect a small effect "
        "(see `qr-analyze plan`)."
    )
    record_path = os.environ.get("QR_RECORD_PATH")
    if record_path:
        print(f"Full analysis: {analysis_command(records, a, b, record_path)}")
    return 0


def analysis_command(records: Sequence[TokenSamplingRecord], a: str, b: str, path: str) -> str:
    """The ``qr-analyze`` command that compares the two arms of these records.

    Arms of different configurations (a calibrated arm's ``config_hash``
    includes its calibration) are refused together unless
    ``--allow-mixed-configs`` is given, so the command carries the flag exactly
    when the records need it.
    """
    mixed = len({r.config_hash for r in records}) > 1
    flag = " --allow-mixed-configs" if mixed else ""
    return f"qr-analyze {path} --by arm --a {a} --b {b}{flag}"


def _shared_steps(records: Sequence[TokenSamplingRecord], a: str, b: str) -> int:
    arms_of: dict[int, set[str | None]] = {}
    for r in records:
        arms_of.setdefault(r.logits_ready_ns, set()).add(r.arm)
    return sum(1 for arms in arms_of.values() if {a, b} <= arms)


def _table(groups: Sequence[GroupStats]) -> str:
    lines = [
        f"\n{'group':<16} {'tokens':>6} {'fallback':>8} {'mean z':>8} "
        f"{'Stouffer Z':>10} {'p':>8} {'KS D':>7} {'KS p':>8}"
    ]
    for g in groups:
        lines.append(
            f"{g.label:<16} {g.tokens:>6} {g.fallback_tokens:>8} {g.z.mean_z:>+8.4f} "
            f"{g.z.stouffer_z:>+10.3f} {g.z.p_value:>8.3g} {g.ks.statistic:>7.4f} "
            f"{g.ks.p_value:>8.3g}"
        )
    return "\n".join(lines)
