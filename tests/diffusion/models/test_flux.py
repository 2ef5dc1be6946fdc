"""The FLUX transformer against diffusers' FluxTransformer2DModel on torch CPU (tiny, random)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from conftest import ADAPTERS, host_variant_on_first_adapter
from flow_tiny import FLUX_TINY
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models import FluxTransformer2DModel
from diffusion.models.transformer_ops import gated_add
from diffusion.pipelines.flow.flux import image_ids

# f32 end to end: the worst element's |error| / (rms + |expected|) (support.assert_close's
# rule) measured on lavapipe is 2.9e-5 (the replayed step; a plain call 6.3e-6)
TOL = 3e-4


@pytest.mark.parametrize("guidance", [False, True], ids=["schnell", "dev"])
def test_flux_transformer(device: gpucore.Device, guidance: bool) -> None:
    if guidance:  # the guidance embedder is one more TimestepEmbedding: the same kernels
        host_variant_on_first_adapter(device, "FLUX dev's guidance embedding")
    if ADAPTERS and device.info.index != ADAPTERS[0].index:
        pytest.skip("FLUX's blocks add to SD3.5's (tested on this adapter) only RoPE's GEMM and "
                    "elementwise kernels and a concatenation, which gpustd's tests run on "
                    "every adapter; the whole model runs on the first adapter (CI time)")
    reference = randomized(diffusers.FluxTransformer2DModel(**FLUX_TINY,
                                                            guidance_embeds=guidance), 7)
    ours = FluxTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((2, 20, 16)).astype(np.float32)  # 4 x 5 patches
    text = rng.standard_normal((2, 7, 32)).astype(np.float32)
    pooled = rng.standard_normal((2, 24)).astype(np.float32)
    t = np.array([0.83, 0.25], np.float32)
    scale = np.array([3.5, 3.5], np.float32) if guidance else None
    img_ids, txt_ids = image_ids(4, 5), np.zeros((7, 3), np.float32)
    with torch.no_grad():
        expected = reference(
            torch.from_numpy(latents), torch.from_numpy(text), torch.from_numpy(pooled),
            torch.from_numpy(t), torch.from_numpy(img_ids), torch.from_numpy(txt_ids),
            None if scale is None else torch.from_numpy(scale)).sample.numpy()
    got = ours(gpustd.asarray(latents, device=device), gpustd.asarray(text, device=device),
               gpustd.asarray(pooled, device=device), t, img_ids, txt_ids, scale)
    assert_close(got.numpy(), expected, tol=TOL)


def test_flux_guidance_mismatch(first_device: gpucore.Device) -> None:
    ours = FluxTransformer2DModel({**FLUX_TINY, "guidance_embeds": True}, device=first_device)
    x = gpustd.asarray(np.ones((1, 4, 16), np.float32), device=first_device)
    with pytest.raises(ValueError, match="guidance="):
        ours(x, x, x, [0.5], image_ids(2, 2), np.zeros((4, 3)))


def test_flux_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations (the dtype the full-size bench runs): every op's
    float16 path, RoPE included, against the float32 reference."""
    if ADAPTERS and f16_device.info.index != ADAPTERS[0].index:
        pytest.skip("float16 FLUX runs on the first adapter (CI time)")
    reference = randomized(diffusers.FluxTransformer2DModel(**FLUX_TINY, guidance_embeds=True), 7)
    ours = FluxTransformer2DModel(dict(reference.config), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    latents, text = rng.standard_normal((2, 20, 16)), rng.standard_normal((2, 7, 32))
    pooled = rng.standard_normal((2, 24))
    t, scale = np.array([0.83, 0.25], np.float32), np.array([3.5, 2.0], np.float32)
    img_ids, txt_ids = image_ids(4, 5), np.zeros((7, 3), np.float32)
    with torch.no_grad():
        expected = reference(*(torch.from_numpy(a.astype(np.float32))
                               for a in (latents, text, pooled, t, img_ids, txt_ids, scale))
                             ).sample.numpy()
    got = ours(*(gpustd.asarray(a, dtype=np.float16, device=f16_device)
                 for a in (latents, text, pooled)), t, img_ids, txt_ids, scale)
    assert got.dtype == np.float16
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 3.7e-3 (float16
    # rounding through every block, the same on every run: 4x)
    assert_close(got.numpy().astype(np.float32), expected, tol=1.5e-2)


def test_f16_residual_clips_instead_of_overflowing(f16_device: gpucore.Device) -> None:
    residual = gpustd.asarray(np.full((1, 2, 3), 60000.0), dtype=np.float16, device=f16_device)
    gate = gpustd.asarray(np.array([[[1.0, -1.0, 0.5]]]), dtype=np.float16, device=f16_device)
    y = gpustd.asarray(np.full((1, 2, 3), 10000.0), dtype=np.float16, device=f16_device)
    got = gated_add(residual, gate, y).numpy()
    np.testing.assert_array_equal(got[0, :, 0], [65504.0, 65504.0])
    np.testing.assert_allclose(got[0, :, 1:], [[50000.0, 65000.0]] * 2, rtol=1e-3)


def test_flux_step_captures(first_device: gpucore.Device) -> None:
    """A denoising step with the latents, timestep and guidance as Tensors records once and
    replays with new values to what a plain call gives (the pipelines' capture/replay)."""
    device = first_device
    reference = randomized(diffusers.FluxTransformer2DModel(**FLUX_TINY, guidance_embeds=True), 7)
    ours = FluxTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(5)
    text, pooled = (gpustd.asarray(rng.standard_normal(s), device=device)
                    for s in ((1, 7, 32), (1, 24)))
    rotary = ours.rotary(np.zeros((7, 3)), image_ids(4, 5))
    step = gpustd.capture(lambda x, t, g: ours(x, text, pooled, t, None, None, g, rotary=rotary))
    inputs = [[gpustd.asarray(a, device=device) for a in
               (rng.standard_normal((1, 20, 16)), [sigma], [scale])]
              for sigma, scale in ((0.9, 3.5), (0.4, 2.0))]
    step(*inputs[0])  # recorded
    replayed = step(*inputs[1]).numpy()
    x, t, g = inputs[1]
    assert_close(replayed, ours(x, text, pooled, t, None, None, g, rotary=rotary).numpy(),
                 tol=1e-6)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.numpy()), torch.from_numpy(text.numpy()),
                             torch.from_numpy(pooled.numpy()), torch.tensor([0.4]),
                             torch.from_numpy(image_ids(4, 5)), torch.zeros(7, 3),
                             torch.tensor([2.0])).sample.numpy()
    assert_close(replayed, expected, tol=TOL)
