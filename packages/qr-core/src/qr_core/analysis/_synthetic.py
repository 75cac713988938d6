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
_BYTE_SUM_SD = math.sqrt(_SAMPLES * (256**2 - 1) / 12.0)  # sd of a perfect byte sum


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
    calibration_blocks: int | None = None,
) -> list[TokenSamplingRecord]:
    """Return ``n`` records whose z-scores are N(``z_shift``, 1) and ``u = Phi(z)``.

    With ``z_shift=0`` they follow the null hypothesis exactly (u is U(0, 1)); a
    non-zero shift plants an effect of that size, so ``analyze`` on simulated data
    shows how many tokens an experiment needs to detect it.

    With ``calibration_blocks`` the tokens are standardised against a calibration of a
    perfect device from that many blocks, as a calibrated arm's are: one offset
    ``b ~ N(0, 1/B)`` and one scale ``r`` (``1/r^2 ~ chi2_{B-1}/(B-1)``) drawn from
    ``seed`` for all of them, ``z = r (z0 + b)``, and the records carry the
    calibration's figures (schema 3) and a sha256 made from ``seed`` and B.

    Args:
        n: Number of records.
        seed: Seed of the numpy generator (the same seed gives the same records).
        z_shift: Mean of z.
        request_tag: ``request_tag`` of every record.
        arm: ``arm`` of every record (the experiment arm).
        tokens_per_request: Records per simulated request id.
        config: ``config_hash`` of every record.
        start_ns: Wall-clock time of the first token; now by default.
        calibration_blocks: B of a simulated calibration (``None``: exact tokens).

    Returns:
        Records in time order, one token per microsecond.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n) + z_shift
    token_ids = rng.integers(0, 50_000, size=n)
    calibration: dict[str, object] = {}
    if calibration_blocks is not None:
        b = calibration_blocks
        offset = float(rng.standard_normal()) / math.sqrt(b)
        ratio = math.sqrt(float(rng.chisquare(b - 1)) / (b - 1))  # s_hat / s
        z = (z + offset) / ratio
        std = _BYTE_SUM_SD * ratio
        calibration = {
            "calibration_sha256": hashlib.sha256(f"simulated-{seed}-{b}".encode()).hexdigest(),
            "calibration_blocks": b,
            "calibration_mean": 127.5 * _SAMPLES - offset * _BYTE_SUM_SD,
            "calibration_std": std,
            "calibration_mean_se_z": 1.0 / math.sqrt(b),
            "calibration_std_se_z": 1.0 / math.sqrt(2.0 * (b - 1)),
            "calibration_cov_z": 0.0,
        }
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
                **calibration,  # type: ignore[arg-type]
            )
        )
    return records
