"""One sampling step over the whole batch: the adapter's hot path.

For the qr-sampled rows of a logits tensor, :class:`StepSampler` computes the
temperatures, makes ONE entropy fetch for all rows after the logits exist,
amplifies the bytes, selects the tokens with :func:`qr_core.select_tokens` on
the logits' own device, and forces each selected token (0.0, all others
``-inf``). Rows whose settings shape the amplifier or the temperature strategy
differently are processed in a few groups; top-k and top-p are per-row arrays.

Entropy bytes are laid out row by row in ascending row order: row ``i`` of the
step receives bytes ``[offset_i, offset_i + sample_count_i)`` of the fetch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qr_core import (
    SamplingConfig,
    SignalAmplifier,
    TemperatureStrategy,
    build_amplifier,
    build_temperature_strategy,
    select_tokens,
)
from qr_core.records import TokenSamplingRecord
from qr_entropy import EntropyFetch
from qr_vllm._batch import Slot
from qr_vllm._tp import FAILED, TokenBroadcast

__all__ = ["StepSampler", "StepTimings"]

logger = logging.getLogger(__name__)

Fetch = Callable[[int], EntropyFetch]


@dataclass(frozen=True)
class StepTimings:
    """Cumulative time spent in each stage of :meth:`StepSampler.sample`.

    Attributes:
        steps: Steps that had at least one qr-sampled row.
        rows: qr-sampled rows over all steps.
        temperature_s: Temperature strategies.
        fetch_s: The entropy fetch (generating and transporting the bytes).
        amplify_s: Signal amplification.
        select_s: Token selection.
        force_s: Writing 0.0 / ``-inf`` into the logits.
        record_s: Building and writing records.
        total_s: Whole steps, including the above.
    """

    steps: int
    rows: int
    temperature_s: float
    fetch_s: float
    amplify_s: float
    select_s: float
    force_s: float
    record_s: float
    total_s: float

    @property
    def adapter_s(self) -> float:
        """The adapter's own work: everything except the entropy fetch."""
        return self.total_s - self.fetch_s


@dataclass(frozen=True)
class _Group:
    key: tuple[object, ...]  # RequestPlan.group_key: what shapes amplifier and strategy
    config: SamplingConfig
    positions: np.ndarray  # indices into the step's rows


class StepSampler:
    """Samples and forces the qr-sampled rows of one logits tensor per call."""

    def __init__(
        self,
        fetch: Fetch,
        emit: Callable[[Sequence[TokenSamplingRecord], Sequence[Slot]], None],
        *,
        wants_records: Callable[[Sequence[Slot]], bool] | None = None,
        record_raw_bytes: bool = False,
        broadcast: TokenBroadcast | None = None,
    ) -> None:
        """Create a sampler.

        Args:
            fetch: The entropy source's ``fetch(n)``.
            emit: Receives the step's records with their slots.
            wants_records: Whether any sink would receive the records of a step
                with these slots; when it says no, the step builds no records,
                does not call ``emit`` and skips the entropy of strategies that
                do not use it. ``None``: always build them.
            record_raw_bytes: Put each row's raw bytes (hex) into its record.
            broadcast: Tensor-parallel coordination; ``None`` for one rank.
        """
        self._fetch = fetch
        self._emit = emit
        self._wants = wants_records
        self._raw = record_raw_bytes
        self._broadcast = broadcast
        self._components: dict[tuple[object, ...], tuple[SignalAmplifier, TemperatureStrategy]] = {}
        self._acc = np.zeros(7, dtype=np.float64)
        self._steps = 0
        self._rows = 0

    def timings(self) -> StepTimings:
        """Return the cumulative stage timings since creation or :meth:`reset_timings`."""
        a = self._acc
        return StepTimings(
            steps=self._steps,
            rows=self._rows,
            temperature_s=float(a[0]),
            fetch_s=float(a[1]),
            amplify_s=float(a[2]),
            select_s=float(a[3]),
            force_s=float(a[4]),
            record_s=float(a[5]),
            total_s=float(a[6]),
        )

    def reset_timings(self) -> None:
        """Zero the cumulative timings."""
        self._acc[:] = 0.0
        self._steps = 0
        self._rows = 0

    def sample(self, logits: torch.Tensor, rows: Sequence[int], slots: Sequence[Slot]) -> None:
        """Select and force one token for each of ``rows``, in place.

        Args:
            logits: ``(num_rows, vocab)`` float logits of the step.
            rows: The qr-sampled rows, ascending.
            slots: The slot of each row.
        """
        if not rows:
            return
        broadcast = self._broadcast
        if broadcast is not None and not broadcast.is_source:
            self._follow(logits, rows)
            return
        t0 = time.perf_counter()
        device = logits.device
        # Asked once, before anything is computed: a step nobody records needs
        # no records, nor the entropy of a strategy that does not use it.
        wanted = self._wants is None or self._wants(slots)
        rows_t = None if len(rows) == logits.shape[0] else torch.as_tensor(rows, device=device)
        try:
            sub = logits if rows_t is None else logits.index_select(0, rows_t)
            step = self._select(sub, slots, wanted)
        except BaseException:
            if broadcast is not None:
                # Followers are waiting for this step's ids; release them with a failure.
                failed = torch.full((len(rows),), FAILED, dtype=torch.int64, device=device)
                broadcast.send(failed)
            raise
        t4 = time.perf_counter()
        if broadcast is not None:
            broadcast.send(step.token)
        _force(logits, rows_t, step.token)
        t5 = time.perf_counter()
        self._acc[4] += t5 - t4

        if wanted:
            records = step.records(slots, self._raw)
            for slot in slots:
                slot.sampled += 1
            self._emit(records, slots)
        else:
            for slot in slots:
                slot.sampled += 1
        t6 = time.perf_counter()
        self._acc[5] += t6 - t5
        self._acc[6] += t6 - t0
        self._steps += 1
        self._rows += len(rows)

    def _select(self, sub: torch.Tensor, slots: Sequence[Slot], entropy: bool) -> _Selected:
        """Temperatures, the fetch, amplification and selection for the rows of ``sub``.

        ``entropy``: whether the records need the Shannon entropy (strategies
        that use it compute it anyway).

        On the CPU every per-row array stays in numpy (qr_core works on a
        zero-copy view of the logits) and becomes a tensor only where one is
        needed, without a copy; on a GPU they live on its device.
        """
        t0 = time.perf_counter()
        acc = self._acc
        n = len(slots)
        device = sub.device
        groups = self._groups(slots)
        if len(groups) == 1:
            _, strategy = self._component(groups[0])
            result = strategy.compute_batch(_native(sub), entropy=entropy)
            temperature: torch.Tensor | np.ndarray = result.temperature
            shannon: torch.Tensor | np.ndarray = result.shannon_entropy
        else:
            temperature = torch.empty(n, dtype=torch.float64, device=device)
            shannon = torch.empty(n, dtype=torch.float64, device=device)
            for group in groups:
                _, strategy = self._component(group)
                pos = torch.as_tensor(group.positions, device=device)
                block = _native(sub.index_select(0, pos))
                result = strategy.compute_batch(block, entropy=entropy)
                _scatter(temperature, pos, torch.as_tensor(result.temperature, device=device))
                _scatter(shannon, pos, torch.as_tensor(result.shannon_entropy, device=device))
        if device.type == "cuda":
            # The logits exist only once the kernels producing them have run.
            torch.cuda.synchronize(device)
        logits_ready_ns = time.time_ns()
        t1 = time.perf_counter()
        acc[0] += t1 - t0

        counts = np.fromiter((s.plan.core.sample_count for s in slots), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        fetched = self._fetch(int(offsets[-1]))
        t2 = time.perf_counter()
        acc[1] += t2 - t1

        raw = np.frombuffer(fetched.data, dtype=np.uint8)
        names: list[tuple[str, str]] = [("", "")] * n
        if len(groups) == 1:
            group = groups[0]
            amplifier, strategy = self._component(group)
            amp = amplifier.amplify_batch(raw.reshape(n, group.config.sample_count))
            u, z, mean = amp.u, amp.z_score, amp.sample_mean
            names = [(str(amplifier.name), str(strategy.name))] * n
        else:
            u = np.empty(n, dtype=np.float64)
            z = np.empty(n, dtype=np.float64)
            mean = np.empty(n, dtype=np.float64)
            for group in groups:
                amplifier, strategy = self._component(group)
                block_bytes = _gather(raw, offsets, group.positions, group.config.sample_count)
                amp = amplifier.amplify_batch(block_bytes)
                u[group.positions] = amp.u
                z[group.positions] = amp.z_score
                mean[group.positions] = amp.sample_mean
                pair = (str(amplifier.name), str(strategy.name))
                for p in group.positions.tolist():
                    names[p] = pair
        t3 = time.perf_counter()
        acc[2] += t3 - t2

        top_k = np.fromiter((s.plan.core.top_k for s in slots), dtype=np.int64, count=n)
        top_p = np.fromiter((s.plan.core.top_p for s in slots), dtype=np.float64, count=n)
        logits = _native(sub)
        if isinstance(logits, np.ndarray):
            sel = select_tokens(logits, u, temperature=_host(temperature), top_k=top_k, top_p=top_p)
        else:
            sel = select_tokens(
                logits,
                torch.from_numpy(u).to(device),
                temperature=torch.as_tensor(temperature, device=device),
                top_k=torch.from_numpy(top_k).to(device),
                top_p=torch.from_numpy(top_p).to(device),
            )
        token = _tensor(sel.token_id, device).to(torch.int64)
        acc[3] += time.perf_counter() - t3
        return _Selected(
            token=token,
            fetched=fetched,
            raw=raw,
            offsets=offsets,
            logits_ready_ns=logits_ready_ns,
            names=names,
            mean=mean,
            z=z,
            u=u,
            temperature=temperature,
            shannon=shannon,
            rank=sel.token_rank,
            prob=sel.token_prob,
            candidates=sel.num_candidates,
        )

    def _follow(self, logits: torch.Tensor, rows: Sequence[int]) -> None:
        """Non-source rank: force exactly the tokens the source rank chose."""
        assert self._broadcast is not None
        device = logits.device
        token_t = torch.empty(len(rows), dtype=torch.int64, device=device)
        self._broadcast.receive(token_t)
        rows_t = None if len(rows) == logits.shape[0] else torch.as_tensor(rows, device=device)
        _force(logits, rows_t, token_t)

    def _groups(self, slots: Sequence[Slot]) -> list[_Group]:
        first = slots[0].plan.group_key
        if all(s.plan.group_key == first for s in slots):
            return [_Group(first, slots[0].plan.core, np.arange(len(slots)))]
        by_key: dict[tuple[object, ...], list[int]] = {}
        configs: dict[tuple[object, ...], SamplingConfig] = {}
        for i, s in enumerate(slots):
            by_key.setdefault(s.plan.group_key, []).append(i)
            configs.setdefault(s.plan.group_key, s.plan.core)
        return [_Group(k, configs[k], np.asarray(v)) for k, v in by_key.items()]

    def _component(self, group: _Group) -> tuple[SignalAmplifier, TemperatureStrategy]:
        pair = self._components.get(group.key)
        if pair is None:
            pair = (build_amplifier(group.config), build_temperature_strategy(group.config))
            self._components[group.key] = pair
        return pair


def _native(t: torch.Tensor) -> torch.Tensor | np.ndarray:
    """The array qr_core works on fastest: a zero-copy numpy view on the CPU, else ``t``.

    qr_core's numpy selection engine sorts only the few tokens near each
    threshold; on a GPU the tensor stays on its device (no host copy).
    """
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64, torch.int64):
        return t.numpy()
    return t


def _host(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A numpy array of ``values`` (a zero-copy view of a CPU tensor)."""
    return values.numpy() if isinstance(values, torch.Tensor) else values


def _tensor(values: object, device: torch.device) -> torch.Tensor:
    """``values`` as a tensor on ``device``; a numpy array is wrapped without a copy."""
    if isinstance(values, np.ndarray):
        return torch.from_numpy(values).to(device)
    return torch.as_tensor(values, device=device)


def _scatter(out: torch.Tensor, positions: torch.Tensor | None, values: torch.Tensor) -> None:
    if positions is None:
        out.copy_(values)
    else:
        out.index_copy_(0, positions, values.to(out.dtype))


def _gather(raw: np.ndarray, offsets: np.ndarray, positions: np.ndarray, count: int) -> np.ndarray:
    starts = offsets[positions]
    if len(positions) == len(offsets) - 1:
        # Every row of the step is in this group: the bytes are contiguous.
        return raw.reshape(len(positions), count)
    return np.stack([raw[s : s + count] for s in starts.tolist()])


def _force(logits: torch.Tensor, rows_t: torch.Tensor | None, token_t: torch.Tensor) -> None:
    """Selected token 0.0, every other token ``-inf``: no later stage can move it.

    CPU logits are written through a numpy view: one single-threaded fill,
    where torch's parallel fill costs thread wake-ups on a busy machine.
    """
    if logits.device.type == "cpu" and logits.dtype in _NUMPY_FLOATS:
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


def _host_list(values: object) -> list[float]:
    if isinstance(values, torch.Tensor):
        return list(values.tolist())
    return list(np.asarray(values).tolist())


@dataclass(frozen=True)
class _Selected:
    """What one step selected, with everything its records need."""

    token: torch.Tensor
    fetched: EntropyFetch
    raw: np.ndarray
    offsets: np.ndarray
    logits_ready_ns: int
    names: Sequence[tuple[str, str]]
    mean: np.ndarray
    z: np.ndarray
    u: np.ndarray
    temperature: object
    shannon: object
    rank: object
    prob: object
    candidates: object

    def records(self, slots: Sequence[Slot], keep_raw: bool) -> list[TokenSamplingRecord]:
        """Build one record per row (one small device-to-host copy per field)."""
        fetched = self.fetched
        bounds = self.offsets.tolist()
        temperature = _host_list(self.temperature)
        shannon = _host_list(self.shannon)
        token = self.token.tolist()
        rank = _host_list(self.rank)
        prob = _host_list(self.prob)
        candidates = _host_list(self.candidates)
        records: list[TokenSamplingRecord] = []
        for i, slot in enumerate(slots):
            chunk = self.raw[bounds[i] : bounds[i + 1]]
            plan = slot.plan
            records.append(
                TokenSamplingRecord(
                    request_id=plan.request_id,
                    request_tag=plan.request_tag,
                    token_index=slot.token_index,
                    logits_ready_ns=self.logits_ready_ns,
                    entropy_requested_ns=fetched.requested_ns,
                    entropy_generated_ns=fetched.generated_ns,
                    entropy_received_ns=fetched.received_ns,
                    entropy_source=fetched.source,
                    device_id=fetched.device_id,
                    sequence_id=fetched.sequence_id,
                    fallback=fetched.fallback,
                    fallback_reason=fetched.fallback_reason,
                    sample_count=int(bounds[i + 1] - bounds[i]),
                    raw_sha256=hashlib.sha256(chunk.data).hexdigest(),
                    raw_bytes_hex=chunk.tobytes().hex() if keep_raw else None,
                    amplifier=self.names[i][0],
                    sample_mean=float(self.mean[i]),
                    z_score=float(self.z[i]),
                    u=float(self.u[i]),
                    temperature_strategy=self.names[i][1],
                    temperature=float(temperature[i]),
                    shannon_entropy=float(shannon[i]),
                    token_id=int(token[i]),
                    token_rank=int(rank[i]),
                    token_prob=float(prob[i]),
                    num_candidates=int(candidates[i]),
                    top_k=plan.core.top_k,
                    top_p=plan.core.top_p,
                    config_hash=plan.config_hash,
                )
            )
        return records
