"""permute / transpose / swapaxes / concatenate / split / take_slice against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import random_array

import gpucore
import gpustd
from gpustd import shape as sh

SHAPES = st.lists(st.integers(1, 7), min_size=1, max_size=6).map(tuple)


@settings(max_examples=15, deadline=None)
@given(shape=SHAPES, data=st.data())
def test_permute(device: gpucore.Device, shape: tuple[int, ...], data: st.DataObject) -> None:
    axes = data.draw(st.permutations(range(len(shape))))
    x = random_array(np.random.default_rng(len(shape)), shape)
    out = sh.permute(gpustd.Tensor.from_numpy(x, device=device), axes)
    np.testing.assert_array_equal(out.numpy(), np.transpose(x, axes))


@pytest.mark.parametrize("dtype", [np.int32, np.complex64])
def test_permute_other_dtypes(device: gpucore.Device, dtype: type) -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 5, 4)) * 100).astype(dtype)
    if dtype == np.complex64:
        x = x + 1j * rng.standard_normal(x.shape).astype(np.float32)
    out = sh.swapaxes(gpustd.Tensor.from_numpy(x, device=device), 0, 2)
    np.testing.assert_array_equal(out.numpy(), np.swapaxes(x, 0, 2))


def test_nchw_to_nhwc_large(device: gpucore.Device) -> None:
    x = random_array(np.random.default_rng(1), (2, 37, 19, 23))
    out = sh.permute(gpustd.Tensor.from_numpy(x, device=device), (0, 2, 3, 1))
    np.testing.assert_array_equal(out.numpy(), x.transpose(0, 2, 3, 1))


def test_transpose_swapaxes_and_matrix_transpose(device: gpucore.Device) -> None:
    x = random_array(np.random.default_rng(4), (2, 3, 1, 7, 5))
    t = gpustd.Tensor.from_numpy(x, device=device)
    for got, want in [
            (gpustd.transpose(t), x.T),
            (gpustd.transpose(t, (4, 0, 2, 1, 3)), np.transpose(x, (4, 0, 2, 1, 3))),
            (t.transpose(), x.transpose()),
            (t.transpose(1, 0, 4, 3, 2), x.transpose(1, 0, 4, 3, 2)),
            (t.transpose((-1, 0, 1, 2, -2)), x.transpose((-1, 0, 1, 2, -2))),
            (gpustd.swapaxes(t, 0, -1), np.swapaxes(x, 0, -1)),
            (t.swapaxes(1, 3), x.swapaxes(1, 3)), (np.swapaxes(t, 2, 3), x.swapaxes(2, 3)),
            (gpustd.matrix_transpose(t), np.matrix_transpose(x)), (t.mT, x.mT),
            (np.matrix_transpose(t[0, 0]), x[0, 0].mT),
            (t[0, 0, 0, 0].transpose(0), x[0, 0, 0, 0])]:
        assert isinstance(got, gpustd.Tensor)
        np.testing.assert_array_equal(got.numpy(), want)
    with pytest.raises(ValueError, match="at least 2"):
        gpustd.matrix_transpose(t[0, 0, 0, 0])
    with pytest.raises(ValueError, match="not a permutation"):
        t.transpose(0, 1)


@settings(max_examples=15, deadline=None)
@given(shape=SHAPES, data=st.data())
def test_concatenate_and_split(device: gpucore.Device, shape: tuple[int, ...],
                               data: st.DataObject) -> None:
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(0, 5), min_size=1, max_size=4))
    rng = np.random.default_rng(sum(sizes))
    parts = []
    for s in sizes:
        part_shape = list(shape)
        part_shape[axis] = s
        parts.append(random_array(rng, tuple(part_shape)))
    out = sh.concatenate([gpustd.Tensor.from_numpy(p, device=device) for p in parts], axis)
    expected = np.concatenate(parts, axis)
    np.testing.assert_array_equal(out.numpy(), expected)
    cuts = list(np.cumsum(sizes)[:-1])
    for got, want in zip(sh.split(out, cuts, axis), np.split(expected, cuts, axis)):
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32])
def test_concatenate_channels_four_elements_a_lane(device: gpucore.Device, dtype) -> None:
    """The UNet's skip concatenation (every extent a multiple of 4: copied in vec4s) beside
    one whose pixels are not (element by element)."""
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.info.label} has no shader-f16")
    rng = np.random.default_rng(4)
    for hw in ((4, 6), (3, 5)):
        a, b = (random_array(rng, (2, c, *hw)).astype(dtype) for c in (8, 4))
        out = sh.concatenate([gpustd.Tensor.from_numpy(x, device=device) for x in (a, b)], 1)
        np.testing.assert_array_equal(out.numpy(), np.concatenate([a, b], 1))


def test_take_slice_and_equal_split(device: gpucore.Device) -> None:
    x = random_array(np.random.default_rng(2), (4, 6, 5))
    t = gpustd.Tensor.from_numpy(x, device=device)
    np.testing.assert_array_equal(sh.take_slice(t, 1, 4, axis=1).numpy(), x[:, 1:4])
    np.testing.assert_array_equal(sh.take_slice(t, -2, 99, axis=0).numpy(), x[-2:])
    halves = sh.split(t, 2, axis=0)
    np.testing.assert_array_equal(halves[1].numpy(), x[2:])


def test_put_slice(device: gpucore.Device) -> None:
    rng = np.random.default_rng(4)
    x, part = random_array(rng, (2, 7, 5)), random_array(rng, (2, 3, 5))
    t = gpustd.Tensor.from_numpy(x, device=device)
    sh.put_slice(t, gpustd.Tensor.from_numpy(part, device=device), 4, axis=1)
    x[:, 4:7] = part
    np.testing.assert_array_equal(t.numpy(), x)
    for bad, start in ((part, 5), (part[:, :, :4], 0), (part.astype(np.int32), 0)):
        with pytest.raises(ValueError, match=r"put_slice: .* does not fit"):
            sh.put_slice(t, gpustd.Tensor.from_numpy(bad, device=device), start, axis=1)


def test_concatenate_flattened_and_split_numpy_integer(device: gpucore.Device) -> None:
    x = random_array(np.random.default_rng(3), (2, 3))
    t = gpustd.Tensor.from_numpy(x, device=device)
    np.testing.assert_array_equal(sh.concatenate([t, t[:1]], axis=None).numpy(),
                                  np.concatenate([x, x[:1]], axis=None))
    parts = sh.split(t, np.int64(3), axis=1)
    np.testing.assert_array_equal(parts[2].numpy(), x[:, 2:])


def test_shape_errors(device: gpucore.Device) -> None:
    t = gpustd.Tensor.from_numpy(np.ones((2, 3), np.float32), device=device)
    for axes in [(0, 0), (0, 3), (-3, 1), (0, 1, 2)]:  # 3 % 2 == 1 is no axis of t
        with pytest.raises(ValueError, match="not a permutation"):
            sh.permute(t, axes)
    with pytest.raises(ValueError, match="out of range"):
        sh.swapaxes(t, 0, 5)
    with pytest.raises(ValueError, match="differ outside axis"):
        sh.concatenate([t, gpustd.Tensor.from_numpy(np.ones((3, 3), np.float32))], axis=1)
    with pytest.raises(TypeError, match="dtypes differ"):
        sh.concatenate([t, gpustd.Tensor.from_numpy(np.ones((2, 3), np.int32), device=device)])
    with pytest.raises(ValueError, match="equal sections"):
        sh.split(t, 2, axis=1)
