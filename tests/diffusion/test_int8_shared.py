"""One quantization per shared input under `--int8`: nn.Linear.each (and int8_linears) quantize
an input once for the W8A8 layers that read it (attention's q, k and v; SD3's context
projections; FLUX's single blocks' MLP beside its q, k and v), each result bit for bit what
the layer alone gives; tiny FLUX and SD 3 steps are the same bytes as with one quantization
per layer, with fewer quantizations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import host_variant_on_first_adapter

import gpucore
import gpustd.nn.int8_linear as int8_module
import gpustd.nn.int8_rows as int8_rows
from diffusion.models import FluxTransformer2DModel, SD3Transformer2DModel
from diffusion.models.int8 import calibrate, quantize_linears
from gpustd import Tensor
from gpustd.nn import Linear
from gpustd.nn.int8_linear import int8_linears, quantize_weight

TINY_FLUX: dict[str, Any] = dict(
    patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=12,
    guidance_embeds=True, axes_dims_rope=(4, 6, 6))
TINY_SD3: dict[str, Any] = dict(
    sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=32,
    pooled_projection_dim=12, out_channels=4, pos_embed_max_size=8, qk_norm="rms_norm",
    dual_attention_layers=())


class _Counted:
    """quantize_rows, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.wrapped = int8_module.quantize_rows

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.wrapped(*args, **kwargs)


def _one_by_one(x: Tensor, layers: list[Linear]) -> list[Tensor]:
    return [layer(x) for layer in layers]


def test_each_quantizes_a_shared_input_once(device: gpucore.Device,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    dtype = np.float16 if device.has_f16 else np.float32
    rng = np.random.default_rng(3)
    layers = []
    for n, bias in ((12, True), (7, False), (12, True), (5, True), (9, True)):
        layer = Linear(21, n, bias, dtype=dtype, device=device)
        layer.load_state_dict({k: rng.standard_normal(v.shape).astype(dtype)
                               for k, v in layer.named_parameters()})
        layers.append(layer)
    x = Tensor.from_numpy(rng.standard_normal((3, 13, 21)).astype(dtype), device=device)
    for layer in layers[:3]:
        layer.weight = quantize_weight(layer.weight)  # type: ignore[assignment]
    layers[4].weight = quantize_weight(  # smoothed: a quantization of its own
        layers[4].weight, act_absmax=np.abs(x.numpy()).reshape(-1, 21).max(0))
    want = [y.numpy() for y in _one_by_one(x, layers)]
    counted = _Counted()
    monkeypatch.setattr(int8_module, "quantize_rows", counted)
    got = [y.numpy() for y in Linear.each(x, layers)]
    assert counted.calls == 2  # the three plain W8A8 layers share one; the smoothed has its own
    for g, w in zip(got, want):
        assert g.shape == w.shape and np.array_equal(g, w)
    with pytest.raises(ValueError, match="must share one smoothing"):
        int8_linears(x, [layers[0].weight, layers[4].weight],  # type: ignore[list-item]
                     [None, None])


def _inputs(model: str, dtype: Any, device: gpucore.Device) -> tuple[Any, ...]:
    rng = np.random.default_rng(8)

    def put(*shape: int) -> Tensor:
        return Tensor.from_numpy(rng.standard_normal(shape).astype(dtype), device=device)

    if model == "flux":
        img = np.stack(np.meshgrid(np.zeros(1), np.arange(3), np.arange(5), indexing="ij"),
                       -1).reshape(-1, 3)
        return (put(1, 15, 16), put(1, 6, 24), put(1, 12), [0.6], img, np.zeros((6, 3)),
                [3.5])
    return put(2, 4, 6, 10), put(2, 5, 24), put(2, 12), [0.6, 0.6]


@pytest.mark.parametrize(("model", "smooth"), [("flux", False), ("sd3", False), ("flux", True)])
def test_step_same_bytes_with_fewer_quantizations(device: gpucore.Device, model: str,
                                                  smooth: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny step (one double and one single block for FLUX, one joint block for SD 3),
    ragged token counts, weights scaled so the int8 rounding shows in the output; smooth:
    `--int8 smooth`'s calibration first, the layers of one input sharing one smoothing. The
    same bytes again where the modulated norms and the GELUs quantize the rows they write
    (gpustd.nn.int8_rows), with fewer quantize_rows passes still."""
    host_variant_on_first_adapter(device, "the shared int8 quantization of a DiT")
    dtype = np.float16 if device.has_f16 else np.float32
    kind = FluxTransformer2DModel if model == "flux" else SD3Transformer2DModel
    ours = kind(dict(TINY_FLUX if model == "flux" else TINY_SD3), dtype=dtype, device=device)
    rng = np.random.default_rng(5)
    ours.load_state_dict({k: (rng.standard_normal(v.shape) * 0.3).astype(dtype)
                          for k, v in ours.named_parameters()})
    args = _inputs(model, dtype, device)
    float_out = ours(*args).numpy()
    ranges = calibrate(ours, lambda: ours(*args)) if smooth else None
    layers = quantize_linears(ours, ranges)
    if smooth:
        block = ours.single_transformer_blocks[0]
        shared_smooth = block.attn.to_q.weight.smooth
        assert shared_smooth is not None and block.proj_mlp.weight.smooth is shared_smooth
        assert ours.transformer_blocks[0].ff.net[2].weight.smooth is not shared_smooth
    counted = _Counted()
    monkeypatch.setattr(int8_module, "quantize_rows", counted)
    fused = ours(*args).numpy()  # the norms and GELUs quantize their rows (int8_rows)
    fused_calls = counted.calls
    monkeypatch.setattr(int8_rows, "FUSED", False)  # each input quantized by a pass of its own
    counted.calls = 0
    shared = ours(*args).numpy()
    assert counted.calls < layers
    assert fused_calls < counted.calls and np.array_equal(fused, shared)
    monkeypatch.setattr(Linear, "each", staticmethod(_one_by_one))
    counted.calls = 0
    alone = ours(*args).numpy()
    assert counted.calls == layers
    assert np.array_equal(shared, alone)
    assert not np.array_equal(shared, float_out)  # the W8A8 layers ran
    assert np.abs(shared - float_out).max() < 0.1 * np.abs(float_out).max()


def test_sdxl_unet_step_keeps_its_token_projections_float(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """SDXL's transformers read proj_in/proj_out as NCHW GEMMs: --int8 leaves them float (it
    gave them Int8Weights, which those GEMMs refused); q, k and v share one quantization; the
    LayerNorms and GEGLUs quantizing their rows give the same bytes."""
    host_variant_on_first_adapter(device, "the int8 SDXL UNet")
    import sdxl_tiny

    from diffusion.models import UNet2DConditionModel
    from diffusion.models.int8 import targets

    dtype = np.float16 if device.has_f16 else np.float32
    ours = UNet2DConditionModel(dict(sdxl_tiny.UNET_SDXL_TINY), dtype=dtype, device=device)
    rng = np.random.default_rng(6)
    ours.load_state_dict({k: (rng.standard_normal(v.shape) * 0.2).astype(dtype)
                          for k, v in ours.named_parameters()})
    keys = [key for key, _ in targets(ours)]
    assert keys and not any(key.endswith(("proj_in", "proj_out")) for key in keys)

    def put(*shape: int) -> Tensor:
        return Tensor.from_numpy(rng.standard_normal(shape).astype(dtype), device=device)

    cond = {"text_embeds": put(2, 32),
            "time_ids": Tensor.from_numpy(np.full((2, 6), 64, np.float32), device=device)}
    args = (put(2, 4, 12, 10), Tensor.from_numpy(np.array([500.0, 500.0], np.float32),
                                                 device=device), put(2, 7, 64))
    float_out = ours(*args, cond).numpy()
    layers = quantize_linears(ours)
    assert layers == len(keys)
    counted = _Counted()
    monkeypatch.setattr(int8_module, "quantize_rows", counted)
    fused = ours(*args, cond).numpy()  # the norms and GEGLUs quantize their rows (int8_rows)
    fused_calls, counted.calls = counted.calls, 0
    monkeypatch.setattr(int8_rows, "FUSED", False)
    shared = ours(*args, cond).numpy()
    assert np.array_equal(fused, shared) and fused_calls < counted.calls
    monkeypatch.setattr(Linear, "each", staticmethod(_one_by_one))
    assert np.array_equal(shared, ours(*args, cond).numpy())
    assert not np.array_equal(shared, float_out)
    assert np.abs(shared - float_out).max() < 0.1 * np.abs(float_out).max()


def test_dual_block_makes_no_unused_norm(device: gpucore.Device,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """SD 3.5 Medium's dual block under `--int8`: both attentions' inputs come from the
    norms that quantize their rows, so the block makes no plain norm of the image stream
    (the model's only one is its output norm); the same bytes as with FUSED off, which
    makes a norm-and-modulation pass for each reader."""
    from gpustd import nn as gpustd_nn

    host_variant_on_first_adapter(device, "the shared int8 quantization of a DiT")
    dtype = np.float16 if device.has_f16 else np.float32
    ours = SD3Transformer2DModel({**TINY_SD3, "dual_attention_layers": (0,)}, dtype=dtype,
                                 device=device)
    rng = np.random.default_rng(6)
    ours.load_state_dict({k: (rng.standard_normal(v.shape) * 0.3).astype(dtype)
                          for k, v in ours.named_parameters()})
    args = _inputs("sd3", dtype, device)
    quantize_linears(ours)
    shapes: list[tuple[int, ...]] = []
    plain = gpustd_nn.layer_norm_modulate  # every plain modulated norm's pass
    monkeypatch.setattr(gpustd_nn, "layer_norm_modulate", lambda x, *args, **kwargs: (
        shapes.append(x.shape) or plain(x, *args, **kwargs)))
    fused = ours(*args).numpy()
    image = (2, 15, 32)  # (batch, 3 x 5 patches, 2 heads x 16)
    assert shapes.count(image) == 1  # norm_out's
    monkeypatch.setattr(int8_rows, "FUSED", False)
    shapes.clear()
    assert np.array_equal(fused, ours(*args).numpy())
    assert shapes.count(image) == 4  # each attention's, the MLP's, norm_out's
