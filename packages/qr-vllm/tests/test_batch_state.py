"""Batch bookkeeping with vLLM's own BatchUpdate tuples: removed, then added, then moved."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from qr_vllm import SamplingSettings
from qr_vllm._batch import BatchState

SWAP = MoveDirectionality.SWAP
UNI = MoveDirectionality.UNIDIRECTIONAL


def _params(tag: str, **extra: object) -> SamplingParams:
    return SamplingParams(extra_args={"qr_request_tag": tag, **extra})


def _tags(state: BatchState) -> dict[int, str | None]:
    return {i: s.plan.request_tag for i, s in state.slots().items()}


def _update(state: BatchState, update: BatchUpdate) -> None:
    state.apply_update(update.removed, update.added, update.moved)


def test_add_remove_refill_swap_and_move() -> None:
    state = BatchState(SamplingSettings())
    outs: dict[str, list[int]] = {t: [] for t in "abcde"}
    _update(
        state,
        BatchUpdate(
            batch_size=3,
            removed=[],
            added=[(i, _params(t), [1, 2], outs[t]) for i, t in enumerate("abc")],
            moved=[],
        ),
    )
    assert _tags(state) == {0: "a", 1: "b", 2: "c"}

    # b finishes; d takes its slot in the same step.
    _update(
        state, BatchUpdate(3, removed=[1], added=[(1, _params("d"), None, outs["d"])], moved=[])
    )
    assert _tags(state) == {0: "a", 1: "d", 2: "c"}

    _update(state, BatchUpdate(3, removed=[], added=[], moved=[(0, 2, SWAP)]))
    assert _tags(state) == {0: "c", 1: "d", 2: "a"}

    # d finishes; the batch is condensed by a one-way move of the last slot.
    _update(state, BatchUpdate(2, removed=[1], added=[], moved=[(2, 1, UNI)]))
    assert _tags(state) == {0: "c", 1: "a"}

    # Settings travel with the request, not with the slot.
    _update(state, BatchUpdate(2, removed=[], added=[], moved=[(0, 1, SWAP)]))
    slot_a = state.get(0)
    assert slot_a is not None
    assert slot_a.plan.request_tag == "a"
    assert slot_a.output_ids is outs["a"]


def test_opted_out_request_replaces_a_qr_request() -> None:
    state = BatchState(SamplingSettings())
    _update(state, BatchUpdate(1, removed=[], added=[(0, _params("a"), None, [])], moved=[]))
    _update(
        state,
        BatchUpdate(
            1, removed=[0], added=[(0, _params("x", qr_enabled=False), None, [])], moved=[]
        ),
    )
    assert _tags(state) == {}


def test_swap_with_an_unsampled_slot_moves_one_way() -> None:
    state = BatchState(SamplingSettings())
    _update(
        state,
        BatchUpdate(
            2,
            removed=[],
            added=[(0, _params("a"), None, []), (1, SamplingParams(temperature=0.0), None, [])],
            moved=[],
        ),
    )
    assert _tags(state) == {0: "a"}
    _update(state, BatchUpdate(2, removed=[], added=[], moved=[(0, 1, SWAP)]))
    assert _tags(state) == {1: "a"}


def test_per_request_settings_and_token_index_follow_the_live_output_list() -> None:
    state = BatchState(SamplingSettings())
    out: list[int] = []
    _update(
        state,
        BatchUpdate(1, removed=[], added=[(0, _params("a", qr_top_k=1), [5], out)], moved=[]),
    )
    slot = state.get(0)
    assert slot is not None
    assert slot.plan.core.top_k == 1
    assert slot.token_index == 0
    out.extend([11, 12])
    assert slot.token_index == 2


@st.composite
def _updates(
    draw: st.DrawFn,
) -> list[tuple[list[int], list[tuple[int, bool]], list[tuple[int, int, bool]]]]:
    """Random steps: (removed, added as (index, qr_enabled), moved as (a, b, is_swap))."""
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        removed = sorted(draw(st.sets(st.integers(0, 7), max_size=3)), reverse=True)
        # vLLM never removes and adds the same index in one update (it reuses it instead).
        free = [i for i in range(8) if i not in removed]
        added_idx = draw(st.lists(st.sampled_from(free), max_size=3, unique=True))
        added = [(i, draw(st.booleans())) for i in added_idx]
        moved = draw(
            st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.booleans()), max_size=3)
        )
        steps.append((removed, added, [(a, b, s) for a, b, s in moved if a != b]))
    return steps


@settings(max_examples=200, deadline=None)
@given(_updates())
def test_matches_vllms_own_reference_bookkeeping(
    steps: list[tuple[list[int], list[tuple[int, bool]], list[tuple[int, int, bool]]]],
) -> None:
    """Compare with vLLM's ``process_dict_updates`` (what its sparse processors use)."""
    state = BatchState(SamplingSettings())
    reference: dict[int, str] = {}
    counter = 0
    for removed, added, moved in steps:
        entries: list[tuple[int, SamplingParams, list[int] | None, list[int]]] = []
        for index, enabled in added:
            counter += 1
            entries.append((index, _params(f"r{counter}", qr_enabled=enabled), None, []))
        update = BatchUpdate(
            batch_size=8,
            removed=removed,
            added=entries,
            moved=[(a, b, SWAP if s else UNI) for a, b, s in moved],
        )
        _update(state, update)

        def new_state(params: SamplingParams, _p: list[int] | None, _o: list[int]) -> str | None:
            extra = params.extra_args or {}
            return str(extra["qr_request_tag"]) if extra.get("qr_enabled") else None

        process_dict_updates(reference, update, new_state)
        assert _tags(state) == reference
