"""Comparisons (gpustd.equal, ..., and Tensor's ==, <, ...), truth values and hashing,
against numpy on the same values. gpustd's bool is uint32 0/1."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from support import random_array

import gpucore
import gpustd
from gpustd import Tensor

SETTINGS = settings(max_examples=10, deadline=None)
COMPARISONS = {"equal": np.equal, "not_equal": np.not_equal, "less": np.less,
               "less_equal": np.less_equal, "greater": np.greater,
               "greater_equal": np.greater_equal}
OPERATORS = {"equal": operator.eq, "not_equal": operator.ne, "less": operator.lt,
             "less_equal": operator.le, "greater": operator.gt, "greater_equal": operator.ge}
SPECIAL = np.array([np.nan, -np.nan, 0.0, -0.0, 1.0, -1.0, np.inf, -np.inf], np.float32)


def with_ties(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Small values, so that equal pairs are common; floats get NaNs, zeros and infinities."""
    x = random_array(rng, shape, dtype, -3, 3)
    if np.dtype(dtype).kind == "f":
        special = rng.choice(SPECIAL, size=shape).astype(dtype)
        x = np.where(rng.random(shape) < 0.3, special, np.round(x))
    return x


def check(got: Tensor, expected: np.ndarray) -> None:
    assert isinstance(got, Tensor) and got.dtype == np.uint32
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.numpy(), expected.astype(np.uint32))


@pytest.mark.parametrize("op", COMPARISONS)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint32])
@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=7),
       seed=st.integers(0, 2**16))
def test_comparisons_broadcast_like_numpy(device, op, dtype, shapes, seed) -> None:
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a, b = with_ties(rng, sa, dtype), with_ties(rng, sb, dtype)
    ta, tb = (Tensor.from_numpy(v, device=device).reshape(v.shape) for v in (a, b))
    check(getattr(gpustd, op)(ta, tb), COMPARISONS[op](a, b))
    check(OPERATORS[op](ta, tb), COMPARISONS[op](a, b))


@pytest.mark.parametrize("op", COMPARISONS)
def test_nan_and_signed_zero_compare_as_in_numpy(device, op) -> None:
    a, b = np.meshgrid(SPECIAL, SPECIAL)
    ta, tb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    check(getattr(gpustd, op)(ta, tb), COMPARISONS[op](a, b))


@pytest.mark.parametrize("op", COMPARISONS)
def test_scalars_and_host_arrays_on_either_side(device, op) -> None:
    a = np.array([[-2, 0, 1, 3, 7]], np.int32)
    t, fn = Tensor.from_numpy(a, device=device), OPERATORS[op]
    for other in (1, 1.5, np.float32(3), np.array([[0], [3]]), [0, 0, 1, 3, 9]):
        check(fn(t, other), fn(a, other))
        check(fn(other, t), fn(other, a))  # reflected: 1 < t is t > 1; ndarray == t a ufunc
        check(COMPARISONS[op](t, other), COMPARISONS[op](a, other))  # numpy's ufunc on a Tensor


def test_comparing_with_no_number_is_unequal_everywhere(device) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = Tensor.from_numpy(a, device=device)
    for other in (None, "text", object()):
        check(t == other, a == other)
        check(t != other, a != other)
    with pytest.raises(TypeError):
        t < None  # noqa: B015 (the comparison is what raises)


def test_truth_value_is_numpy_s(device) -> None:
    for value in ([2.5], [0.0], [np.nan], [[-0.0]], 7, 0):
        assert bool(Tensor.from_numpy(np.array(value, np.float32), device=device)) == bool(
            np.array(value))
    t = Tensor.from_numpy(np.ones(3, np.float32), device=device)
    with pytest.raises(ValueError, match="more than one element is ambiguous"):
        bool(t)
    with pytest.raises(ValueError, match="more than one element"):
        bool(t == t)
    with pytest.raises(ValueError, match="empty array is ambiguous"):
        bool(t[:0])
    assert bool((t == 1).all()) and not bool((t > 1).any())


def test_tensors_are_unhashable_like_arrays(device) -> None:
    t = Tensor.from_numpy(np.ones(3, np.float32), device=device)
    with pytest.raises(TypeError, match="unhashable"):
        hash(t)
    with pytest.raises(TypeError, match="unhashable"):
        {t}  # noqa: B018 (building the set is what raises)
    assert t in [t] and [t].index(t) == 0  # identity comes first in list searches


def test_float16_comparisons(f16_device: gpucore.Device) -> None:
    a, b = np.meshgrid(SPECIAL.astype(np.float16), SPECIAL.astype(np.float16))
    ta, tb = Tensor.from_numpy(a, device=f16_device), Tensor.from_numpy(b, device=f16_device)
    for op, ref in COMPARISONS.items():
        check(getattr(gpustd, op)(ta, tb), ref(a, b))
    check(ta < 0.5, a < np.float16(0.5))
