"""gpustd.nn.quantized_linear: the GEMM that reads Q8_0 / Q4_K blocks itself equals numpy's
dequantize-then-matmul within the dtype's rounding, and the dequantize-into-a-scratch path bit
for bit (the same kernel configuration on an adapter without matrix units)."""

from __future__ import annotations

import numpy as np
import pytest

import gpucore
import gpustd
from gpustd.gemm import matrix_units
from gpustd.nn import GEGLU, Linear
from gpustd.nn.linear import linear, linear_geglu
from gpustd.nn.quantized_linear import (
    FUSED,
    fuses,
    quantized_linear,
    quantized_linear_geglu,
)
from gpustd.quant import FORMATS, QuantizedTensor, dequantize

gguf = pytest.importorskip("gguf", reason="the reference is the gguf package (diffusion extra)")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

TOL = {np.float32: 1e-5, np.float16: 4e-3}


def _weight(rng: np.random.Generator, name: str, n: int, k: int) -> np.ndarray:
    """Raw blocks of an n x k weight: gguf's quantizer for Q8_0 and Q5_0; random Q4_K blocks
    with small finite f16 scales (gguf-py only reads that format)."""
    if name != "q4_k":
        return gguf_quantize(rng.standard_normal((n, k)).astype(np.float32),
                             gguf.GGMLQuantizationType[name.upper()])
    spec = FORMATS[name]
    raw = rng.integers(0, 256, (n * k // spec.values, spec.nbytes), dtype=np.uint8)
    for at in (0, 2):
        scales = (rng.standard_normal(len(raw)) * 0.01).astype(np.float16)
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(-1, 2)
    return raw


def _case(device: gpucore.Device, name: str, dtype: type, n: int, k: int, m: int, seed: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, QuantizedTensor]:
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.backend} has no shader-f16")
    rng = np.random.default_rng(seed)
    raw = _weight(rng, name, n, k)
    dense = gguf_dequantize(raw, gguf.GGMLQuantizationType[name.upper()]).reshape(n, k)
    x = rng.standard_normal((m, k)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    weight = QuantizedTensor.from_bytes(raw, (n, k), name, dtype=dtype, device=device)
    return x, bias, dense.astype(dtype).astype(np.float64), weight


def _close(got: np.ndarray, want: np.ndarray, dtype: type) -> None:
    error = np.abs(got.astype(np.float64) - want).max() / np.abs(want).max()
    assert error < TOL[dtype], error


# rows, output and input sizes that fill no tile: 37 x 45 (K: 9 Q8_0 blocks, 2 Q4_K ones, 5 Q5_0)
@pytest.mark.parametrize("name, k", [("q8_0", 288), ("q4_k", 512), ("q5_0", 160)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_linear_reads_the_blocks(first_device: gpucore.Device, name: str, k: int,
                                 dtype: type) -> None:
    x, bias, dense, weight = _case(first_device, name, dtype, 45, k, 37, seed=k)
    xs, bs = (gpustd.asarray(v, device=first_device) for v in (x, bias))
    got = quantized_linear(xs, weight, bs).numpy()
    _close(got, x.astype(np.float64) @ dense.T + bias, dtype)
    scratch = linear(xs, dequantize(weight), bs).numpy()
    if first_device.info.type == "cpu":
        # a CPU adapter's float GEMM is its direct kernel (gpustd/gemm/cpu.py), unsplit where
        # the portable kernel's rule splits K: the same sums in another order
        _close(got, scratch.astype(np.float64), dtype)
    elif dtype == np.float32 or not matrix_units.available(first_device):
        # the same portable kernel and order as the scratch path: the same bits (on the matrix
        # units the scratch path's float16 GEMM adds in another order)
        np.testing.assert_array_equal(got, scratch)
    residual = gpustd.asarray(np.ones((37, 45), dtype), device=first_device)
    quantized_linear(xs, weight, bs, add_to=residual)
    _close(residual.numpy(), x.astype(np.float64) @ dense.T + bias + 1, dtype)


@pytest.mark.parametrize("name", ["q8_0", "q4_k"])
def test_geglu_and_the_layers_take_the_fused_path(first_device: gpucore.Device,
                                                  name: str) -> None:
    x, bias, dense, weight = _case(first_device, name, np.float32, 2 * 23, 256, 19, seed=7)
    xs, bs = (gpustd.asarray(v, device=first_device) for v in (x, bias))
    h = x.astype(np.float64) @ dense.T + bias
    from scipy.special import erf
    value, gate = h[:, :23], h[:, 23:]
    _close(quantized_linear_geglu(xs, weight, bs).numpy(),
           value * gate * 0.5 * (1 + erf(gate / np.sqrt(2))), np.float32)
    scratch = linear_geglu(xs, dequantize(weight), bs).numpy()
    layer = GEGLU(256, 23, device=first_device)
    layer.proj.weight, layer.proj.bias = weight, bs
    assert fuses(weight, xs)
    if first_device.info.type == "cpu":  # the float path: the direct GEMM, the gate apart
        _close(layer(xs).numpy(), scratch.astype(np.float64), np.float32)
    else:
        np.testing.assert_array_equal(layer(xs).numpy(), scratch)
    linear_layer = Linear(256, 46, device=first_device)
    linear_layer.weight, linear_layer.bias = weight, bs
    fused = linear_layer(xs).numpy()
    FUSED.enabled = False
    try:
        assert not fuses(weight, xs)
        if first_device.info.type == "cpu":  # the scratch path's GEMM: the direct kernel
            _close(linear_layer(xs).numpy(), fused.astype(np.float64), np.float32)
        else:
            np.testing.assert_array_equal(linear_layer(xs).numpy(), fused)
    finally:
        FUSED.enabled = True


def test_formats_it_does_not_read_are_refused(first_device: gpucore.Device) -> None:
    raw = gguf_quantize(np.ones((4, 32), np.float32), gguf.GGMLQuantizationType.Q5_1)
    weight = QuantizedTensor.from_bytes(raw, (4, 32), "q5_1", device=first_device)
    x = gpustd.asarray(np.ones((2, 32), np.float32), device=first_device)
    assert not fuses(weight, x)
    with pytest.raises(ValueError, match="dequantize it"):
        quantized_linear(x, weight)
    q8 = QuantizedTensor.from_bytes(
        gguf_quantize(np.ones((4, 32), np.float32), gguf.GGMLQuantizationType.Q8_0), (4, 32),
        "q8_0", device=first_device)
    with pytest.raises(ValueError, match="input features"):
        quantized_linear(gpustd.asarray(np.ones((2, 31), np.float32), device=first_device), q8)
