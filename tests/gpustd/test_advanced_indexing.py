"""numpy's advanced indexing on Tensors (gpustd.advanced_indexing): reads and writes through
integer arrays and boolean masks, host data or Tensors, against numpy doing the same; and
the functions under it, gpustd.take and gpustd.flatnonzero."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import random_array

import gpucore
import gpustd
from gpustd import Tensor

SHAPE = (5, 6, 7)
_A = np.array
KEYS = [
    _A([0, 4, -1]), (slice(None), _A([1, -2, 1])), (Ellipsis, _A([[3, 3], [0, 6]])),
    (0, slice(None), _A([1, 2])),  # an integer beside an array: their axes stand in place
    (_A([0, 1]), slice(None), 0),  # ...apart: the arrays' axis goes first
    (_A([0, 1, 4]), _A([2, 3, 5])), (_A([[0], [1]]), slice(1, 4), _A([2, 3, 6])),
    (slice(None, None, -2), _A([1, 2])), (None, _A([1, 2]), None), (_A([1, 2]), None, _A([0, 1])),
    (-1, _A([0, 2]), -1), [[1, 2], [0, 0]], ([],), _A([2]),
]
MASKS = [(6, 7), (5,), (5, 6), (5, 6, 7)]  # the shapes of the masks `mask_key` builds


def tensor_key(key: Any, device: gpucore.Device) -> Any:
    """`key` with its integer arrays as int32 Tensors and its masks as gpustd's bool."""
    def convert(k: Any) -> Any:
        if isinstance(k, (np.ndarray, list)) and np.asarray(k).size:
            array = np.asarray(k)
            dtype = np.uint32 if array.dtype == np.bool_ else np.int32
            return Tensor.from_numpy(array, dtype=dtype, device=device).reshape(array.shape)
        return k
    return tuple(convert(k) for k in key) if isinstance(key, tuple) else convert(key)


def host_key(key: Any) -> Any:
    """`key` with its Tensors read back (numpy's own key)."""
    if isinstance(key, tuple):
        return tuple(host_key(k) for k in key)
    return key.numpy() if isinstance(key, Tensor) else key


def mask_key(shape: tuple[int, ...], a: np.ndarray) -> Any:
    mask = a[(0,) * (a.ndim - len(shape)) + (Ellipsis,)].reshape(-1)[:np.prod(shape)] > 0
    mask = mask.reshape(shape)
    return (slice(None), mask) if shape == SHAPE[1:] else mask


def pair(device: gpucore.Device, shape: tuple[int, ...] = SHAPE, dtype: Any = np.float32,
         seed: int = 0) -> tuple[np.ndarray, Tensor]:
    a = random_array(np.random.default_rng(seed), shape, dtype, -9, 9)
    return a, Tensor.from_numpy(a, device=device).reshape(shape)


@pytest.mark.parametrize("key", KEYS + [f"mask{s}" for s in MASKS], ids=str)
def test_read_and_write_as_numpy(device: gpucore.Device, key: Any) -> None:
    a, t = pair(device)
    if isinstance(key, str):
        key = mask_key(next(s for s in MASKS if f"mask{s}" == key), a)
    view = t.reshape(-1)
    for k in (key, tensor_key(key, device)):
        got = t[k]
        assert got.shape == a[key].shape
        np.testing.assert_array_equal(got.numpy(), a[key])
    value = random_array(np.random.default_rng(1), a[key].shape, np.float32)
    expected = a.copy()
    expected[key] = value
    # numpy's last value wins where a host key repeats an index; through a Tensor key which
    # of a repeated index's values lands is unspecified (the GPU's scatter races)
    positions = np.arange(a.size).reshape(a.shape)[key].reshape(-1)
    repeats = len(np.unique(positions)) < len(positions)
    t[key if repeats else tensor_key(key, device)] = value
    np.testing.assert_array_equal(view.numpy(), expected.reshape(-1))  # views see the writes
    _, t = pair(device)
    t[key] = -2.5
    expected = a.copy()
    expected[key] = -2.5
    np.testing.assert_array_equal(t.numpy(), expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int32])
@pytest.mark.parametrize("size", [1, 257, 3001])  # 3001: a scan of several blocks
def test_masks_read_and_write(device: gpucore.Device, dtype: Any, size: int) -> None:
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.backend} adapter has no shader-f16")
    a, t = pair(device, (size, 3), dtype, seed=size)
    rng = np.random.default_rng(size)
    for mask in [rng.random(size) < 0.3, np.zeros(size, bool), np.ones(size, bool),
                 rng.random((size, 3)) < 0.5]:
        on_gpu = Tensor.from_numpy(mask, device=device).reshape(mask.shape)
        got = t[on_gpu]
        assert got.dtype == dtype and got.shape == a[mask].shape
        np.testing.assert_array_equal(got.numpy(), a[mask])
        values = random_array(rng, a[mask].shape, dtype, -9, 9)
        a[mask] = values  # one value per true element (numpy's putmask-style assignment)
        t[on_gpu] = Tensor.from_numpy(values, device=device).reshape(values.shape)
        np.testing.assert_array_equal(t.numpy(), a)
    a[a > 0] = 7
    t[t > 0] = 7  # one value for all: where(mask, 7, t), nothing read back
    np.testing.assert_array_equal(t.numpy(), a)


def test_repeated_indices_and_regions_that_are_copies(device: gpucore.Device) -> None:
    a, t = pair(device)
    view = t.reshape(-1)
    rng = np.random.default_rng(2)
    for key in [(_A([3, 1, 3, -2, 1]),),  # repeats: numpy's last value wins
                (slice(1, None, 2), 2, _A([0, 6, 0])),  # the region x[1::2, 2] is a copy
                (_A([[4], [0]]), slice(None), _A([1, 1, 5]))]:  # apart: axes moved and back
        value = random_array(rng, a[key].shape, np.float32)
        a[key] = value
        t[key] = value
        np.testing.assert_array_equal(view.numpy(), a.reshape(-1))
    t[_A([2, 0])] = t[_A([0, 2])]  # a value read from the tensor it is written to
    a[_A([2, 0])] = a[_A([0, 2])]
    np.testing.assert_array_equal(t.numpy(), a)


def test_values_broadcast_and_convert(device: gpucore.Device) -> None:
    a, t = pair(device, (4, 9), np.int32)
    for key, value in [(_A([0, 2]), 7.9), ((slice(None), _A([8, 0])), _A([[1.5], [2], [3], [4]])),
                       (_A([True, False, True, True]), np.arange(9)),
                       (a > 0, Tensor.from_numpy(np.array(-3.5, np.float32), device=device))]:
        a[key] = np.asarray(value)
        t[key] = value
        np.testing.assert_array_equal(t.numpy(), a)


def test_errors_as_numpy(device: gpucore.Device) -> None:
    a, t = pair(device, (4, 5))
    int32 = lambda *v: Tensor.from_numpy(np.array(v, np.int32), device=device)  # noqa: E731
    for key in [_A([4]), (slice(None), _A([-6])), (_A([0]), _A([5])), int32(0, 4),
                (slice(None), int32(-6, 1))]:
        with pytest.raises(IndexError) as numpy_error:
            a[host_key(key)]
        with pytest.raises(IndexError, match=str(numpy_error.value)):
            t[key]
        with pytest.raises(IndexError, match=str(numpy_error.value)):
            t[key] = 1.0
    for key in [np.ones(5, bool), (slice(None), np.ones(4, bool)), _A([0.5]),
                Tensor.from_numpy(np.array([1.0], np.float32), device=device),
                (_A([0, 1]), _A([0, 1, 2])), (0, 0, _A([0]))]:
        with pytest.raises(IndexError):
            t[key]
    with pytest.raises(ValueError, match=r"shape mismatch: value array of shape \(3,5\)"):
        t[[0, 1]] = np.ones((3, 5))
    with pytest.raises(ValueError, match=r"value array of shape \(3,\) could not be broadcast "
                                         r"to indexing result of shape \(2,5\)"):
        t[_A([True, False, True, False])] = np.ones(3)
    with pytest.raises(ValueError, match="cannot assign 3 input values to the 20 output"):
        t[np.ones((4, 5), bool)] = np.ones(3)
    np.testing.assert_array_equal(t.numpy(), a)  # nothing written by a refused assignment


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_random_index_arrays(device: gpucore.Device, data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from([(1,), (13,), (4, 1, 6), (3, 5, 2, 7)]))
    a, t = pair(device, shape, seed=len(shape))
    key: list[Any] = []
    count = data.draw(st.integers(0, 4))  # the arrays' length: they broadcast together
    for n in shape:
        kind = data.draw(st.sampled_from(["array", "slice", "int"]))
        if kind == "array":
            key.append(np.array(data.draw(st.lists(st.integers(-n, n - 1), min_size=count,
                                                   max_size=count)), int))
        elif kind == "int":
            key.append(data.draw(st.integers(-n, n - 1)))
        else:
            key.append(slice(None, None, data.draw(st.sampled_from([1, 2, -1]))))
    if not any(isinstance(k, np.ndarray) for k in key):
        key[0] = np.zeros(count, int)
    expected = a[tuple(key)]
    np.testing.assert_array_equal(t[tuple(key)].numpy(), expected)
    value = random_array(np.random.default_rng(3), expected.shape, np.float32)
    a[tuple(key)] = value
    t[tensor_key(tuple(key), device)] = value
    if sum(isinstance(k, np.ndarray) for k in key) > 1 or all(
            len(np.unique(k)) == len(k) for k in key if isinstance(k, np.ndarray)):
        np.testing.assert_array_equal(t.numpy(), a)  # one Tensor with repeats: any may land


def test_take_and_flatnonzero(device: gpucore.Device) -> None:
    a, t = pair(device, (3, 70), np.int32)
    indices = np.array([[69, -70], [5, 5]])
    for axis in [None, 1, -2]:
        expected = np.take(a, indices if axis != -2 else indices % 3, axis=axis)
        got = np.take(t, indices if axis != -2 else indices % 3, axis=axis)  # __array_function__
        assert isinstance(got, Tensor)
        np.testing.assert_array_equal(got.numpy(), expected)
    with pytest.raises(IndexError, match="index 210 is out of bounds"):
        gpustd.take(t, [210])
    x = np.array([0, 1.5, np.nan, -0.0, -2, 0], np.float32)
    got = np.flatnonzero(Tensor.from_numpy(x, device=device))
    np.testing.assert_array_equal(got.numpy(), np.flatnonzero(x))
    assert got.dtype == np.int32
    assert gpustd.flatnonzero(gpustd.zeros((0, 3), device=device)).shape == (0,)
