"""floor_divide, remainder and divmod (gpustd's and Tensor's //, %, divmod) against numpy on
the same values: negative operands, division by zero, the IEEE specials, awkward shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from support import assert_close, random_array

import gpucore
import gpustd
from gpustd import Tensor

OPS = {"floor_divide": np.floor_divide, "remainder": np.remainder}
AWKWARD = [((1,), (1,)), ((257,), (257,)), ((1031,), ()), ((), (13, 1)), ((3, 1, 67), (5, 1))]


def signed(rng: np.random.Generator, shape: tuple[int, ...], dtype: type, low: float,
           high: float) -> np.ndarray:
    """Magnitudes in [low, high] with random signs (divisors kept away from 0)."""
    x = random_array(rng, shape, dtype, low, high)
    return x * np.where(rng.random(shape) < 0.5, -1, 1).astype(dtype)


def integers(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """The dtype's whole range, small values mixed in (quotients of every size, zeros among
    the small divisors: numpy gives 0 there)."""
    info = np.iinfo(dtype)
    wide = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    small = random_array(rng, shape, dtype, -20, 20)
    return np.where(rng.random(shape) < 0.5, wide, small).astype(dtype)


def check(got: Tensor, want: np.ndarray, dtype: type) -> None:
    assert isinstance(got, Tensor) and got.dtype == np.dtype(dtype)
    assert got.shape == want.shape
    if np.dtype(dtype).kind in "iu":
        np.testing.assert_array_equal(got.numpy(), want)
    else:
        assert_close(got.numpy(), want, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint32])
@settings(max_examples=6, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=9),
       seed=st.integers(0, 2**16))
def test_broadcasts_like_numpy(device: gpucore.Device, dtype: type, shapes: object,
                               seed: int) -> None:
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes  # type: ignore[attr-defined]
    if dtype == np.float32:
        a, b = signed(rng, sa, dtype, 0.1, 50), signed(rng, sb, dtype, 0.5, 3)
    else:
        a, b = integers(rng, sa, dtype), integers(rng, sb, dtype)
    ta, tb = (Tensor.from_numpy(v, device=device).reshape(v.shape) for v in (a, b))
    with np.errstate(divide="ignore"):
        for op, ref in OPS.items():
            check(getattr(gpustd, op)(ta, tb), ref(a, b), dtype)


@pytest.mark.parametrize("sa,sb", AWKWARD)
def test_awkward_shapes_and_operators(device: gpucore.Device, sa: tuple, sb: tuple) -> None:
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a, b = signed(rng, sa, np.float32, 0.1, 50), signed(rng, sb, np.float32, 0.5, 3)
    ta, tb = (Tensor.from_numpy(v, device=device).reshape(v.shape) for v in (a, b))
    check(ta // tb, a // b, np.float32)
    check(ta % tb, a % b, np.float32)
    quotient, rest = divmod(ta, tb)
    check(quotient, a // b, np.float32)
    check(rest, a % b, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_python_scalars_on_either_side(device: gpucore.Device, dtype: type) -> None:
    rng = np.random.default_rng(1)
    a = signed(rng, (7, 11), dtype, 1, 40)
    t = Tensor.from_numpy(a, device=device)
    for got, want in [(t // 3, a // dtype(3)), (t // -3, a // dtype(-3)),
                      (t % -7, a % dtype(-7)), (50 // t, dtype(50) // a),
                      (-50 % t, dtype(-50) % a), (gpustd.mod(t, 4), np.mod(a, dtype(4)))]:
        check(got, want, dtype)
    if dtype == np.int32:  # a float scalar makes it float32, as numpy's float64
        check(t // 2.5, (a // 2.5).astype(np.float32), np.float32)


def test_numpy_ufuncs_and_host_operands(device: gpucore.Device) -> None:
    rng = np.random.default_rng(2)
    a, b = signed(rng, (4, 9), np.float32, 0.1, 20), signed(rng, (9,), np.float32, 0.5, 3)
    t = Tensor.from_numpy(a, device=device)
    for got, want in [(np.floor_divide(t, b), a // b), (np.remainder(b, t), b % a),
                      (np.mod(t, b), a % b), (b // t, b // a), (t % b, a % b)]:
        check(got, want, np.float32)
    quotient, rest = np.divmod(t, b)
    check(quotient, a // b, np.float32)
    check(rest, a % b, np.float32)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_integer_division_by_zero_and_overflow(device: gpucore.Device, dtype: type) -> None:
    info = np.iinfo(dtype)
    a = np.array([7, info.max, info.min, 5, 1, info.min, 13], dtype)
    b = np.array([0, 0, 0, 3, info.max, 1 if dtype == np.uint32 else -1, 4], dtype)
    ta, tb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    with np.errstate(divide="ignore", over="ignore"):
        check(ta // tb, a // b, dtype)
        check(ta % tb, a % b, dtype)
        check(ta // 0, a // dtype(0), dtype)


def test_float_specials_as_numpy(device: gpucore.Device) -> None:
    # +-0, +-inf, NaN against each other and against ordinary values, both ways
    values = np.array([0.0, -0.0, 1.5, -2.25, 7.0, -7.0, np.inf, -np.inf, np.nan], np.float32)
    a, b = np.meshgrid(values, values)
    ta, tb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    with np.errstate(divide="ignore", invalid="ignore"):
        for op, ref in OPS.items():
            got, want = getattr(gpustd, op)(ta, tb).numpy(), ref(a, b)
            np.testing.assert_array_equal(got, want, err_msg=op)
            number = ~np.isnan(want)  # a NaN's sign is the FPU's (x86 makes them negative)
            np.testing.assert_array_equal(np.signbit(got[number]), np.signbit(want[number]),
                                          err_msg=op)


def test_floats_near_multiples_agree(device: gpucore.Device) -> None:
    # quotients that land on integers, where fmod's rounding decides the floor
    rng = np.random.default_rng(3)
    b = signed(rng, (2000,), np.float32, 0.5, 3)
    a = (b * rng.integers(-40, 40, 2000)).astype(np.float32)
    ta, tb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    quotient, rest = gpustd.divmod(ta, tb)
    want_q, want_r = np.divmod(a, b)
    # a remainder next to |b| instead of 0 is numpy's answer a rounding away: compare the
    # pair through q * b + r == a, and the quotients themselves where numpy's r is not tiny
    assert_close((quotient.numpy().astype(np.float64) * b + rest.numpy()), a.astype(np.float64),
                 tol=1e-6)
    clear = np.abs(want_r) > 1e-5 * np.abs(b)
    np.testing.assert_array_equal(quotient.numpy()[clear], want_q[clear])


def test_float16(f16_device: gpucore.Device) -> None:
    rng = np.random.default_rng(4)
    a, b = signed(rng, (3, 1, 129), np.float16, 0.1, 30), signed(rng, (5, 1), np.float16, 0.5, 3)
    ta, tb = Tensor.from_numpy(a, device=f16_device), Tensor.from_numpy(b, device=f16_device)
    for op, ref in OPS.items():
        check(getattr(gpustd, op)(ta, tb), ref(a, b), np.float16)
    check(ta // 2.5, a // np.float16(2.5), np.float16)


def test_integer_true_division_stays_float(device: gpucore.Device) -> None:
    a = np.arange(-6, 7, dtype=np.int32)
    t = Tensor.from_numpy(a, device=device)
    assert (t / 4).dtype == np.float32 and (t // 4).dtype == np.int32
