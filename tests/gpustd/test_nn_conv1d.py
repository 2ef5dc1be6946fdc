"""gpustd.nn.conv1d and conv_transpose1d (one-row conv2d / conv_transpose2d, which now takes
groups) against torch CPU in float64: the vocoders' dilated, strided, depthwise layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import assert_close, random_array

import gpucore
from gpustd import Tensor, nn


def _up(device: gpucore.Device, a: np.ndarray | None) -> Tensor | None:
    return None if a is None else Tensor.from_numpy(a, device=device)


def _t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(a.astype(np.float64))


@pytest.mark.parametrize("x_shape,w_shape,kw", [
    ((2, 6, 37), (5, 6, 7), dict(padding=3)),  # a vocoder's conv_in
    ((1, 4, 29), (4, 4, 3), dict(padding=5, dilation=5)),  # a resblock's dilated conv
    ((1, 6, 31), (6, 1, 12), dict(stride=2, groups=6)),  # anti-alias low-pass, depthwise
])
def test_conv1d_matches_torch(device: gpucore.Device, x_shape, w_shape, kw) -> None:
    rng = np.random.default_rng(5)
    x, w, b = (random_array(rng, s) for s in (x_shape, w_shape, (w_shape[0],)))
    ref = F.conv1d(_t(x), _t(w), _t(b), **kw).numpy()
    got = nn.conv1d(_up(device, x), _up(device, w), _up(device, b), **kw)
    assert_close(got.numpy(), ref, tol=1e-5)
    add = random_array(rng, ref.shape)
    fused = nn.conv1d(_up(device, x), _up(device, w), _up(device, b), add=_up(device, add),
                      negative_slope=0.1, **kw)
    assert_close(fused.numpy(), F.leaky_relu(torch.from_numpy(ref), 0.1).numpy() + add,
                 tol=1e-5)


@pytest.mark.parametrize("channels,out_g,kernel,stride,padding,groups", [
    (6, 3, 16, 6, 5, 1),  # LTX-2 vocoder's first upsampler (scaled)
    (4, 2, 15, 5, 5, 1),  # an odd kernel
    (5, 1, 12, 2, 0, 5),  # anti-alias upsampling: one filter per channel
    (6, 2, 4, 2, 1, 3),  # grouped
])
def test_conv_transpose1d_matches_torch(device: gpucore.Device, channels, out_g, kernel,
                                        stride, padding, groups) -> None:
    rng = np.random.default_rng(6)
    x = random_array(rng, (2, channels, 13))
    w, b = random_array(rng, (channels, out_g, kernel)), random_array(rng, (out_g * groups,))
    ref = F.conv_transpose1d(_t(x), _t(w), _t(b), stride=stride, padding=padding,
                             groups=groups).numpy()
    got = nn.conv_transpose1d(_up(device, x), _up(device, w), _up(device, b), stride=stride,
                              padding=padding, groups=groups)
    assert_close(got.numpy(), ref, tol=1e-5)


def test_conv1d_bad_input_says_what(device: gpucore.Device) -> None:
    x = _up(device, np.zeros((1, 4, 9), np.float32))
    with pytest.raises(ValueError, match="weight must be 3-D"):
        nn.conv1d(x, _up(device, np.zeros((4, 4, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="groups must be a positive int dividing"):
        nn.conv_transpose1d(x, _up(device, np.zeros((4, 1, 4), np.float32)), stride=2,
                            groups=3)
