"""Bitwise and logical operators (gpustd.bitwise_and, ..., Tensor's & | ^ ~ << >>) against
numpy on the same values: the whole int32/uint32 range, shift counts past the width,
comparison masks staying 0/1, and floats refused."""

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

BINARY = {"bitwise_and": (np.bitwise_and, operator.and_),
          "bitwise_or": (np.bitwise_or, operator.or_),
          "bitwise_xor": (np.bitwise_xor, operator.xor)}
SHIFTS = {"left_shift": (np.left_shift, operator.lshift),
          "right_shift": (np.right_shift, operator.rshift)}
AWKWARD = [((1,), (1,)), ((257,), ()), ((1031,), (1031,)), ((3, 1, 67), (5, 1))]


def full_range(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def counts(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Shift counts, some of the width or more and (int32) some negative: numpy's npy_lshift
    and npy_rshift shift everything out there."""
    low = -3 if dtype == np.int32 else 0
    return rng.integers(low, 40, size=shape, endpoint=True).astype(dtype)


def check(got: Tensor, want: np.ndarray) -> None:
    assert isinstance(got, Tensor) and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
@settings(max_examples=5, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=9),
       seed=st.integers(0, 2**16))
def test_broadcasts_like_numpy(device: gpucore.Device, dtype: type, shapes: object,
                               seed: int) -> None:
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes  # type: ignore[attr-defined]
    a, b, c = full_range(rng, sa, dtype), full_range(rng, sb, dtype), counts(rng, sb, dtype)
    ta, tb, tc = (Tensor.from_numpy(v, device=device).reshape(v.shape) for v in (a, b, c))
    for name, (ref, _) in BINARY.items():
        check(getattr(gpustd, name)(ta, tb), ref(a, b))
    for name, (ref, _) in SHIFTS.items():
        check(getattr(gpustd, name)(ta, tc), ref(a, c))


@pytest.mark.parametrize("sa,sb", AWKWARD)
def test_operators_on_awkward_shapes(device: gpucore.Device, sa: tuple, sb: tuple) -> None:
    rng = np.random.default_rng(sum(sa) + sum(sb))
    a, b, c = (full_range(rng, sa, np.int32), full_range(rng, sb, np.int32),
               counts(rng, sb, np.int32))
    ta, tb, tc = (Tensor.from_numpy(v, device=device).reshape(v.shape) for v in (a, b, c))
    for _, op in BINARY.values():
        check(op(ta, tb), op(a, b))
    for _, op in SHIFTS.values():
        check(op(ta, tc), op(a, c))
    check(~ta, ~a)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_python_scalars_numpy_ufuncs_and_host_data(device: gpucore.Device, dtype: type) -> None:
    rng = np.random.default_rng(1)
    a = full_range(rng, (6, 13), dtype)
    host = full_range(rng, (13,), dtype)
    t = Tensor.from_numpy(a, device=device)
    k = dtype(0x5A5A5A5A)
    for got, want in [(t & 0x5A5A5A5A, a & k), (0x5A5A5A5A | t, k | a), (t ^ 7, a ^ dtype(7)),
                      (t << 3, a << dtype(3)), (5 >> t % 8, dtype(5) >> (a % dtype(8))),
                      (t >> 31, a >> dtype(31)), (np.bitwise_xor(host, t), host ^ a),
                      (np.left_shift(t, 33), np.left_shift(a, dtype(33))),
                      (gpustd.invert(t), np.invert(a)), (np.bitwise_not(t), ~a),
                      (host & t, host & a)]:
        check(got, want)


def test_comparison_masks_stay_masks(device: gpucore.Device) -> None:
    rng = np.random.default_rng(2)
    x, y = random_array(rng, (5, 11)), random_array(rng, (11,))
    tx, ty = Tensor.from_numpy(x, device=device), Tensor.from_numpy(y, device=device)
    bools = np.random.default_rng(3).random(11) < 0.5  # a numpy bool mask meets a gpustd one
    for got, want in [((tx > 0) & (ty < 0), (x > 0) & (y < 0)),
                      ((tx > ty) | (tx < -0.5), (x > y) | (x < -0.5)),
                      ((tx > 0) ^ bools, (x > 0) ^ bools), (bools & (tx > 0), bools & (x > 0)),
                      (gpustd.logical_and(tx, ty > 0), np.logical_and(x, y > 0)),
                      (gpustd.logical_or(tx > 0.5, 0), np.logical_or(x > 0.5, 0)),
                      (gpustd.logical_xor(tx > 0, ty > 0), np.logical_xor(x > 0, y > 0)),
                      (gpustd.logical_not(tx > 0), np.logical_not(x > 0)),
                      (np.logical_not(tx - x), np.logical_not(x - x))]:
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got.numpy(), want.astype(np.uint32))


def test_logical_not_of_floats_as_numpy(device: gpucore.Device) -> None:
    x = np.array([0.0, -0.0, np.nan, 1.5, -np.inf], np.float32)
    got = gpustd.logical_not(Tensor.from_numpy(x, device=device))
    np.testing.assert_array_equal(got.numpy(), np.logical_not(x).astype(np.uint32))


def test_floats_are_refused(device: gpucore.Device) -> None:
    f = Tensor.from_numpy(np.ones(3, np.float32), device=device)
    i = Tensor.from_numpy(np.ones(3, np.int32), device=device)
    for call in (lambda: f & 1, lambda: 1 | f, lambda: ~f, lambda: f << 2,
                 lambda: i & 1.5, lambda: gpustd.right_shift(i, np.ones(3, np.float32) * 0.5),
                 lambda: np.bitwise_and(f, i)):
        with pytest.raises(TypeError, match=r"int32 or uint32|dtype mismatch"):
            call()
    with pytest.raises(TypeError, match="dtype mismatch"):
        i & Tensor.from_numpy(np.ones(3, np.uint32), device=device)
