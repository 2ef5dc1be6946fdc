"""Tensor's numpy protocols (gpustd._numpy_api): indexing, numpy functions and ufuncs on
Tensors, the host fallback, pickling; against numpy on the same values."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from support import assert_close, random_array

import gpucore
from gpustd import Tensor


@pytest.fixture
def pair(first_device: gpucore.Device) -> tuple[np.ndarray, Tensor]:
    a = random_array(np.random.default_rng(0), (5, 7, 3))
    return a, Tensor.from_numpy(a, device=first_device)


@pytest.mark.parametrize("key", [
    1, -1, (slice(1, 4),), (slice(None), 2), (Ellipsis, None, slice(0, 2)),
    (None, 4, slice(2, 7), 0), (slice(3, 1),), (Ellipsis,), (slice(-3, None), Ellipsis, 1)])
def test_getitem(pair: tuple[np.ndarray, Tensor], key: object) -> None:
    a, t = pair
    got = t[key]
    assert isinstance(got, Tensor) and got.shape == a[key].shape
    np.testing.assert_array_equal(got.numpy(), a[key])


def test_getitem_refuses_what_it_cannot_do(pair: tuple[np.ndarray, Tensor]) -> None:
    _, t = pair
    for key, match in [(([0, 1.5],), "integer"), ((0, 0, 0, 0), "too many"),
                       ((7,), "out of bounds"), ((Ellipsis, Ellipsis), "single ellipsis"),
                       ((True,), "integers, slices"),  # not t[1], t[:, 0]
                       ((slice(None), False), "integers, slices")]:
        with pytest.raises(IndexError, match=match):
            t[key]


def test_functions_and_ufuncs_stay_on_the_gpu(pair: tuple[np.ndarray, Tensor]) -> None:
    a, t = pair
    b = random_array(np.random.default_rng(1), (3, 4))
    for got, want in [(np.matmul(t, b), a @ b), (np.tensordot(t, b, axes=([2], [0])), a @ b),
                      (np.concatenate([t, t], axis=2), np.concatenate([a, a], 2)),
                      (np.sum(t, axis=(0, 2), keepdims=True), a.sum((0, 2), keepdims=True)),
                      (np.transpose(t, (2, 0, 1)), a.transpose(2, 0, 1)),
                      (np.exp(t) + a, np.exp(a) + a), (a * t, a * a), (np.float32(2) - t, 2 - a),
                      (np.add(t, t, dtype=np.float32), a + a), (t.squeeze(), a),
                      (t[:, :1].squeeze(1), a[:, 0]), (t.max(axis=1), a.max(1))]:
        assert isinstance(got, Tensor)
        assert_close(got.numpy(), want)
    with pytest.raises(ValueError, match="length-1"):
        t.squeeze(0)
    with pytest.raises(ValueError, match="out of bounds"):  # not axis 4 % 3 == 1
        t[:, :1].squeeze(4)


def test_operators_numpy_has(pair: tuple[np.ndarray, Tensor]) -> None:
    a, t = pair
    b = random_array(np.random.default_rng(2), (3, 4))
    for got, want in [(t @ b, a @ b), (b.T @ t[0].T, b.T @ a[0].T), (t @ t[0].T, a @ a[0].T),
                      (+t, a)]:
        assert isinstance(got, Tensor)
        assert_close(got.numpy(), want)
    assert (+t).buffer is not t.buffer  # numpy's +a is a copy


def test_scalar_conversions(first_device: gpucore.Device) -> None:
    t = Tensor.from_numpy(np.array([[2.75]], np.float32), device=first_device)
    assert float(t[0, 0]) == 2.75 and int(t.reshape(())) == 2
    with pytest.raises(TypeError, match="only 0-dimensional arrays"):
        float(t)


def test_host_arrays_meet_integer_tensors_as_numpy(first_device: gpucore.Device) -> None:
    # ndarray * Tensor goes through np.multiply: it uploaded the array as float32 and then
    # refused the int32 Tensor, where Tensor * ndarray promoted
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    t = Tensor.from_numpy(a, device=first_device)
    half = np.full(3, 0.5)
    for got in (half * t, t * half, np.multiply(half, t)):
        assert isinstance(got, Tensor) and got.dtype == np.float32
        assert_close(got.numpy(), a * half)


def test_tensordot_over_an_empty_axis_is_zeros(pair: tuple[np.ndarray, Tensor]) -> None:
    _, t = pair
    got = np.tensordot(t[..., :0], np.ones((0, 4), np.float32), axes=1)
    assert isinstance(got, Tensor)
    np.testing.assert_array_equal(got.numpy(), np.zeros((5, 7, 4), np.float32))


def test_numpy_functions_gpustd_lacks_run_on_host_copies(pair: tuple[np.ndarray, Tensor]) -> None:
    a, t = pair
    assert np.allclose(t, a) and np.array_equal(t, a)
    assert_close(np.sin(t), np.sin(a))
    assert_close(np.cumprod(t, axis=1), np.cumprod(a, axis=1))


def test_pickle_round_trip(pair: tuple[np.ndarray, Tensor]) -> None:
    a, t = pair
    back = pickle.loads(pickle.dumps(t))
    assert back.shape == t.shape and back.dtype == t.dtype
    np.testing.assert_array_equal(back.numpy(), a)
