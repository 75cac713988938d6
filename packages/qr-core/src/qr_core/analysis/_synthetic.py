"""Simulated records: for power analysis before an experiment and for pipeline checks."""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np

from qr_core.records._schema import TokenSamplingRecord, config_hash

__all__ = ["simulate_records"]

_SIMULATED_CONFIG = config_hash({"simulated": True})
_SAMPLES = 20480  # the bytes per token a real amplifier would standardise
_NO_BYTES_SHA256 = hashlib.sha256(b"").hexdigest()  # no bytes are drawn


def simulate_records(
    n: int,
    *,
    seed: int,
    z_shift: float = 0.0,
    request_tag: str | None = None,
    arm: str | None = None,
    tokens_per_request: int = 100,
    config: str = _SIMULATED_CONFIG,
    start_ns: int | None = None,
) -> list[TokenSamplingRecord]:
    """Return ``n`` records whose z-scores are N(``z_shift``, 1) and ``u = Phi(z)``.

    With ``z_shift=0`` they follow the null hypothesis exactly (u is U(0, 1)); a
    non-zero shift plants an effect of that size, so ``analyze`` on simulated data
    shows how many tokens an experiment needs to detect it.

    Args:
        n: Number of records.
        seed: Seed of the numpy generator (the same seed gives the same records).
        z_shift: Mean of z.
        request_tag: ``request_tag`` of every record.
        arm: ``arm`` of every record (the experiment arm).
        tokens_per_request: Records per simulated request id.
        config: ``config_hash`` of every record.
        start_ns: Wall-clock time of the first token; now by default.

    Returns:
        Records in time order, one token per microsecond.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n) + z_shift
    token_ids = rng.integers(0, 50_000, size=n)
    t0 = time.time_ns() if start_ns is None else start_ns
    prefix = f"sim-{seed}-{request_tag or 'untagged'}-{arm or 'no-arm'}"
    records = []
    for i in range(n):
        zi = float(z[i])
        t = t0 + 1_000 * i
        records.append(
            TokenSamplingRecord(
                request_id=f"{prefix}-{i // tokens_per_request}",
                request_tag=request_tag,
                token_index=i % tokens_per_request,
                logits_ready_ns=t,
                entropy_requested_ns=t + 10,
                entropy_generated_ns=t + 20,
                entropy_received_ns=t + 30,
                entropy_source="simulated",
                device_id="",
                sequence_id=i,
                fallback=False,
                fallback_reason=None,
                sample_count=_SAMPLES,
                raw_sha256=_NO_BYTES_SHA256,
                raw_bytes_hex=None,
                amplifier="simulated",
                sample_mean=127.5 + 73.9003 / math.sqrt(_SAMPLES) * zi,
                z_score=zi,
                u=0.5 * math.erfc(-zi / math.sqrt(2.0)),
                temperature_strategy="fixed",
                temperature=0.7,
                shannon_entropy=2.0,
                token_id=int(token_ids[i]),
                token_rank=0,
                token_prob=0.5,
                num_candidates=50,
                top_k=50,
                top_p=0.9,
                config_hash=config,
                arm=arm,
                u_transform="phi",
            )
        )
    return records
