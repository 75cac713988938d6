"""The device path (temperature and selection on torch tensors) without a GPU.

``engine="device"`` runs the GPU's sort engine on CPU tensors, and the meta
device (tensors without data) stands in for a GPU: a read of device values
fails there. :mod:`qr_core.testing` counts aten operations and host syncs.
Asserted: no host sync and no upload with deferred checks, the same operations
at B = 8 and 64 and for 1 or 3 groups of per-row settings, the same tokens as
the numpy engine, and the deferred errors equal the immediate ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from qr_core import (
    EDTTemperature,
    FixedTemperature,
    PowerLaw,
    QRCoreError,
    power_law_temperatures,
    select_tokens,
    shannon_entropy,
)
from qr_core.testing import count_ops

# One group (a fixed temperature with top-k and top-p) or three (adding EDT
# rows with other parameters, one without top-k, one without either).
_GROUPS: list[tuple[PowerLaw, int, float]] = [
    (FixedTemperature(0.7).power_law(), 50, 0.9),
    (EDTTemperature().power_law(), 0, 1.0),
    (EDTTemperature(1.0, 1.0, 0.2, 1.5).power_law(), 0, 0.9),
]


def _batch(
    rows: int, vocab: int, groups: int, seed: int, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """LLM-shaped logits and per-row parameters, row ``i`` in group ``i % groups``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=g) * 2
    head = torch.randint(0, vocab, (rows, 32), generator=g)
    x.scatter_add_(1, head, torch.rand(rows, 32, generator=g) * 6 + 6)
    pick = [_GROUPS[i % groups] for i in range(rows)]
    law = {
        f: torch.tensor([getattr(s[0], f) for s in pick], dtype=torch.float64)
        for f in ("base_temp", "exponent", "min_temp", "max_temp")
    }
    params = {
        "u": torch.rand(rows, generator=g, dtype=torch.float64),
        "top_k": torch.tensor([s[1] for s in pick], dtype=torch.int64),
        "top_p": torch.tensor([s[2] for s in pick], dtype=torch.float64),
        **law,
    }
    return {"logits": x.to(device), **{k: v.to(device) for k, v in params.items()}}


def _step(b: dict[str, torch.Tensor], defer: bool = True) -> Any:
    """Temperatures, then selection: what a sampling step asks of qr-core."""
    law = (b["base_temp"], b["exponent"], b["min_temp"], b["max_temp"])
    temp = power_law_temperatures(b["logits"], *law, defer_checks=defer)
    return select_tokens(
        b["logits"],
        b["u"],
        temperature=temp.temperature,
        top_k=b["top_k"],
        top_p=b["top_p"],
        engine="device",
        defer_checks=defer,
    )


# --- syncs and operation counts ----------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_deferred_checks_make_no_host_sync_and_no_upload(device: str) -> None:
    batch = _batch(8, 1000, 3, seed=1, device=device)
    counts, result = count_ops(lambda: _step(batch))
    assert counts.syncs == 0, counts.sync_sites
    assert counts.uploads == 0
    assert counts.ops > 0
    assert result.invalid is not None
    assert result.invalid.device.type == device


def test_immediate_checks_cost_one_sync_per_call() -> None:
    b = _batch(8, 1000, 3, seed=2)
    t = power_law_temperatures(b["logits"], 0.8, 0.5, 0.1, 2.0).temperature
    counts, _ = count_ops(
        lambda: select_tokens(
            b["logits"], b["u"], temperature=t, top_k=b["top_k"], top_p=b["top_p"], engine="device"
        )
    )
    assert counts.sync_sites == ("Tensor.__bool__",)


@pytest.mark.parametrize(("a", "b"), [((8, 1), (64, 1)), ((8, 3), (64, 3)), ((64, 1), (64, 3))])
def test_operation_count_depends_on_neither_batch_size_nor_groups(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    batch_a, batch_b = _batch(a[0], 1000, a[1], seed=3), _batch(b[0], 1000, b[1], seed=4)
    first, _ = count_ops(lambda: _step(batch_a))
    second, _ = count_ops(lambda: _step(batch_b))
    assert first.by_op == second.by_op
    assert first.ops == second.ops


# --- same results as the numpy path ------------------------------------------------


def test_device_path_picks_the_numpy_paths_tokens(reference: Any) -> None:
    """64 rows of V = 32,000 (seed 5) in three groups: torch temperatures and the
    sort engine on CPU tensors against numpy temperatures and the bucket engine.

    Tokens must agree except where u lies within 1e-5 of a CDF boundary: numpy's
    and torch's float32 ``exp`` differ by a few ulp, which moves an entropy by
    about 1e-8 relative and the CDF by less than 1e-6.
    """
    b = _batch(64, 32_000, 3, seed=5)
    got = _step(b)
    got.raise_if_invalid()
    host = {k: v.numpy() for k, v in b.items()}
    law = (host["base_temp"], host["exponent"], host["min_temp"], host["max_temp"])
    t_np = power_law_temperatures(host["logits"], *law).temperature
    want = select_tokens(
        host["logits"], host["u"], temperature=t_np, top_k=host["top_k"], top_p=host["top_p"]
    )
    checked = 0
    for i in range(64):
        ref = reference(host["logits"][i], t_np[i], host["top_k"][i], host["top_p"][i])
        if ref.pick(host["u"][i], 1e-5) is None:
            continue
        assert int(got.token_id[i]) == want.token_id[i] == ref.pick(host["u"][i], 1e-5)
        assert int(got.token_rank[i]) == want.token_rank[i]
        assert int(got.num_candidates[i]) == want.num_candidates[i]
        assert float(got.token_prob[i]) == pytest.approx(want.token_prob[i], rel=1e-5)
        checked += 1
    assert checked >= 60


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
def test_power_law_rows_equal_each_strategys_own_temperatures(namespace: str) -> None:
    b = _batch(12, 2000, 3, seed=6)
    convert = (lambda a: a.numpy()) if namespace == "numpy" else (lambda a: a)
    x = convert(b["logits"])
    law = [convert(b[f]) for f in ("base_temp", "exponent", "min_temp", "max_temp")]
    rows = power_law_temperatures(x, *law)
    strategies = [FixedTemperature(0.7), EDTTemperature(), EDTTemperature(1.0, 1.0, 0.2, 1.5)]
    for i in range(12):
        own = strategies[i % 3].compute_batch(x[i : i + 1])
        assert float(rows.temperature[i]) == float(own.temperature[0])  # bit for bit
        assert float(rows.shannon_entropy[i]) == float(own.shannon_entropy[0])


@pytest.mark.parametrize("strategy", [FixedTemperature(0.7), EDTTemperature()])
def test_strategies_make_no_host_sync_with_deferred_checks(strategy: Any) -> None:
    x = torch.randn(4, 300, generator=torch.Generator().manual_seed(10))
    x[3] = math.nan
    counts, got = count_ops(lambda: strategy.compute_batch(x, defer_checks=True))
    assert counts.syncs == 0
    assert counts.uploads == 0
    assert torch.isnan(got.shannon_entropy[3])
    immediate, _ = count_ops(lambda: strategy.compute_batch(x[:3]))
    assert immediate.sync_sites == ("Tensor.__bool__",)  # the row check of shannon_entropy


def test_fixed_temperature_needs_no_entropy() -> None:
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(7))
    got = power_law_temperatures(x, 0.7, 0.0, 0.7, 0.7, entropy=False)
    assert torch.isnan(got.shannon_entropy).all()
    assert got.temperature.tolist() == [0.7, 0.7, 0.7]
    # An exponent > 0 needs the entropy: its rows get NaN, which selection rejects.
    edt = power_law_temperatures(x, 0.8, 0.5, 0.1, 2.0, entropy=False).temperature
    with pytest.raises(QRCoreError, match="temperature must be finite"):
        select_tokens(x, 0.5, temperature=edt, top_k=0, top_p=1.0, engine="device")


# --- deferred errors ---------------------------------------------------------------

_BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("u", 1.0, r"u must lie in the open interval \(0, 1\), got 1.0 \(row 2\)"),
    ("temperature", math.inf, r"temperature must be finite, got inf \(row 2\)"),
    ("top_p", 0.0, r"top_p must lie in \(0, 1\], got 0.0 \(row 2\)"),
    ("logits", math.nan, "logits row 2 contains NaN"),
    ("logits", math.inf, r"logits row 2 contains \+inf"),
    ("logits", -math.inf, r"logits row 2 is all -inf \(no token can be sampled\)"),
]


def _with_bad_row(field: str, value: float) -> dict[str, Any]:
    g = torch.Generator().manual_seed(8)
    args: dict[str, Any] = {
        "logits": torch.randn(4, 300, generator=g),
        "u": torch.rand(4, generator=g, dtype=torch.float64),
        "temperature": torch.full((4,), 0.8, dtype=torch.float64),
        "top_k": torch.full((4,), 40, dtype=torch.int64),
        "top_p": torch.full((4,), 0.9, dtype=torch.float64),
    }
    if field == "logits":
        args["logits"][2] = -math.inf if value == -math.inf else 0.0
        args["logits"][2, 7] = value
    else:
        args[field][2] = value
    return args


@pytest.mark.parametrize(("field", "value", "message"), _BAD_INPUTS)
def test_deferred_errors_equal_the_immediate_ones(field: str, value: float, message: str) -> None:
    args = _with_bad_row(field, value)
    logits = args.pop("logits")
    for engine in ("auto", "device"):  # the bucket engine and the sort engine
        with pytest.raises(QRCoreError, match=message):
            select_tokens(logits, engine=engine, **args)
    counts, res = count_ops(
        lambda: select_tokens(logits, engine="device", defer_checks=True, **args)
    )
    assert counts.syncs == 0
    assert res.invalid.tolist()[2] != 0
    assert [v for i, v in enumerate(res.invalid.tolist()) if i != 2] == [0, 0, 0]
    assert math.isnan(float(res.token_prob[2]))
    assert 0 <= int(res.token_id[2]) < 300
    with pytest.raises(QRCoreError, match=message):
        res.raise_if_invalid()
    with pytest.raises(QRCoreError, match=message):
        res.raise_if_invalid(res.invalid.numpy())  # a copy the caller already made


def test_the_first_failing_check_is_reported_first() -> None:
    args = _with_bad_row("top_p", 2.0)
    args["logits"][1, 3] = math.nan
    args["u"][3] = 0.0
    res = select_tokens(engine="device", defer_checks=True, **args)
    with pytest.raises(QRCoreError, match=r"u must lie .* \(row 3\)"):
        res.raise_if_invalid()


def test_valid_input_and_host_memory_leave_nothing_to_raise() -> None:
    args = _with_bad_row("u", 0.5)
    res = select_tokens(engine="device", defer_checks=True, **args)
    assert res.invalid.tolist() == [0, 0, 0, 0]
    res.raise_if_invalid()
    host = select_tokens(defer_checks=True, **args)  # the bucket engine checks at once
    assert host.invalid is None
    host.raise_if_invalid()
    with pytest.raises(QRCoreError, match="u must lie"):
        select_tokens(defer_checks=True, **_with_bad_row("u", -0.5))


def test_deferred_temperature_checks_give_nan_rows() -> None:
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(9))
    x[1] = math.nan
    with pytest.raises(QRCoreError, match="logits row 1 contains NaN"):
        shannon_entropy(x)
    h = shannon_entropy(x, defer_checks=True)
    assert math.isnan(float(h[1]))
    assert not torch.isnan(h[[0, 2]]).any()
    x[1] = 0.0
    bad_min = torch.tensor([0.1, 3.0, 0.1], dtype=torch.float64)  # row 1: min > max
    with pytest.raises(
        QRCoreError, match=r"max_temp must be finite and >= min_temp, got 2.0 \(row 1\)"
    ):
        power_law_temperatures(x, 0.8, 0.5, bad_min, 2.0)
    with pytest.raises(QRCoreError, match=r"exponent must be finite and >= 0, got -1.0 \(row 0\)"):
        power_law_temperatures(x.numpy(), 0.8, np.array([-1.0, 0.5, 0.5]), 0.1, 2.0)
    counts, t = count_ops(
        lambda: power_law_temperatures(x, 0.8, 0.5, bad_min, 2.0, defer_checks=True)
    )
    assert counts.syncs == 0
    assert math.isnan(float(t.temperature[1]))
    assert not torch.isnan(t.temperature[[0, 2]]).any()


def test_engine_argument_is_checked() -> None:
    x = torch.zeros(2, 5, device="meta")
    with pytest.raises(QRCoreError, match="engine 'host' needs logits in host memory"):
        select_tokens(x, 0.5, temperature=1.0, top_k=0, top_p=1.0, engine="host")
    with pytest.raises(QRCoreError, match="engine must be one of 'auto', 'host', 'device'"):
        select_tokens(x, 0.5, temperature=1.0, top_k=0, top_p=1.0, engine="gpu")  # type: ignore[arg-type]


# --- the counter itself ------------------------------------------------------------


def test_the_counter_sees_every_kind_of_host_sync() -> None:
    x = torch.arange(6.0)

    def syncs() -> None:
        x[0].item()
        bool(x[1] > 0)
        x.tolist()
        x.numpy()
        np.asarray(x)
        np.from_dlpack(x)
        torch.nonzero(x)
        _ = x[x > 2]
        x.cpu()

    counts, _ = count_ops(syncs)
    assert counts.sync_sites == (
        "Tensor.item",
        "Tensor.__bool__",
        "Tensor.tolist",
        "Tensor.numpy",
        "Tensor.__array__",
        "Tensor.__dlpack__",
        "aten.nonzero.default",
        "aten.index.Tensor (boolean mask)",
        "Tensor.cpu",
    )
    assert counts.syncs == 9
    # Uploads: host data into a tensor, and a copy onto another device.
    up, _ = count_ops(lambda: (torch.asarray([1.0, 2.0]), torch.ones(2).to("meta")))
    assert (up.uploads, up.syncs) == (2, 0)
