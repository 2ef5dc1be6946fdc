"""The DiT blocks' fused paths on a device with matrix units (emulated on lavapipe): the joint
attention's to_out applying adaLN-Zero's gated residual in its GEMM (JointAttention.gated)
against its forward then the gated pass, and the adaLN norms reading their shift and scale in
place (transformer_ops.Modulation) against the copied chunks."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import emulated_tiles, matrix_device

import gpucore
from diffusion.models.dit_layers import JointAttention
from diffusion.models.transformer_ops import Modulation, chunks, gated_add, norm_modulate
from gpustd import Tensor
from gpustd.gemm import matrix_fused
from gpustd.gemm import matrix_units as sm
from gpustd.nn import _attention_subgroup_matrix


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    return matrix_device(device)


def _f16(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float16)


def test_attention_gated_equals_forward_then_gated_add(device: gpucore.Device,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if not (device.has_f16 and sm.available(device)):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    # q, k and v a GEMM each: both sides project alike, and the parts kernel (tested in
    # tests/gpustd) is 45 s of compiling on emulated matrix units
    monkeypatch.setattr(importlib.import_module("gpustd.nn.linear"), "PARTS", False)
    # emulated units: both sides' GEMMs in their tiles with one fragment a subgroup (conftest)
    # and the portable attention (the matrix-unit one is tests/gpustd's; both sides attend
    # alike): 23 -> 5 s of CI's CPU
    emulated_tiles(monkeypatch, device, (sm, "record_gemm_matrix"),
                   (matrix_fused, "record_gemm_gated_add"))
    if any(c.emulated for c in device.info.matrix_configs):
        monkeypatch.setattr(_attention_subgroup_matrix, "available", lambda device: False)
    rng = np.random.default_rng(47)
    dim, heads, head_dim = 128, 2, 64
    attn = JointAttention(dim, heads, head_dim, {"dtype": np.float16, "device": device},
                          qk_norm=True, context=True)
    attn.load_state_dict({name: _f16(rng, *p.shape, scale=0.1) + (1 if "norm" in name else 0)
                          for name, p in attn.named_parameters()})
    x, context, residual = (Tensor.from_numpy(_f16(rng, 2, length, dim), device=device)
                            for length in (64, 64, 64))
    gate = Tensor.from_numpy(_f16(rng, 2, 1, dim), device=device)
    got, got_text = attn.gated(residual, gate, x, context)
    image, text = attn(x, context)
    want = gated_add(residual, gate, image).numpy().astype(np.float64)
    assert got_text is not None and text is not None
    assert np.array_equal(got_text.numpy(), text.numpy())
    # the epilogue's values are the two passes' within four f16 ulps (their bits on lavapipe;
    # an H200 under Dawn gave more than one ulp here and there: tests/gpustd/test_linear_gelu),
    # plus the two passes' rounding of to_out's product to f16 before the gated add (gate
    # times one ulp of it): where the residual cancels the product, many ulps of the sum (an
    # H100 under Dawn keeps the product in f32 there)
    values = got.numpy().astype(np.float64)
    if device.info.type == "cpu":
        assert np.array_equal(values, want)
    larger = np.maximum(np.abs(values), np.abs(want)).astype(np.float16)
    rounded = np.abs(gate.numpy().astype(np.float64)) * np.spacing(np.abs(image.numpy()))
    assert (np.abs(values - want) <= 4 * np.spacing(larger).astype(np.float64) + rounded).all()


def test_modulation_norm_reads_chunks_in_place(device: gpucore.Device) -> None:
    if not device.has_f16:
        pytest.skip(f"{device.info.label} has no shader-f16")
    rng = np.random.default_rng(48)
    x = Tensor.from_numpy(_f16(rng, 2, 9, 40, scale=3.0), device=device)
    emb = Tensor.from_numpy(_f16(rng, 2, 6 * 40), device=device)
    mods, copies = Modulation(emb, 6), chunks(emb, 6)
    got = mods.norm(x, shift=3, scale=4).numpy()
    assert np.array_equal(got, norm_modulate(x, copies[3], copies[4]).numpy())
    assert np.array_equal(mods[-1].numpy(), copies[5].numpy()) and mods[5] is mods[-1]
    with pytest.raises(IndexError, match="chunk 6 of 6"):
        mods[6]
