"""Token selection: exact rules, errors, and agreement of the two engines."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qr_core import QRCoreError, select_token, select_tokens
from qr_core._select_weights import flat_true

INF = math.inf


def _logits(*values: float, dtype: Any = np.float32) -> np.ndarray:
    return np.array(values, dtype=dtype)


# --- rules ----------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_greedy_takes_the_lowest_id_among_the_maxima(temperature: float) -> None:
    res = select_token(_logits(1, 5, 2, 5, 5), 0.99, temperature=temperature, top_k=2, top_p=0.5)
    assert (res.token_id, res.token_rank, res.token_prob, res.num_candidates) == (1, 0, 1.0, 1)


def test_u_near_zero_picks_the_most_probable_token() -> None:
    x = _logits(0.1, 3.0, 2.9, -1.0)
    for k, p in [(0, 1.0), (2, 1.0), (0, 0.5), (3, 0.99)]:
        assert select_token(x, 1e-12, temperature=1.3, top_k=k, top_p=p).token_id == 1


def test_ties_are_ordered_by_token_id() -> None:
    x = np.zeros(4, dtype=np.float32)
    got = [select_token(x, (j + 0.5) / 4, temperature=1.0, top_k=0, top_p=1.0) for j in range(4)]
    assert [r.token_id for r in got] == [0, 1, 2, 3]
    assert [r.token_rank for r in got] == [0, 1, 2, 3]
    assert all(r.token_prob == 0.25 and r.num_candidates == 4 for r in got)
    # top-k cuts a tie by id: ids 0 and 1 survive.
    assert {
        select_token(x, u, temperature=1.0, top_k=2, top_p=1.0).token_id for u in (0.2, 0.7)
    } == {0, 1}


def test_equal_float32_weights_are_ordered_by_id_not_by_logit(sort_engine: Any) -> None:
    """Logits -1e-8 and 0 are distinct float32 values but both have weight 1.0f:
    they tie, so id 0 (the lower logit) comes first. Greedy still takes the max."""
    x = _logits(-1e-8, 0.0)
    assert x[0] != x[1]
    for u, want in [(0.25, 0), (0.75, 1)]:
        res = select_token(x, u, temperature=1.0, top_k=0, top_p=1.0)
        assert (res.token_id, res.token_rank, res.token_prob) == (want, want, 0.5)
        torch_res = sort_engine(torch.from_numpy(x[None, :]), u, 1.0, 0, 1.0)
        assert int(torch_res[0][0]) == want
    assert select_token(x, 0.9, temperature=1.0, top_k=1, top_p=1.0).token_id == 0
    assert select_token(x, 0.9, temperature=0.0, top_k=0, top_p=1.0).token_id == 1


def test_float32_weights_stay_within_the_documented_error_of_the_real_softmax() -> None:
    """README: a token's probability from float32 weights is within
    (|s| + 1) * 4 * 2**-24 relative of the float64 softmax (s the scaled logit);
    here 2,000 rows of one V = 2,000 row (seed 48), u spread over (0, 1), T = 0.7."""
    rng = np.random.default_rng(48)
    row = rng.normal(0, 2, size=2_000).astype(np.float32)
    row[rng.choice(2_000, 8, replace=False)] += 9
    x = np.broadcast_to(row, (2_000, row.size))
    u = (np.arange(2_000) + 0.5) / 2_000
    res = select_tokens(x, u, temperature=0.7, top_k=0, top_p=1.0)
    s = (row.astype(np.float64) - row.max()) / 0.7
    exact = np.exp(s) / np.exp(s).sum()
    chosen = res.token_id
    bound = (np.abs(s[chosen]) + 1) * 4 * 2.0**-24
    assert np.all(np.abs(res.token_prob / exact[chosen] - 1) <= bound)
    assert np.unique(chosen).size > 20


def test_top_k_and_top_p_cut_the_prefix() -> None:
    # Probabilities at T = 1: 0.5, 0.25, 0.125, 0.0625, 0.0625 for ids 3, 0, 4, 1, 2.
    x = np.log(np.array([0.25, 0.0625, 0.0625, 0.5, 0.125]))
    res = select_token(x, 0.99, temperature=1.0, top_k=2, top_p=1.0)
    assert (res.token_id, res.token_rank, res.num_candidates) == (0, 1, 2)
    assert res.token_prob == pytest.approx(0.25 / 0.75, rel=1e-14)
    # Mass 0.5 < 0.6 <= 0.75: two candidates; 0.75 < 0.8 <= 0.875: three.
    assert select_token(x, 0.5, temperature=1.0, top_k=0, top_p=0.6).num_candidates == 2
    res = select_token(x, 0.999, temperature=1.0, top_k=0, top_p=0.8)
    assert (res.token_id, res.token_rank, res.num_candidates) == (4, 2, 3)
    assert res.token_prob == pytest.approx(0.125 / 0.875, rel=1e-14)
    for k in (0, -3, 5, 99):  # disabled top-k keeps all five
        assert select_token(x, 0.5, temperature=1.0, top_k=k, top_p=1.0).num_candidates == 5


def test_temperature_divides_the_logits() -> None:
    x = _logits(0.0, 1.0, dtype=np.float64)
    # T = 2: p(id 1) = 1 / (1 + e^-0.5) = 0.6225; u = 0.62 still picks id 1, u = 0.63 id 0.
    assert select_token(x, 0.62, temperature=2.0, top_k=0, top_p=1.0).token_id == 1
    res = select_token(x, 0.63, temperature=2.0, top_k=0, top_p=1.0)
    assert res.token_id == 0
    assert res.token_prob == pytest.approx(1 / (1 + math.exp(0.5)), rel=1e-14)


def test_minus_inf_tokens_are_never_chosen() -> None:
    x = _logits(0.0, -INF, -INF, 1.0, -INF)
    for u in (1e-12, 0.5, 1 - 1e-15):
        for k, p in [(0, 1.0), (4, 1.0), (0, 0.999999)]:
            assert select_token(x, u, temperature=0.9, top_k=k, top_p=p).token_id in (0, 3)
    assert select_token(x, 0.5, temperature=0.9, top_k=4, top_p=1.0).num_candidates == 4


def test_float32_mass_shortfall_is_not_dumped_on_the_last_token() -> None:
    """float32 probabilities summing to 1 - 1e-5; the least likely token has 1e-9.

    A float32 CDF stops near 0.99999 and hands u in (0.99999, 1) to the last
    token. The float64 CDF normalised by its own total does not.
    """
    probs = np.array([0.6, 0.3, 0.09999, 1e-9], dtype=np.float32)
    assert abs(float(probs.sum(dtype=np.float32)) - (1 - 1e-5)) < 2e-7
    x = np.log(probs)
    exact = probs.astype(np.float64) / probs.astype(np.float64).sum()
    boundary = 1 - exact[3]
    for u in np.linspace(0.99999, boundary - 1e-9, 50):
        assert select_token(x, float(u), temperature=1.0, top_k=0, top_p=1.0).token_id == 2
    assert select_token(x, boundary + 1e-12, temperature=1.0, top_k=0, top_p=1.0).token_id == 3


def test_batch_rows_with_their_own_parameters_equal_single_rows() -> None:
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((6, 400)) * 2).astype(np.float32)
    u = rng.uniform(size=6)
    t = np.array([0.0, 0.5, 1.0, 1.5, 0.7, 2.0])
    k = np.array([0, 10, -1, 400, 3, 1])
    p = np.array([1.0, 0.9, 0.5, 1.0, 0.95, 0.3])
    batch = select_tokens(x, u, temperature=t, top_k=k, top_p=p)
    for i in range(6):
        one = select_token(
            x[i], float(u[i]), temperature=float(t[i]), top_k=int(k[i]), top_p=float(p[i])
        )
        got = (batch.token_id[i], batch.token_rank[i], batch.token_prob[i], batch.num_candidates[i])
        assert got == (one.token_id, one.token_rank, one.token_prob, one.num_candidates)
    assert batch.token_id.dtype == np.int64
    assert batch.token_prob.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_floating_dtypes_are_accepted(dtype: Any) -> None:
    x = _logits(0.5, 2.0, 1.0, dtype=dtype)
    assert select_token(x, 0.01, temperature=0.8, top_k=0, top_p=0.9).token_id == 1


def test_empty_batch() -> None:
    res = select_tokens(
        np.zeros((0, 5), np.float32), np.zeros(0), temperature=1.0, top_k=0, top_p=1.0
    )
    assert res.token_id.shape == (0,)


# --- errors ---------------------------------------------------------------------

_X = np.zeros((2, 3), dtype=np.float32)


def _call(
    logits: Any = _X, u: Any = 0.5, temperature: Any = 1.0, top_k: Any = 0, top_p: Any = 1.0
) -> None:
    select_tokens(logits, u, temperature=temperature, top_k=top_k, top_p=top_p)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (
            {"logits": np.array([[0, 1, 2], [0, np.nan, 1]], np.float32)},
            "logits row 1 contains NaN",
        ),
        (
            {"logits": np.array([[0, 1, 2], [-INF, -INF, -INF]], np.float32)},
            "logits row 1 is all -inf",
        ),
        ({"logits": np.array([[INF, 1, 2], [0, 0, 0]], np.float32)}, "logits row 0 contains +inf"),
        ({"logits": np.zeros((2, 3), np.int32)}, "logits must have a real floating dtype"),
        ({"logits": np.zeros(3, np.float32)}, "logits must have shape (B, V)"),
        ({"logits": np.zeros((2, 0), np.float32)}, "logits must have at least one column"),
        ({"logits": [[0.0, 1.0]]}, "logits must be a numpy array or torch tensor"),
        ({"u": 0.0}, "u must lie in the open interval (0, 1)"),
        ({"u": np.array([0.5, 1.0])}, "u must lie in the open interval (0, 1), got 1.0 (row 1)"),
        ({"u": math.nan}, "u must lie in the open interval (0, 1)"),
        ({"u": np.array([0.5, 0.5, 0.5])}, "u must be a scalar or have shape (2,)"),
        ({"temperature": math.nan}, "temperature must be finite"),
        ({"temperature": INF}, "temperature must be finite"),
        ({"top_k": 2.5}, "top_k must be an int"),
        ({"top_k": np.array([1.0, 2.0])}, "top_k must be an int or an integer array"),
        ({"top_k": True}, "top_k must be an int, got bool"),
        ({"top_p": 0.0}, "top_p must lie in (0, 1]"),
        ({"top_p": 1.5}, "top_p must lie in (0, 1]"),
        ({"top_p": math.nan}, "top_p must lie in (0, 1]"),
        ({"top_p": "0.5"}, "top_p must be a real number"),
    ],
)
def test_errors_name_the_argument(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(QRCoreError) as info:
        _call(**kwargs)
    assert needle in str(info.value)


def test_select_token_wants_one_row() -> None:
    with pytest.raises(QRCoreError, match=r"logits must have shape \(V,\)"):
        select_token(_X, 0.5, temperature=1.0, top_k=0, top_p=1.0)


# --- engines agree with each other and with the plain reference --------------------

_VALUES = st.sampled_from([-INF, -3.0, -1.0, 0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 7.5])


@st.composite
def _batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows = draw(st.integers(1, 5))
    vocab = draw(st.integers(1, 40))
    grid = draw(st.booleans())  # grid values make many exact ties
    elems = _VALUES if grid else st.floats(-30, 30, width=32)
    x = np.array(
        draw(
            st.lists(st.lists(elems, min_size=vocab, max_size=vocab), min_size=rows, max_size=rows)
        )
    )
    x = x.astype(np.float32)
    x[:, draw(st.integers(0, vocab - 1))] = 1.0  # no row is all -inf
    u = np.array(draw(st.lists(st.floats(1e-12, 1 - 1e-12), min_size=rows, max_size=rows)))
    t = np.array(
        draw(st.lists(st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5]), min_size=rows, max_size=rows))
    )
    k = np.array(
        draw(
            st.lists(st.sampled_from([-1, 0, 1, 3, vocab, vocab + 5]), min_size=rows, max_size=rows)
        )
    )
    p = np.array(
        draw(st.lists(st.sampled_from([0.05, 0.5, 0.9, 0.999, 1.0]), min_size=rows, max_size=rows))
    )
    return x, u, t, k, p


# The fixtures only hand out stateless helpers, so sharing them across examples is safe.
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=_batches())
def test_bucket_engine_equals_sort_engine_and_reference(
    batch: tuple[np.ndarray, ...], reference: Any, sort_engine: Any
) -> None:
    x, u, t, k, p = batch
    got = select_tokens(x, u, temperature=t, top_k=k, top_p=p)
    ids, ranks, probs, cands = sort_engine(x, u, t, k, p)
    for i in range(x.shape[0]):
        ref = reference(x[i], t[i], k[i], p[i])
        assert got.num_candidates[i] == cands[i] == ref.candidates.size
        want = ref.pick(u[i])
        if want is None:
            continue  # u within 1e-9 of a CDF boundary: either neighbour is right
        assert got.token_id[i] == ids[i] == want
        assert got.token_rank[i] == ranks[i] == list(ref.order).index(want)
        j = list(ref.candidates).index(want)
        assert got.token_prob[i] == pytest.approx(ref.probs[j], rel=1e-12)
        assert probs[i] == pytest.approx(ref.probs[j], rel=1e-12)


# float32 exp of numpy and of torch differ by a few ulp (2**-23 = 1.2e-7 relative)
# for about one input in nine, so across libraries probabilities agree to 1e-6.
_CROSS_LIBRARY = 1e-6


def _agree(
    x: np.ndarray,
    u: np.ndarray,
    t: Any,
    k: Any,
    p: Any,
    reference: Any,
    engine: Any,
    tol: float = 1e-9,
) -> int:
    """Bucket engine vs ``engine`` row by row; ``tol`` bounds their probability
    difference (1e-9: same weights, only summation order differs)."""
    got = select_tokens(x, u, temperature=t, top_k=k, top_p=p)
    other = [np.asarray(a) for a in engine(x, u, t, k, p)]
    tb, kb, pb = (np.broadcast_to(a, u.shape) for a in (t, k, p))
    checked = 0
    for i in range(x.shape[0]):
        if reference(x[i], tb[i], kb[i], pb[i]).pick(u[i], tol) is None:
            continue
        assert got.token_id[i] == other[0][i]
        assert got.token_rank[i] == other[1][i]
        assert got.num_candidates[i] == other[3][i]
        # Sums over 151,936 weights in different orders differ by ~1e-12 relative.
        assert got.token_prob[i] == pytest.approx(other[2][i], rel=tol)
        checked += 1
    return checked


@pytest.mark.slow
def test_engines_agree_on_a_large_vocabulary(reference: Any, sort_engine: Any) -> None:
    """V = 151,936 float32 rows (seed 31) through every branch of the bucket engine."""
    rng = np.random.default_rng(31)
    vocab = 151_936
    x = rng.normal(0, 2, size=(8, vocab)).astype(np.float32)
    x[:, rng.choice(vocab, 40, replace=False)] += 9  # a peaked head
    x[1] = np.round(x[1])  # heavy ties everywhere
    x[2, : vocab // 2] = -INF
    x[3] = rng.normal(0, 0.3, size=vocab)  # flat: mass spread over many buckets
    u = np.concatenate([rng.uniform(size=6), [1e-10, 1 - 1e-10]])
    checked = 0
    for t, k, p in [
        (0.7, 0, 1.0),
        (0.7, 50, 0.9),
        (0.7, 0, 0.9),
        (1.5, 0, 0.3),
        (0.2, 1000, 0.999),
        (3.0, 0, 0.999),
    ]:
        checked += _agree(x, u, t, k, p, reference, sort_engine)
    assert checked >= 40


def test_top_k_cover_retries_when_the_sampled_columns_mislead(
    reference: Any, sort_engine: Any
) -> None:
    """Every 32nd column holds the largest logits, so the first thresholds keep too
    few tokens and the cover must deepen until it falls back to the whole row."""
    vocab = 151_936
    x = np.random.default_rng(43).normal(0, 1, size=(3, vocab)).astype(np.float32)
    x[0, ::32] = 50 + np.arange(x[0, ::32].size, dtype=np.float32) / 100
    x[1, 5::32] = 50
    u = np.array([0.3141, 0.6271, 0.9013])  # off the 1/60 and 1/5000 tie boundaries
    for k in (5_000, 60):
        assert _agree(x, u, 1.0, k, 1.0, reference, sort_engine) == 3
        assert np.all(select_tokens(x, u, temperature=1.0, top_k=k, top_p=1.0).num_candidates == k)


def test_u_crossing_above_the_top_p_bucket_for_few_and_many_rows(
    reference: Any, sort_engine: Any
) -> None:
    """The u crossing lies in a more probable bucket than the top-p cut for one row
    of eight (handled on copies of that row) and for all eight (one full pass)."""
    row = np.random.default_rng(46).normal(0, 1.5, size=5_000).astype(np.float32)
    x = np.tile(row, (8, 1))
    few = np.array([1e-6] + [0.9999] * 7)
    many = np.linspace(1e-6, 0.2, 8)
    assert _agree(x, few, 1.0, 0, 0.9, reference, sort_engine) == 8
    assert _agree(x, many, 1.0, 0, 0.9, reference, sort_engine) == 8


def test_u_just_below_one_picks_the_last_token_of_the_order(reference: Any) -> None:
    """u = 1 - 2**-53: the head's bucket sums may fall short of u times the float64
    total by rounding (four of these eight rows), and the row is redone with
    itself as head. Every weight is positive, so the token is the last of the order."""
    vocab = 5_000
    x = np.random.default_rng(0).normal(0, 3, size=(8, vocab)).astype(np.float32)
    u = np.nextafter(1.0, 0.0)
    res = select_tokens(x, u, temperature=1.0, top_k=0, top_p=1.0)
    for i in range(8):
        assert res.token_id[i] == reference(x[i], 1.0, 0, 1.0).order[-1]
    assert np.all(res.token_rank == vocab - 1)
    assert np.all(res.num_candidates == vocab)


def test_head_indices_equal_flatnonzero_at_any_density_and_length() -> None:
    """The word-at-a-time scan behind the bucket engine's head (seed 49)."""
    rng = np.random.default_rng(49)
    for n in (0, 7, 13, 8 * 1_000, 151_936 + 5):
        for density in (0.0, 0.001, 0.05, 0.5, 1.0):
            mask = rng.uniform(size=n + 3) < density
            for view in (mask[:n], mask[3:]):  # 8-byte aligned start, and not
                assert np.array_equal(flat_true(view), np.flatnonzero(view))


def test_non_contiguous_logits_and_concurrent_calls() -> None:
    rng = np.random.default_rng(44)
    wide = rng.normal(0, 2, size=(6, 20_000)).astype(np.float32)
    view = wide[:, ::2]
    u = rng.uniform(size=6)
    want = select_tokens(np.ascontiguousarray(view), u, temperature=0.8, top_k=0, top_p=0.9)
    assert np.array_equal(
        select_tokens(view, u, temperature=0.8, top_k=0, top_p=0.9).token_id, want.token_id
    )

    # Scratch buffers are per thread: concurrent calls must not see each other's data.
    from concurrent.futures import ThreadPoolExecutor

    batches = [rng.normal(0, 2, size=(4, 30_000)).astype(np.float32) for _ in range(6)]
    serial = [select_tokens(b, 0.5, temperature=0.7, top_k=0, top_p=1.0).token_id for b in batches]
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(
            pool.map(
                lambda b: select_tokens(b, 0.5, temperature=0.7, top_k=0, top_p=1.0).token_id,
                batches,
            )
        )
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_torch_cpu_returns_tensors_and_matches_numpy(reference: Any, sort_engine: Any) -> None:
    rng = np.random.default_rng(41)
    x = (rng.standard_normal((5, 3000)) * 3).astype(np.float32)
    u = rng.uniform(size=5)
    xt = torch.from_numpy(x)
    res = select_tokens(xt, torch.from_numpy(u), temperature=0.8, top_k=torch.tensor(20), top_p=0.9)
    assert isinstance(res.token_id, torch.Tensor)
    assert res.token_id.dtype == torch.int64
    assert res.token_prob.dtype == torch.float64
    assert res.token_id.device == xt.device
    ref = select_tokens(x, u, temperature=0.8, top_k=20, top_p=0.9)
    assert np.array_equal(res.token_id.numpy(), ref.token_id)
    # The torch sort engine (what CUDA tensors take) against the numpy bucket engine.
    for k, p in [(0, 1.0), (20, 0.9), (0, 0.9)]:
        sorted_out = sort_engine(xt, torch.from_numpy(u), 0.8, k, p)
        assert all(isinstance(a, torch.Tensor) for a in sorted_out)
        torch_engine = lambda *a: sort_engine(torch.from_numpy(a[0]), *a[1:])  # noqa: E731
        assert _agree(x, u, 0.8, k, p, reference, torch_engine, _CROSS_LIBRARY) >= 4


def test_bfloat16_cpu_tensors_are_widened_exactly() -> None:
    x = torch.randn(3, 500, generator=torch.Generator().manual_seed(45)).to(torch.bfloat16)
    u = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    got = select_tokens(x, u, temperature=0.9, top_k=0, top_p=0.95)
    want = select_tokens(x.float().numpy(), u.numpy(), temperature=0.9, top_k=0, top_p=0.95)
    assert isinstance(got.token_id, torch.Tensor)
    assert np.array_equal(got.token_id.numpy(), want.token_id)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stays_on_the_device_and_matches_numpy() -> None:
    rng = np.random.default_rng(51)
    x = (rng.standard_normal((16, 151_936)) * 2).astype(np.float32)
    u = rng.uniform(size=16)
    xc = torch.from_numpy(x).cuda()
    res = select_tokens(xc, torch.from_numpy(u).cuda(), temperature=0.7, top_k=50, top_p=0.9)
    assert res.token_id.device == xc.device
    ref = select_tokens(x, u, temperature=0.7, top_k=50, top_p=0.9)
    assert np.array_equal(res.token_id.cpu().numpy(), ref.token_id)
