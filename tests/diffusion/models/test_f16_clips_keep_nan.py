"""The DiTs' float16 streams are clipped to +-65504 where diffusers clamps them, and NaN stays
NaN as torch's clamp keeps it: a WGSL max drops NaN on GPUs (and on llvmpipe), which turned a
network's NaN into -65504 and the run's NaN check (diffusion/pipelines/finite.py) into a
noisy picture that said nothing. The fused GEMM epilogue's clip:
tests/gpustd/test_linear_gelu.py."""

from __future__ import annotations

import numpy as np

import gpucore
from diffusion.models import transformer_ops, z_image_blocks
from gpustd import Tensor


def _half(values: np.ndarray, device: gpucore.Device) -> Tensor:
    return Tensor.from_numpy(values.astype(np.float16), device=device)


def test_the_clipped_float16_kernels_keep_nan(f16_device: gpucore.Device) -> None:
    residual = np.array([[[np.nan, 60000.0, -60000.0, 1.0, 2.0]]])
    gate = np.array([[[1.0, 1.0, 1.0, 1.0, 1.0]]])
    y = np.array([[[1.0, 20000.0, -20000.0, np.nan, 3.0]]])
    r, g, v = (_half(a, f16_device) for a in (residual, gate, y))
    got = transformer_ops.gated_add(r, g, v).numpy()[0, 0]
    np.testing.assert_array_equal(got, np.array([np.nan, 65504, -65504, np.nan, 5], np.float16))
    got = z_image_blocks._gated(r, g, v).numpy()[0, 0]  # Z-Image's: tanh(gate)
    assert np.isnan(got[[0, 3]]).all() and (got[[1, 2]] == [65504, -65504]).all()
    np.testing.assert_allclose(got[4], 2 + np.tanh(1.0) * 3, rtol=1e-3)
    up = _half(np.array([np.nan, 60000.0, 2.0, 1.0, 1.0]), f16_device)
    gates = _half(np.array([1.0, 60000.0, np.nan, 0.0, 1.0]), f16_device)
    got = z_image_blocks._swiglu_clipped(gates, up).numpy()
    assert np.isnan(got[[0, 2]]).all() and got[1] == 65504 and got[3] == 0
    np.testing.assert_allclose(got[4], 1 / (1 + np.exp(-1.0)), rtol=1e-3)
