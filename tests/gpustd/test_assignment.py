"""Writing into a Tensor (gpustd.indexing's x[key] = value, strided reads, the in-place
operators and ufuncs' out=; integer arrays and masks: test_advanced_indexing.py) against numpy
doing the same to a copy; views (reshapes) of the tensor must see every write, as numpy's do."""

from __future__ import annotations

import operator
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close, random_array

import gpucore
import gpustd
from gpustd import Tensor

SHAPE = (5, 7, 3)
KEYS = [1, -1, (slice(None, None, 2),), (slice(None, None, -1), 3), (Ellipsis, slice(2, None, -2)),
        (slice(4, 0, -3), slice(1, 6, 2), 0), (slice(3, 1),), (2, Ellipsis, 1),
        (slice(-3, None), Ellipsis, slice(None, None, 2)), (Ellipsis,), (0, 0, 0)]


def pair(device: gpucore.Device, shape: tuple[int, ...] = SHAPE, dtype: type = np.float32,
         seed: int = 0) -> tuple[np.ndarray, Tensor]:
    a = random_array(np.random.default_rng(seed), shape, dtype, -9, 9)
    return a, Tensor.from_numpy(a, device=device).reshape(shape)


@pytest.mark.parametrize("key", KEYS)
def test_read_and_write_strided_regions(device: gpucore.Device, key: object) -> None:
    a, t = pair(device)
    view = t.reshape(-1)
    got = t[key]
    assert got.shape == a[key].shape
    np.testing.assert_array_equal(got.numpy(), a[key])
    value = random_array(np.random.default_rng(1), a[key].shape, np.float32)
    a[key] = value
    t[key] = Tensor.from_numpy(value, device=device).reshape(value.shape)
    np.testing.assert_array_equal(view.numpy(), a.reshape(-1))
    a[key] = -2.5
    t[key] = -2.5
    np.testing.assert_array_equal(t.numpy(), a)


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_random_keys_and_broadcast_values(device: gpucore.Device, data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from([(1,), (13,), (4, 1, 6), (3, 5, 2, 7), (2, 3, 1, 2, 3, 2)]))
    key = []
    for n in shape:
        if data.draw(st.booleans()):
            key.append(data.draw(st.integers(-n, n - 1)))
        else:
            key.append(slice(data.draw(st.integers(-n - 1, n + 1) | st.none()),
                             data.draw(st.integers(-n - 1, n + 1) | st.none()),
                             data.draw(st.sampled_from([None, 1, 2, 3, -1, -2]))))
    a, t = pair(device, shape, seed=len(key))
    region = a[tuple(key)].shape
    # a value broadcast from trailing axes of the region, with a length-1 axis or two
    tail = tuple(d if data.draw(st.booleans()) else 1 for d in region[data.draw(
        st.integers(0, len(region))):])
    value = random_array(np.random.default_rng(2), tail, np.float32)
    a[tuple(key)] = value
    t[tuple(key)] = value
    np.testing.assert_array_equal(t.numpy(), a)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_values_convert_as_numpy(device: gpucore.Device, dtype: type) -> None:
    a, t = pair(device, (4, 9), dtype)
    for key, value in [((1,), 7.9), ((slice(None), 2), np.float32(-0.0) + 3.5),
                       ((Ellipsis, slice(None, None, 4)), np.arange(4).reshape(4, 1)),
                       ((2, slice(1, 4)), Tensor.from_numpy(np.array([1.5, 2.5, 3.5], np.float32),
                                                            device=device)),
                       ((slice(None, None, -1),), np.ones((1, 4, 9), bool))]:
        a[key] = np.asarray(value)
        t[key] = value
        np.testing.assert_array_equal(t.numpy(), a)


def test_boolean_masks(device: gpucore.Device) -> None:
    a, t = pair(device, (6, 11))
    b = random_array(np.random.default_rng(3), (6, 11), np.float32)
    view = t.reshape(66)
    a[a > 1] = 0.25
    t[t > 1] = 0.25  # gpustd's bool: a uint32 Tensor
    mask = b < 0
    a[mask] = -1
    t[mask] = -1  # numpy's
    rows = np.array([True, False, True, True, False, False])
    row = random_array(np.random.default_rng(4), (11,), np.float32)
    a[rows] = row
    t[rows] = row  # a mask of the leading axis, one row for all of its true elements
    a[rows[:, None] & (b > 0.5)] = 7
    t[Tensor.from_numpy(rows[:, None] & (b > 0.5), device=device)] = 7
    np.testing.assert_array_equal(view.numpy(), a.reshape(66))


def test_what_assignment_refuses(device: gpucore.Device) -> None:
    _, t = pair(device, (4, 5))
    before = t.numpy()
    with pytest.raises(IndexError, match="out of bounds for axis 0 with size 4"):
        t[[0, 4]] = 1.0
    with pytest.raises(IndexError, match="integer"):
        t[Tensor.from_numpy(np.array([0, 1], np.float32), device=device)] = 1.0
    with pytest.raises(ValueError, match="could not broadcast"):
        t[1:3] = np.ones(3)
    with pytest.raises(ValueError, match="cannot assign 19 input values to the 20"):
        t[np.ones((4, 5), bool)] = np.arange(19)
    with pytest.raises(IndexError, match="did not match"):
        t[np.ones(5, bool)] = 1.0
    np.testing.assert_array_equal(t.numpy(), before)
    frozen = Tensor.from_numpy(np.ones(3, np.float32), device=device, read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        frozen[0] = 2.0
    with pytest.raises(ValueError, match="read-only"):
        frozen[[0]] = 2.0
    with pytest.raises(ValueError, match="read-only"):
        frozen += 1


FLOAT_OPS = [operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
             operator.imod, operator.ipow]
INT_OPS = [operator.iadd, operator.isub, operator.imul, operator.ifloordiv, operator.imod,
           operator.iand, operator.ior, operator.ixor, operator.ilshift, operator.irshift]


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("shape", [(1,), (257,), (3, 67)])
def test_inplace_operators_write_into_the_buffer(device: gpucore.Device, dtype: type,
                                                 shape: tuple[int, ...]) -> None:
    a, t = pair(device, shape, dtype)
    if dtype == np.float32:
        a = np.abs(a) + 1  # a positive base for **=
        t = Tensor.from_numpy(a, device=device)
    view, squeezed = t.reshape(-1), t.reshape((1, *shape)).squeeze(0)
    rng = np.random.default_rng(5)
    for i, op in enumerate(FLOAT_OPS if dtype == np.float32 else INT_OPS):
        other = random_array(rng, shape[-1:], dtype, 1, 3 if op is operator.ipow else 5)
        if i % 2:  # a Python scalar every other time
            other = other.flat[0].item()
        a = op(a, other)
        result = op(t, other)
        assert result is t
        if dtype == np.float32:
            assert_close(view.numpy(), a.reshape(-1), tol=1e-5)
            a = t.numpy()  # go on from the same values: ops compound their rounding
        else:
            np.testing.assert_array_equal(squeezed.numpy(), a)


def test_inplace_matmul_and_ufunc_out(device: gpucore.Device) -> None:
    a, t = pair(device, (7, 5))
    square = random_array(np.random.default_rng(6), (5, 5), np.float32)
    view = t.reshape(35)
    t @= square
    a = a @ square
    assert_close(view.numpy(), a.reshape(35))
    out = np.add(t, 1.0, out=(t,))
    assert out is t
    np.floor_divide(t, 0.75, out=t)
    a = (a + 1) // np.float32(0.75)
    assert_close(view.numpy(), a.reshape(35))
    r = gpustd.empty((7, 5), device=device)
    got = np.divmod(t, 4.0, out=(t, r))  # both computed from t before either is written
    assert got[0] is t and got[1] is r
    np.testing.assert_array_equal(r.numpy(), np.remainder(a, np.float32(4)))
    np.testing.assert_array_equal(view.numpy(), (a // np.float32(4)).reshape(35))


def test_inplace_refuses_what_numpy_refuses(device: gpucore.Device) -> None:
    _, i = pair(device, (3, 4), np.int32)
    for op, other in [(operator.iadd, 0.5), (operator.itruediv, 2), (operator.imul, np.ones(4))]:
        with pytest.raises(TypeError, match="same_kind"):
            op(i, other)
    _, f = pair(device, (3, 1))
    with pytest.raises(ValueError, match="non-broadcastable output"):
        f += np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="int32 or uint32"):
        f &= 1
    np.testing.assert_array_equal(i.numpy(), pair(device, (3, 4), np.int32)[0])  # untouched


@pytest.mark.parametrize("dtypes", [("float16", "float32"), ("float32", "float16"),
                                    ("float32", "int32"), ("float16", "int32"),
                                    ("int32", "uint32"), ("int32", "int64")])
def test_inplace_casts_as_numpy(device: gpucore.Device, dtypes: tuple[str, str]) -> None:
    """numpy's in-place ufuncs compute in the operands' common dtype and cast the result
    back under 'same_kind' (float16 += float32 adds in float32); host int64 data is int32."""
    mine, theirs = (np.dtype(d) for d in dtypes)
    if np.float16 in (mine, theirs) and not device.has_f16:
        pytest.skip(f"{device.backend} adapter has no shader-f16")
    rng = np.random.default_rng(7)
    a = random_array(rng, (3, 67), mine, 1, 9)
    t = Tensor.from_numpy(a, device=device)
    view = t.reshape(-1)
    for op in [operator.iadd, operator.isub, operator.imul, operator.ifloordiv]:
        other = random_array(rng, (67,), theirs, 1, 5)
        a = op(a, other)
        op(t, other if theirs == np.int64 else Tensor.from_numpy(other, device=device))
        assert t.dtype == mine
        np.testing.assert_allclose(view.numpy(), a.reshape(-1), rtol=1e-3 if mine == np.float16
                                   else 1e-6)
        a = t.numpy()  # go on from the same values: float16 rounds each step


def test_inplace_refuses_with_numpys_message(device: gpucore.Device) -> None:
    _, i = pair(device, (3, 4), np.int32)
    _, f = pair(device, (3, 4), np.float32)
    u = Tensor.from_numpy(np.ones(4, np.uint32), device=device)
    for target, other in [(i, f), (i, 0.5), (i, np.float32(2)), (u, i[0])]:
        host = target.numpy()
        with pytest.raises(TypeError) as numpy_error:
            host += other.numpy() if isinstance(other, Tensor) else other
        with pytest.raises(TypeError, match=re.escape(str(numpy_error.value))):
            target += other
    np.testing.assert_array_equal(i.numpy(), pair(device, (3, 4), np.int32)[0])  # untouched


def test_increment_through_an_index(device: gpucore.Device) -> None:
    a, t = pair(device, (4, 6))
    t[1:, ::2] += 10
    a[1:, ::2] += 10
    t[-1] *= -1
    a[-1] *= -1
    np.testing.assert_array_equal(t.numpy(), a)
    gpustd.add(t, 1)  # the functions still return new Tensors
    np.testing.assert_array_equal(t.numpy(), a)
