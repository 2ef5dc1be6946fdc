"""gpustd.reduction / softmax / scan against float64 numpy and scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes
from support import assert_close, random_array

from gpustd import Tensor, reduction
from gpustd.scan import cumsum
from gpustd.softmax import log_softmax, softmax

SETTINGS = settings(max_examples=12, deadline=None)
REFERENCE = {
    "sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "var": np.var,
    "std": np.std, "logsumexp": scipy.special.logsumexp,
}
ADJACENT_ONLY = {"var", "std", "logsumexp"}


def upload(x: np.ndarray, device) -> Tensor:
    return Tensor.from_numpy(x, device=device).reshape(x.shape)


@st.composite
def shape_and_axis(draw, adjacent: bool = False):
    """A rank 0-4 shape and an axis for it: None, an int (maybe negative) or a tuple."""
    shape = draw(array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=7))
    rank = len(shape)
    kinds = ["none"] + (["int", "tuple"] if rank else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return shape, None
    if kind == "int":
        return shape, draw(st.integers(-rank, rank - 1))
    if adjacent:
        first = draw(st.integers(0, rank - 1))
        return shape, tuple(range(first, draw(st.integers(first + 1, rank))))
    axes = draw(st.sets(st.integers(0, rank - 1), min_size=1))
    return shape, tuple(sorted(axes))


# -- reductions -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", REFERENCE)
@SETTINGS
@given(case=st.data(), keepdims=st.booleans(), seed=st.integers(0, 2**16))
def test_reductions_match_numpy(device, name, case, keepdims, seed) -> None:
    shape, axis = case.draw(shape_and_axis(adjacent=name in ADJACENT_ONLY))
    x = random_array(np.random.default_rng(seed), shape)
    got = getattr(reduction, name)(upload(x, device), axis, keepdims=keepdims)
    assert got.dtype == np.float32
    expected = np.asarray(REFERENCE[name](x.astype(np.float64), axis=axis, keepdims=keepdims))
    if x.ndim == 0:
        expected = expected.reshape(())  # scipy's logsumexp returns (1,) there; numpy ()
    if name in ("sum", "mean"):
        # A sum that cancels (0.77 - 0.89 - ... = -1.3e-4) cannot be judged against its own
        # size: float32 rounding scales with the summed magnitudes, so that is the yardstick.
        scale = REFERENCE[name](np.abs(x.astype(np.float64)), axis=axis, keepdims=keepdims)
        error = np.abs(got.numpy().astype(np.float64) - expected)
        assert np.all(error <= 1e-5 * np.max(scale, initial=0.0)), float(np.max(error, initial=0))
        return
    assert_close(got.numpy(), expected)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@SETTINGS
@given(case=st.data(), keepdims=st.booleans(), seed=st.integers(0, 2**16))
def test_argreductions_match_numpy(device, name, case, keepdims, seed) -> None:
    shape, axis = case.draw(shape_and_axis())
    axis = None if isinstance(axis, tuple) else axis
    x = random_array(np.random.default_rng(seed), shape)
    got = getattr(reduction, name)(upload(x, device), axis, keepdims=keepdims)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.numpy(), getattr(np, name)(x, axis=axis,
                                                                 keepdims=keepdims))


# Long axes need several passes; short contiguous rows take the row-per-lane layout;
# strided axes use 2-D workgroups of various column counts.
LONG = [((3, 5003), 1), ((5003, 3), 0), ((2, 3001, 5), 1), ((1031, 7), 1), ((4, 2, 2053), None),
        ((3, 70, 37), 1), ((1,), 0)]


@pytest.mark.parametrize("shape,axis", LONG)
def test_long_and_strided_axes(device, shape, axis) -> None:
    rng = np.random.default_rng(len(shape) + shape[0])
    x = random_array(rng, shape)
    t, x64 = upload(x, device), x.astype(np.float64)
    for name, ref in REFERENCE.items():
        assert_close(getattr(reduction, name)(t, axis).numpy(), ref(x64, axis=axis))
    for name in ("argmax", "argmin"):
        np.testing.assert_array_equal(getattr(reduction, name)(t, axis).numpy(),
                                      getattr(np, name)(x, axis=axis))


def test_more_rows_than_one_grid_dimension(device) -> None:
    # 65537 workgroups (one per row) are folded into a 2-D grid.
    x = random_array(np.random.default_rng(20), (65537, 64))
    t, x64 = upload(x, device), x.astype(np.float64)
    assert_close(reduction.sum(t, 1).numpy(), x64.sum(axis=1))
    np.testing.assert_array_equal(reduction.argmax(t, 1).numpy(), x.argmax(axis=1))
    assert_close(softmax(t, 1).numpy(), scipy.special.softmax(x64, axis=1))


def test_million_elements_accuracy(device) -> None:
    rng = np.random.default_rng(12)
    x = (1000.0 + rng.random(10**6)).astype(np.float32)  # a large mean against the spread
    t, x64 = upload(x, device), x.astype(np.float64)
    assert_close(reduction.sum(t).numpy(), x64.sum())
    assert_close(reduction.mean(t).numpy(), x64.mean())
    # E[x^2] - E[x]^2 in f32 would lose every digit here; the two-pass variance keeps ~5.
    assert_close(reduction.var(t).numpy(), x64.var(), tol=1e-4)
    assert_close(reduction.std(t, ddof=1).numpy(), x64.std(ddof=1), tol=1e-4)


def test_argmax_ties_give_the_first_index(device) -> None:
    x = np.zeros((2, 5000), np.float32)
    x[:, [4321, 17, 2500]] = 3.0  # ties in different chunks of a multi-pass reduction
    x[1, 4999] = 3.0
    got = reduction.argmax(upload(x, device), 1).numpy()
    np.testing.assert_array_equal(got, [17, 17])
    np.testing.assert_array_equal(reduction.argmin(upload(-x, device)).numpy(), 17)


def test_nan_propagates_through_max_min_and_arg(device) -> None:
    # numpy: max/min are NaN where a NaN is reduced, argmax/argmin its first index; GPU
    # max()/min() drop NaN. Columns (strided), rows (contiguous) and a multi-pass length.
    x = random_array(np.random.default_rng(16), (5, 13))
    x[1, 4] = x[1, 9] = x[3, 0] = np.nan
    long = random_array(np.random.default_rng(17), (2, 5001))
    long[0, 4321] = long[1, 17] = long[1, 4000] = np.nan
    for data, axis, names in ((x, 0, ("max", "argmin")), (x, 1, ("min", "argmax")),
                              (long, 1, ("max", "argmax"))):
        t = upload(data, device)
        for name in names:
            np.testing.assert_array_equal(getattr(reduction, name)(t, axis).numpy(),
                                          getattr(np, name)(data, axis), err_msg=name)


@pytest.mark.filterwarnings("ignore:Degrees of freedom")
@pytest.mark.parametrize("ddof", [0, 1, 2])
def test_var_ddof(device, ddof) -> None:
    x = random_array(np.random.default_rng(13), (5, 2))
    with np.errstate(divide="ignore", invalid="ignore"):  # ddof=2 divides by zero: inf
        expected = np.var(x.astype(np.float64), axis=1, ddof=ddof)
    assert_close(reduction.var(upload(x, device), 1, ddof=ddof).numpy(), expected)


def test_integer_reductions(device) -> None:
    x = random_array(np.random.default_rng(14), (6, 1001), np.int32, -1000, 1000)
    t = upload(x, device)
    assert reduction.sum(t, 1).dtype == np.int32
    np.testing.assert_array_equal(reduction.sum(t, 1).numpy(), x.sum(axis=1))
    np.testing.assert_array_equal(reduction.max(t, 0).numpy(), x.max(axis=0))
    np.testing.assert_array_equal(reduction.min(t).numpy(), x.min())
    np.testing.assert_array_equal(reduction.argmax(t, 1).numpy(), x.argmax(axis=1))
    mean = reduction.mean(t, 1)
    assert mean.dtype == np.float32
    assert_close(mean.numpy(), x.mean(axis=1))


def test_large_logsumexp_does_not_overflow(device) -> None:
    x = random_array(np.random.default_rng(15), (3, 777), np.float32, 500, 1000)
    assert_close(reduction.logsumexp(upload(x, device), -1).numpy(),
                 scipy.special.logsumexp(x.astype(np.float64), axis=-1))


# -- empty inputs ---------------------------------------------------------------------------
def test_empty_reductions_follow_numpy(device) -> None:
    t = upload(np.zeros((3, 0), np.float32), device)
    np.testing.assert_array_equal(reduction.sum(t, 1).numpy(), np.zeros(3))
    assert reduction.sum(t).numpy() == 0
    assert np.isnan(reduction.mean(t, 1).numpy()).all()
    assert np.isnan(reduction.var(t, 1).numpy()).all()
    assert (reduction.logsumexp(t, 1).numpy() == -np.inf).all()
    assert reduction.sum(t, 0).shape == (0,)
    assert reduction.max(t, 0).shape == (0,)  # nothing to reduce into: no error, as numpy
    for name in ("max", "min", "argmax", "argmin"):
        with pytest.raises(ValueError):
            getattr(reduction, name)(t, 1)
    assert cumsum(t, 1).shape == (3, 0)


# -- errors ---------------------------------------------------------------------------------
def test_bad_axes_raise(device) -> None:
    t = upload(np.ones((2, 3), np.float32), device)
    with pytest.raises(ValueError, match="out of bounds"):
        reduction.sum(t, 2)
    with pytest.raises(ValueError, match="out of bounds"):
        reduction.mean(t, -3)
    with pytest.raises(ValueError, match="repeated"):
        reduction.max(t, (1, -1))
    with pytest.raises(TypeError, match="axis"):
        reduction.sum(t, 1.5)
    with pytest.raises(TypeError, match="int axis"):
        reduction.argmax(t, (0, 1))
    with pytest.raises(ValueError, match="out of bounds"):
        softmax(t, 5)
    with pytest.raises(ValueError, match="out of bounds"):
        cumsum(t, -3)
    three = upload(np.ones((2, 3, 4), np.float32), device)
    with pytest.raises(ValueError, match="non-adjacent"):
        reduction.var(three, (0, 2))


# -- softmax --------------------------------------------------------------------------------
@pytest.mark.parametrize("fn,ref", [(softmax, scipy.special.softmax),
                                    (log_softmax, scipy.special.log_softmax)])
@SETTINGS
@given(case=st.data(), seed=st.integers(0, 2**16))
def test_softmax_matches_scipy(device, fn, ref, case, seed) -> None:
    shape, axis = case.draw(shape_and_axis(adjacent=True))
    x = random_array(np.random.default_rng(seed), shape, np.float32, -5, 5)
    assert_close(fn(upload(x, device), axis).numpy(), ref(x.astype(np.float64), axis=axis))


@pytest.mark.parametrize("shape,axis", [((4, 3001), -1), ((3001, 4), 0), ((2, 1031, 3), 1),
                                        ((1, 1), 0)])
def test_softmax_long_axes_and_huge_inputs(device, shape, axis) -> None:
    x = random_array(np.random.default_rng(16), shape, np.float32, -1e4, 1e4)
    t, x64 = upload(x, device), x.astype(np.float64)
    assert_close(softmax(t, axis).numpy(), scipy.special.softmax(x64, axis=axis))
    assert_close(log_softmax(t, axis).numpy(), scipy.special.log_softmax(x64, axis=axis))


# -- cumsum ---------------------------------------------------------------------------------
@SETTINGS
@given(case=st.data(), seed=st.integers(0, 2**16))
def test_cumsum_matches_numpy(device, case, seed) -> None:
    shape, axis = case.draw(shape_and_axis())
    axis = None if isinstance(axis, tuple) else axis
    x = random_array(np.random.default_rng(seed), shape)
    got = cumsum(upload(x, device), axis)
    assert_close(got.numpy(), np.cumsum(x.astype(np.float64), axis=axis))


@pytest.mark.parametrize("shape,axis", [((2, 1025), 1), ((3, 4099, 2), 1), ((1, 1), None),
                                        ((1024 * 1024 + 7,), 0)])
def test_cumsum_multi_block(device, shape, axis) -> None:
    # The last case has > 1024 blocks: the block totals themselves need a second level.
    x = random_array(np.random.default_rng(17), shape, np.float32, 0, 1)
    assert_close(cumsum(upload(x, device), axis).numpy(), np.cumsum(x.astype(np.float64),
                                                                    axis=axis))


def test_cumsum_integers_exact(device) -> None:
    x = random_array(np.random.default_rng(18), (3, 2500), np.int32, -100, 100)
    got = cumsum(upload(x, device), 1)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.numpy(), np.cumsum(x, axis=1))


# -- float16 --------------------------------------------------------------------------------
def test_float16_accumulates_in_f32(f16_device) -> None:
    # 4099 values near 1: an f16 accumulator would stall at 2048 (spacing 2 there).
    x = random_array(np.random.default_rng(19), (2, 4099), np.float16, 0.9, 1.1)
    t, x64 = upload(x, f16_device), x.astype(np.float64)
    got = reduction.sum(t, 1)
    assert got.dtype == np.float16
    assert_close(got.numpy(), x64.sum(axis=1), dtype=np.float16)
    assert_close(reduction.mean(t, 1).numpy(), x64.mean(axis=1), dtype=np.float16)
    assert_close(reduction.var(t, 1).numpy(), x64.var(axis=1), dtype=np.float16)
    assert_close(reduction.max(t, 0).numpy(), x64.max(axis=0), dtype=np.float16)
    np.testing.assert_array_equal(reduction.argmax(t, 1).numpy(), x.argmax(axis=1))
    assert_close(cumsum(t, 1).numpy(), np.cumsum(x64, axis=1), dtype=np.float16)
    assert_close(softmax(t, 1).numpy(), scipy.special.softmax(x64, axis=1), dtype=np.float16)
    assert_close(softmax(t, 0).numpy(), scipy.special.softmax(x64, axis=0), dtype=np.float16)
    assert_close(reduction.logsumexp(t, 1).numpy(), scipy.special.logsumexp(x64, axis=1),
                 dtype=np.float16)
