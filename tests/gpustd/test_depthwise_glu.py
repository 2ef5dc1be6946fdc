"""gpustd.nn.depthwise_glu (GLUMBConv's depthwise 3x3 convolution and gate in one pass)
against float64 numpy: odd sizes, with and without the SiLU read and the bias, float16."""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close

import gpucore
from gpustd import asarray
from gpustd.nn import depthwise_glu


def _silu(v: np.ndarray) -> np.ndarray:
    return v / (1 + np.exp(-v))


def _expected(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, silu_input: bool
              ) -> np.ndarray:
    x = x.astype(np.float64)
    x = _silu(x) if silu_input else x
    n, c2, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((n, c2, h, wd))
    for dy in range(3):
        for dx in range(3):
            conv += w[None, :, 0, dy, dx, None, None] * padded[:, :, dy:dy + h, dx:dx + wd]
    if b is not None:
        conv += b[None, :, None, None]
    a, g = conv[:, : c2 // 2], conv[:, c2 // 2:]
    return a * _silu(g)


@pytest.mark.parametrize("silu_input", [False, True])
def test_matches_numpy(device: gpucore.Device, silu_input: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 10, 5, 7)).astype(np.float32)
    w = rng.standard_normal((10, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    got = depthwise_glu(asarray(x, device=device), asarray(w, device=device),
                        asarray(b, device=device), silu_input=silu_input).numpy()
    assert_close(got, _expected(x, w, b, silu_input), tol=1e-5)
    unbiased = depthwise_glu(asarray(x, device=device), asarray(w, device=device), None)
    assert_close(unbiased.numpy(), _expected(x, w, None, False), tol=1e-5)


def test_float16(f16_device: gpucore.Device) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 6, 9, 4)).astype(np.float16)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float16)
    b = rng.standard_normal(6).astype(np.float16)
    got = depthwise_glu(asarray(x, device=f16_device), asarray(w, device=f16_device),
                        asarray(b, device=f16_device), silu_input=True).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), _expected(x, w, b, True), tol=2e-3)


def test_bad_shapes_get_one_line(first_device: gpucore.Device) -> None:
    x = asarray(np.zeros((1, 5, 3, 3), np.float32), device=first_device)
    with pytest.raises(ValueError, match="even channel count"):
        depthwise_glu(x, asarray(np.zeros((5, 1, 3, 3), np.float32), device=first_device), None)
