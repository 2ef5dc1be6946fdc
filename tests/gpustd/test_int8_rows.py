"""Producers that quantize what they write (gpustd/nn/int8_rows.py): the modulated LayerNorm and
the GELU / GEGLU give the same float values as the separate passes (nn.layer_norm, the
elementwise modulation, nn.gelu / geglu) and the same int8 rows and scales as quantize_rows of
those values, bit for bit; the values themselves against numpy; the W8A8 layers take the rows
instead of quantizing again. Random inputs, rows whose widths are not multiples of 4 (words)
nor of the lanes a row (layer_norm's 32, 64 and 256)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from conftest import host_variant_on_first_adapter

import gpucore
import gpustd.nn.int8_linear as int8_module
from diffusion.models.transformer_ops import modulate
from gpustd import Tensor, nn
from gpustd.nn.int8_linear import int8_linear, quantize_rows, quantize_weight
from gpustd.nn.int8_rows import Int8Rows, gelu_int8, layer_norm_int8


def _dtype(device: gpucore.Device) -> Any:
    return np.float16 if device.has_f16 else np.float32


def _same_rows(got: Int8Rows, values: Tensor, smooth: Tensor | None) -> None:
    want_words, want_scales = quantize_rows(values.reshape(-1, values.shape[-1]), smooth)
    assert got.shape == values.shape and got.dtype == values.dtype
    assert np.array_equal(got.numpy(), values.numpy())
    assert np.array_equal(got.words.numpy(), want_words.numpy())
    assert np.array_equal(got.scales.numpy(), want_scales.numpy())
    assert got.smooth is smooth


def _smooth(device: gpucore.Device, k: int, rng: np.random.Generator) -> Tensor:
    return Tensor.from_numpy(rng.uniform(0.2, 3.0, k).astype(np.float32), device=device)


@pytest.mark.parametrize(("shape", "smoothed"), [((2, 7, 13), False), ((3, 2, 1030), True)])
def test_modulated_layer_norm_equals_the_separate_passes(device: gpucore.Device,
                                                         shape: tuple[int, ...],
                                                         smoothed: bool) -> None:
    dtype = _dtype(device)
    rng = np.random.default_rng(len(shape) + shape[-1])
    batch, d = shape[0], shape[-1]
    x_host = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    x_host[0, 0] = 0  # a constant row: every value 0 before the modulation
    x = Tensor.from_numpy(x_host, device=device)
    shift_host = rng.standard_normal((batch, 1, d)).astype(dtype)
    scale_host = rng.standard_normal((batch, 1, d)).astype(dtype)
    shift, scale = (Tensor.from_numpy(h, device=device) for h in (shift_host, scale_host))
    smooth = _smooth(device, d, rng) if smoothed else None
    got = layer_norm_int8(x, shift, scale, eps=1e-6, smooth=smooth)
    want = modulate(nn.layer_norm(x, None, None, eps=1e-6), shift, scale)
    _same_rows(got, want, smooth)
    if not smoothed:
        plain = layer_norm_int8(x, eps=1e-6)  # no modulation: layer_norm's values
        _same_rows(plain, nn.layer_norm(x, None, None, eps=1e-6), None)
        weight, bias = scale.reshape(batch, d)[0], shift.reshape(batch, d)[1]  # an affine norm
        affine = layer_norm_int8(x, weight=weight, bias=bias)
        _same_rows(affine, nn.layer_norm(x, weight, bias), None)
    # the values against numpy (float64 statistics, f16 rounding between norm and modulation)
    xs = x_host.astype(np.float64)
    normed = ((xs - xs.mean(-1, keepdims=True)) / np.sqrt(xs.var(-1, keepdims=True) + 1e-6))
    ref = normed.astype(dtype).astype(np.float64) * (1 + scale_host) + shift_host
    tol = 4e-3 if dtype == np.float16 else 1e-5
    assert np.abs(got.numpy().astype(np.float64) - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize(("shape", "approximate", "gated", "smoothed"), [
    ((3, 5, 37), "tanh", False, False), ((2, 3, 2 * 301), "none", True, True)])
def test_gelu_equals_the_separate_passes(device: gpucore.Device, shape: tuple[int, ...],
                                         approximate: str, gated: bool, smoothed: bool) -> None:
    dtype = _dtype(device)
    rng = np.random.default_rng(shape[-1])
    x_host = (rng.standard_normal(shape) * 2).astype(dtype)
    x = Tensor.from_numpy(x_host, device=device)
    k = shape[-1] // 2 if gated else shape[-1]
    smooth = _smooth(device, k, rng) if smoothed else None
    got = gelu_int8(x, approximate=approximate, gated=gated, smooth=smooth)
    want = (nn.geglu if gated else nn.gelu)(x, approximate=approximate)
    _same_rows(got, want, smooth)
    # the values against numpy in float64 (torch's F.gelu formulas)
    t = x_host.astype(np.float64)
    value, gate = (t[..., :k], t[..., k:]) if gated else (1.0, t)
    if approximate == "tanh":
        ref = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate ** 3)))
    else:
        ref = 0.5 * gate * (1 + np.vectorize(math.erf)(gate / np.sqrt(2)))
    ref = value * ref
    tol = 2e-3 if dtype == np.float16 else 1e-5
    assert np.abs(got.numpy().astype(np.float64) - ref).max() <= tol * np.abs(ref).max()


def test_w8a8_layers_take_the_rows(device: gpucore.Device,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """int8_linear of an Int8Rows quantized under its weight's smoothing uses its rows (no
    quantize_rows pass) and gives the separate passes' result; under another smoothing it
    quantizes x itself."""
    host_variant_on_first_adapter(device, "the W8A8 layers' choice of rows")
    dtype = _dtype(device)
    rng = np.random.default_rng(4)
    x = Tensor.from_numpy((rng.standard_normal((2, 9, 70)) * 2).astype(dtype), device=device)
    weight = quantize_weight(Tensor.from_numpy(rng.standard_normal((11, 35)).astype(dtype) * 0.2,
                                               device=device))
    rows = gelu_int8(x, gated=True)
    want = int8_linear(nn.geglu(x), weight).numpy()
    calls = []
    monkeypatch.setattr(int8_module, "quantize_rows",
                        lambda *a, **k: calls.append(1) or quantize_rows(*a, **k))
    assert np.array_equal(int8_linear(rows, weight).numpy(), want) and not calls
    other = gelu_int8(x, gated=True, smooth=_smooth(device, 35, rng))
    assert np.array_equal(int8_linear(other, weight).numpy(), want) and len(calls) == 1


def test_bad_input_says_what_to_do(device: gpucore.Device) -> None:
    dtype = _dtype(device)
    x = Tensor.from_numpy(np.ones((2, 3, 8), dtype), device=device)
    with pytest.raises(ValueError, match="shift must have shape"):
        layer_norm_int8(x, Tensor.from_numpy(np.ones((1, 1, 8), dtype), device=device),
                        Tensor.from_numpy(np.ones((2, 1, 8), dtype), device=device))
    with pytest.raises(ValueError, match="pass shift and scale, or weight and bias"):
        layer_norm_int8(x, x[:, :1], x[:, :1], weight=x[0, 0], bias=x[0, 0])
    with pytest.raises(ValueError, match="smooth must be float32"):
        gelu_int8(x, smooth=Tensor.from_numpy(np.ones(5, np.float32), device=device))
    with pytest.raises(ValueError, match="even dimension"):
        gelu_int8(Tensor.from_numpy(np.ones((2, 7), dtype), device=device), gated=True)
