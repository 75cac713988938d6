"""The --max-buffered-bytes budget: bytes come back when gRPC lets go of the response."""

from __future__ import annotations

import asyncio

from qr_entropy_server._budget import BufferBudget


def test_a_response_counts_until_nothing_else_references_it() -> None:
    async def run() -> list[int]:
        budget = BufferBudget(limit=100)
        seen = []
        assert budget.take(60)
        held_by_grpc = bytes(60)  # stands for gRPC's reference
        budget.hand_over(held_by_grpc, 60)
        assert not budget.take(60)  # 60 + 60 > 100: swept, still held
        seen.append(budget.held)
        del held_by_grpc  # gRPC has sent it
        assert budget.take(60)  # the sweep before refusing finds it released
        seen.append(budget.held)
        budget.give(60)  # a request that failed gives its bytes back directly
        seen.append(budget.held)
        budget.close()
        return seen

    assert asyncio.run(run()) == [60, 60, 0]


def test_the_list_is_swept_as_responses_pile_up() -> None:
    async def run() -> tuple[int, int]:
        budget = BufferBudget(limit=1 << 30)
        for _ in range(1000):
            assert budget.take(1024)
            budget.hand_over(bytes(1024), 1024)  # released as soon as handed over
        held, pending = budget.held, len(budget._out)
        budget.close()
        return held, pending

    held, pending = asyncio.run(run())
    assert pending <= 65  # never more than the sweep threshold waits in the list
    assert held == pending * 1024
