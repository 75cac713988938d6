"""Tensor parallelism: one entropy fetch per step, the same token on every rank.

With tensor parallelism every rank runs the sampler on the same (gathered)
logits. If each rank fetched its own entropy, ranks would force different
tokens and the model's shards would diverge, and the records would show
several fetches per token. Instead the first rank of the tensor-parallel
group (the source) fetches, amplifies, selects and writes the records, then
broadcasts the selected token ids; every other rank forces exactly those ids
and fetches nothing.

If the source fails after the followers started waiting, it broadcasts a row
of ``-1`` so that the followers fail too instead of hanging.
"""

from __future__ import annotations

from typing import Any

import torch

from qr_vllm._errors import QRVllmError
from qr_vllm.step import FAILED, TokenBroadcast

__all__ = ["DistributedTokenBroadcast", "tensor_parallel_broadcast"]


class DistributedTokenBroadcast:
    """A :class:`~qr_vllm.step.TokenBroadcast` over a ``torch.distributed`` process group."""

    def __init__(self, group: Any, source_global_rank: int, is_source: bool) -> None:
        """Create the broadcast.

        Args:
            group: The process group (``None`` for the default group).
            source_global_rank: Global rank of the source.
            is_source: Whether this process is the source.
        """
        self._group = group
        self._src = source_global_rank
        self._is_source = is_source

    @property
    def is_source(self) -> bool:
        """Whether this rank is the source."""
        return self._is_source

    def send(self, tokens: torch.Tensor) -> None:
        """Broadcast ``tokens`` from the source."""
        torch.distributed.broadcast(tokens.contiguous(), src=self._src, group=self._group)

    def receive(self, out: torch.Tensor) -> None:
        """Receive the source's tokens into ``out``."""
        torch.distributed.broadcast(out, src=self._src, group=self._group)
        if bool((out == FAILED).any()):
            raise QRVllmError(
                "the tensor-parallel source rank failed to sample this step; "
                "see its log for the cause"
            )


def tensor_parallel_broadcast(vllm_config: Any) -> TokenBroadcast | None:
    """Return the broadcast for vLLM's tensor-parallel group, or ``None`` for one rank."""
    if vllm_config.parallel_config.tensor_parallel_size <= 1:
        return None
    from vllm.distributed.parallel_state import get_tp_group

    group = get_tp_group()
    return DistributedTokenBroadcast(
        group.device_group, source_global_rank=group.ranks[0], is_source=group.rank_in_group == 0
    )
