"""Signal amplification of one step, on the host: each row's bytes to its u.

One call of the group's amplifier for all rows when the step has one group (the
bytes are one contiguous ``(B, N)`` block); otherwise one call per group on its
rows' bytes, scattered back into row order.
"""

from __future__ import annotations

import numpy as np

from qr_vllm.step._metadata import StepMetadata
from qr_vllm.step._ops.arrays import gather

__all__ = ["amplify"]


def amplify(
    raw: np.ndarray, meta: StepMetadata
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """u, z-score and byte mean of each row (the means only for a recorded step).

    Args:
        raw: The step's bytes, row after row (``meta.offsets``).
        meta: The step's rows and groups.
    """
    n = meta.size
    groups = meta.groups
    recorded = meta.recorded
    if len(groups) == 1:
        group = groups[0]
        amp = group.amplifier.amplify_batch(
            raw.reshape(n, group.config.sample_count), sample_mean=recorded
        )
        return amp.u, amp.z_score, amp.sample_mean
    u = np.empty(n, dtype=np.float64)
    z = np.empty(n, dtype=np.float64)
    mean = np.empty(n, dtype=np.float64) if recorded else None
    for group in groups:
        block = gather(raw, meta.offsets, group.positions, group.config.sample_count)
        amp = group.amplifier.amplify_batch(block, sample_mean=recorded)
        u[group.positions] = amp.u
        z[group.positions] = amp.z_score
        if mean is not None and amp.sample_mean is not None:
            mean[group.positions] = amp.sample_mean
    return u, z, mean
