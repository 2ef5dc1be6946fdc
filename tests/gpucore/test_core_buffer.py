"""Buffer[T]: round trips, partial writes, copies, async reads."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import random_array

import gpucore

SIZES = st.one_of(st.sampled_from([0, 1, 2, 3, 5, 7, 97, 255, 256, 257, 65537]),
                  st.integers(0, 5000))
DTYPES = [np.float32, np.int32, np.uint32]


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=12, deadline=None)
@given(n=SIZES, seed=st.integers(0, 2**32 - 1))
def test_round_trip(device: gpucore.Device, dtype: type, n: int, seed: int) -> None:
    data = random_array(np.random.default_rng(seed), n, dtype, -1000, 1000)
    buf = gpucore.Buffer.from_numpy(data, device=device)
    assert len(buf) == n and buf.nbytes == n * np.dtype(dtype).itemsize
    out = buf.read()
    assert out.dtype == np.dtype(dtype) and out.shape == (n,)
    np.testing.assert_array_equal(out, data)


@settings(max_examples=12, deadline=None)
@given(n=SIZES, seed=st.integers(0, 2**32 - 1))
def test_round_trip_f16(f16_device: gpucore.Device, n: int, seed: int) -> None:
    data = random_array(np.random.default_rng(seed), n, np.float16, -100, 100)
    np.testing.assert_array_equal(gpucore.Buffer.from_numpy(data, device=f16_device).read(), data)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_partial_write_at_offset(f16_device: gpucore.Device, n: int, data: st.DataObject) -> None:
    # float16 makes offsets and lengths that are not whole 4-byte words.
    offset = data.draw(st.integers(0, n - 1))
    count = data.draw(st.integers(0, n - offset))
    rng = np.random.default_rng(n)
    base = random_array(rng, n, np.float16)
    patch = random_array(rng, count, np.float16, 5, 9)
    buf = gpucore.Buffer.from_numpy(base, device=f16_device)
    buf.write(patch, offset)
    expected = base.copy()
    expected[offset:offset + count] = patch
    np.testing.assert_array_equal(buf.read(), expected)


def test_write_errors(device: gpucore.Device) -> None:
    buf = gpucore.Buffer.empty(4, np.float32, device=device)
    with pytest.raises(TypeError, match=r"astype\(np.float32\)"):
        buf.write(np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="overruns"):
        buf.write(np.ones(3, np.float32), offset=2)
    with pytest.raises(ValueError, match="non-negative"):
        gpucore.Buffer(-1, device=device)


def test_copy_from_and_zeros(device: gpucore.Device) -> None:
    data = random_array(np.random.default_rng(1), 1001, np.float32)
    src = gpucore.Buffer.from_numpy(data, device=device)
    dst = gpucore.Buffer.from_numpy(data[::-1].copy(), device=device)
    dst.copy_from(src)
    np.testing.assert_array_equal(dst.read(), data)
    dst.fill_zero()
    np.testing.assert_array_equal(dst.read(), np.zeros_like(data))
    np.testing.assert_array_equal(gpucore.Buffer.zeros(9, np.int32, device=device).read(),
                                  np.zeros(9, np.int32))
    with pytest.raises(TypeError, match="same dtype and length"):
        dst.copy_from(gpucore.Buffer.empty(5, np.float32, device=device))


def test_read_async(device: gpucore.Device) -> None:
    data = random_array(np.random.default_rng(2), 333, np.float32)
    buf = gpucore.Buffer.from_numpy(data, device=device)
    np.testing.assert_array_equal(asyncio.run(buf.read_async()), data)


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_buffer_collected_in_a_cycle_is_not_reused(device: gpucore.Device) -> None:
    """A Buffer in a reference cycle is collected together with its wgpu buffer, whose own
    finalizer frees it in the same pass; the pool must not hand that dead buffer out again."""
    import gc

    doomed = gpucore.Buffer(1000, np.float32, device=device)
    doomed.cycle = doomed
    del doomed
    gc.collect()
    fresh = gpucore.Buffer(1000, np.float32, device=device)  # the same size class
    fresh.write(np.arange(1000, dtype=np.float32))
    np.testing.assert_array_equal(fresh.read(), np.arange(1000, dtype=np.float32))
