"""Per-slot request state, shared by the V1 and V2 model-runner interfaces.

vLLM keeps requests in a persistent batch of slots. The V1 runner describes
changes with a ``BatchUpdate`` (removed, then added, then moved); the V2
runner calls ``add_request(slot, params)`` and recycles slots without an
explicit removal. Both feed the same :class:`BatchState`, which keeps one
:class:`~qr_vllm.step.Slot` (the step's view of a row) per qr-sampled request.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from qr_vllm._errors import QRParamsError
from qr_vllm._request_plan import ARM_KEY, RequestPlan, make_plan, resolve_request
from qr_vllm._settings import SamplingSettings
from qr_vllm.step import Slot

if TYPE_CHECKING:
    from vllm import SamplingParams

__all__ = ["ARM_KEY", "BatchState", "arm_for_params", "plan_for_params"]

logger = logging.getLogger(__name__)

# The two directions a move can have (vLLM's MoveDirectionality); compared
# by name so this module needs no vLLM import.
_SWAP = "SWAP"


class _Direction(Protocol):
    @property
    def name(self) -> str: ...


def arm_for_params(params: SamplingParams, arms: Collection[str]) -> str | None:
    """Return the arm a request names with ``qr_entropy_source``, or ``None``.

    Args:
        params: The request's sampling parameters.
        arms: The configured arm names (``QR_SOURCES``).

    Raises:
        QRParamsError: The value is not a string naming a configured arm; the
            message lists the configured names.
    """
    extra = params.extra_args or {}
    if ARM_KEY not in extra:
        return None
    value = extra[ARM_KEY]
    if isinstance(value, str) and value in arms:
        return value
    if not arms:
        raise QRParamsError(
            f"{ARM_KEY}={value!r} names an experiment arm, but none is configured "
            "(set QR_SOURCES on the server); allowed: leave qr_entropy_source unset"
        )
    raise QRParamsError(
        f"unknown {ARM_KEY}={value!r}; allowed: one of the configured arms (QR_SOURCES): "
        + ", ".join(repr(a) for a in sorted(arms))
    )


def plan_for_params(base: SamplingSettings, params: SamplingParams) -> RequestPlan | None:
    """Resolve a request's settings; ``None`` when it is not qr-sampled.

    A request is handed to vLLM's own sampling when it opts out with
    ``qr_enabled = false`` or asks for greedy decoding (``temperature = 0``).
    The arm key (``qr_entropy_source``) is left to :func:`arm_for_params`.

    Raises:
        QRParamsError: Invalid ``qr_*`` keys, or ``qr_enabled = true``
            together with ``temperature = 0``.
    """
    extra = params.extra_args or {}
    if ARM_KEY in extra:
        extra = {k: v for k, v in extra.items() if k != ARM_KEY}
    settings = resolve_request(base, extra)
    if params.temperature < _GREEDY_EPS:
        if "qr_enabled" in extra and settings.enabled:
            raise QRParamsError(
                "qr_enabled=true conflicts with temperature=0: temperature=0 asks for "
                "vLLM's greedy decoding, which uses no entropy; allowed: temperature > 0 "
                "with qr_enabled=true, or leave qr_enabled unset"
            )
        return None
    if not settings.enabled:
        return None
    return make_plan(settings)


# vLLM treats temperatures below this as greedy (vllm.sampling_params._SAMPLING_EPS).
_GREEDY_EPS = 1e-5


class BatchState:
    """Maps persistent-batch slots to the qr-sampled requests in them."""

    def __init__(self, base: SamplingSettings, arms: Collection[str] = ()) -> None:
        """Create an empty state.

        Args:
            base: Server-wide sampling defaults that requests override.
            arms: The configured experiment arms a request may name.
        """
        self._base = base
        self._arms = frozenset(arms)
        self._slots: dict[int, Slot] = {}

    @property
    def base(self) -> SamplingSettings:
        """The server-wide defaults."""
        return self._base

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, index: int) -> Slot | None:
        """Return the slot at ``index``, or ``None`` when it is not qr-sampled."""
        return self._slots.get(index)

    def slots(self) -> Mapping[int, Slot]:
        """Read-only view of the occupied slots."""
        return self._slots

    def add(self, index: int, params: SamplingParams, output_ids: list[int] | None) -> bool:
        """Place a request in ``index``, replacing any previous occupant.

        Returns:
            Whether the request is qr-sampled.
        """
        plan = plan_for_params(self._base, params)
        if plan is None:
            self._slots.pop(index, None)
            return False
        arm = arm_for_params(params, self._arms)
        self._slots[index] = Slot(plan=plan, output_ids=output_ids, arm=arm)
        return True

    def remove(self, index: int) -> None:
        """Free ``index``."""
        self._slots.pop(index, None)

    def move(self, src: int, dst: int, direction: _Direction) -> None:
        """Move ``src`` to ``dst``; a SWAP also moves ``dst`` to ``src``."""
        a = self._slots.pop(src, None)
        b = self._slots.pop(dst, None)
        if a is not None:
            self._slots[dst] = a
        if b is not None and direction.name == _SWAP:
            self._slots[src] = b

    def apply_update(
        self,
        removed: Iterable[int],
        added: Iterable[tuple[int, SamplingParams, list[int] | None, list[int]]],
        moved: Iterable[tuple[int, int, _Direction]],
    ) -> None:
        """Apply one V1 ``BatchUpdate`` in vLLM's order: removed, added, moved."""
        for index in removed:
            self.remove(index)
        for index, params, _prompt_ids, output_ids in added:
            self.add(index, params, output_ids)
        for src, dst, direction in moved:
            self.move(src, dst, direction)
