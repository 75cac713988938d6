"""The pre-registered plan (``QR_PREREGISTRATION_PATH``): loaded at start, hashed into
every record.

The plan file is read and checked by qr-core (:func:`qr_core.records.load_preregistration`);
a missing or invalid file stops the engine at start with a message naming the variable.
Its SHA-256 goes into every record (``preregistration_sha256``) and into the records'
``config_hash`` (:func:`registered_hash`), so records made under another plan, or under
none, never share a configuration hash with these.
"""

from __future__ import annotations

import functools
import logging

from qr_core.records import Preregistration, PreregistrationError, config_hash, load_preregistration
from qr_vllm._errors import QRParamsError
from qr_vllm._settings import RecordSettings

__all__ = ["load_plan", "registered_hash"]

logger = logging.getLogger(__name__)


def load_plan(records: RecordSettings) -> Preregistration | None:
    """Load the plan ``QR_PREREGISTRATION_PATH`` names (``None`` when it is empty).

    Raises:
        QRParamsError: The file is missing or unreadable, or no valid plan (the message
            names the variable, the file and the field).
    """
    path = records.preregistration_path
    if not path:
        return None
    try:
        plan = load_preregistration(path)
    except PreregistrationError as exc:
        raise QRParamsError(f"QR_PREREGISTRATION_PATH: {exc}") from exc
    logger.info(
        "pre-registered plan %s (sha256 %s): %s, arms %s, %d tokens per arm",
        path,
        plan.sha256,
        plan.design,
        ", ".join(plan.arms),
        plan.tokens_per_arm,
    )
    return plan


@functools.lru_cache(maxsize=256)
def registered_hash(digest: str, preregistration_sha256: str | None) -> str:
    """The records' ``config_hash`` with the plan's hash folded in (``digest`` itself
    when not pre-registered)."""
    if preregistration_sha256 is None:
        return digest
    return config_hash({"config": digest, "preregistration_sha256": preregistration_sha256})
