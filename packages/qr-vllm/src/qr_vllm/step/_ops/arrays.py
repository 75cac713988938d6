"""Array helpers of the sampling step: zero-copy host views, scatter and gather, forcing."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["force", "gather", "host", "host_array", "native", "scatter", "tensor"]


def native(t: torch.Tensor) -> torch.Tensor | np.ndarray:
    """The array qr_core works on fastest: a zero-copy numpy view on the CPU, else ``t``.

    qr_core's numpy selection engine sorts only the few tokens near each
    threshold; on a GPU the tensor stays on its device (no host copy).
    """
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64, torch.int64):
        return t.numpy()
    return t


def host(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A numpy array of ``values`` (a zero-copy view of a CPU tensor)."""
    return values.numpy() if isinstance(values, torch.Tensor) else values


def tensor(values: object, device: torch.device) -> torch.Tensor:
    """``values`` as a tensor on ``device``; a numpy array is wrapped without a copy."""
    if isinstance(values, np.ndarray):
        return torch.from_numpy(values).to(device)
    return torch.as_tensor(values, device=device)


def scatter(out: torch.Tensor, positions: torch.Tensor | None, values: torch.Tensor) -> None:
    if positions is None:
        out.copy_(values)
    else:
        out.index_copy_(0, positions, values.to(out.dtype))


def gather(raw: np.ndarray, offsets: np.ndarray, positions: np.ndarray, count: int) -> np.ndarray:
    starts = offsets[positions]
    if len(positions) == len(offsets) - 1:
        # Every row of the step is in this group: the bytes are contiguous.
        return raw.reshape(len(positions), count)
    return np.stack([raw[s : s + count] for s in starts.tolist()])


def force(
    logits: torch.Tensor,
    rows_t: torch.Tensor | None,
    token_t: torch.Tensor,
    *,
    via_numpy: bool = True,
) -> None:
    """Selected token 0.0, every other token ``-inf``: no later stage can move it.

    CPU logits are written through a numpy view (unless ``via_numpy`` is
    False: the device path's own operations): one single-threaded fill, where
    torch's parallel fill costs thread wake-ups on a busy machine.
    """
    if via_numpy and logits.device.type == "cpu" and logits.dtype in _NUMPY_FLOATS:
        host = logits.numpy()
        tokens = token_t.numpy()
        if rows_t is None:
            host.fill(-np.inf)
            host[np.arange(host.shape[0]), tokens] = 0.0
        else:
            rows = rows_t.numpy()
            host[rows] = -np.inf
            host[rows, tokens] = 0.0
    elif rows_t is None:
        logits.fill_(float("-inf"))
        logits.scatter_(1, token_t.view(-1, 1), 0.0)
    else:
        logits.index_fill_(0, rows_t, float("-inf"))
        logits[rows_t, token_t] = 0.0


_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def host_array(values: object) -> np.ndarray:
    """A numpy array of host values (a zero-copy view of a CPU tensor)."""
    if isinstance(values, torch.Tensor):
        return values.numpy()
    return np.asarray(values)
