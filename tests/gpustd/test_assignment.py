"""Writing into a Tensor (the in-place operators and ufuncs' out=) against numpy doing the
same to a copy; views (reshapes) of the tensor must see every write, as numpy's do."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from support import assert_close, random_array

import gpucore
import gpustd
from gpustd import Tensor

SHAPE = (5, 7, 3)


def pair(device: gpucore.Device, shape: tuple[int, ...] = SHAPE, dtype: type = np.float32,
         seed: int = 0) -> tuple[np.ndarray, Tensor]:
    a = random_array(np.random.default_rng(seed), shape, dtype, -9, 9)
    return a, Tensor.from_numpy(a, device=device).reshape(shape)


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
