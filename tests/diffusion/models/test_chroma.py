"""The Chroma transformer against diffusers' ChromaTransformer2DModel on torch CPU (tiny,
random), with the text's padding masked as ChromaPipeline masks it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from conftest import ADAPTERS
from flow_tiny import CHROMA_TINY
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models import ChromaTransformer2DModel
from diffusion.models.chroma import approximator_input
from diffusion.pipelines.flow.flux import image_ids

TOL = 1e-3  # f32 end to end, typically ~1e-6


@pytest.mark.nodevice
def test_approximator_input_is_diffusers() -> None:
    """The timestep / index embedding at the real config (344 vectors, 64 channels): its
    index angles reach 3.4e5, where float32 rounding would show."""
    from diffusers.models.transformers.transformer_chroma import (
        ChromaCombinedTimestepTextProjEmbeddings,
    )

    t = np.array([0.9871, 0.25], np.float32)
    expected = ChromaCombinedTimestepTextProjEmbeddings(16, 344)(torch.from_numpy(t) * 1000)
    assert_close(approximator_input(t, 344, 64), expected.numpy(), tol=1e-5)


def test_chroma_transformer(device: gpucore.Device) -> None:
    if ADAPTERS and device.info.index != ADAPTERS[0].index:
        pytest.skip("Chroma's blocks are FLUX's kernels (tested on every adapter by gpustd's "
                    "and FLUX's tests) plus a masked attention; the whole model runs on the "
                    "first adapter (CI time)")
    reference = randomized(diffusers.ChromaTransformer2DModel(**CHROMA_TINY), 7)
    ours = ChromaTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((2, 20, 16)).astype(np.float32)  # 4 x 5 patches
    text = 3 * rng.standard_normal((2, 7, 32)).astype(np.float32)
    t = np.array([0.83, 0.25], np.float32)
    img_ids, txt_ids = image_ids(4, 5), np.zeros((7, 3), np.float32)
    # rows keep 4 and 6 of the 7 text tokens (the prompt and one pad), and every image token
    keep = np.ones((2, 27), bool)
    keep[0, 4:7] = keep[1, 6] = False

    def reference_flow(mask: np.ndarray | None) -> np.ndarray:
        with torch.no_grad():
            return reference(
                torch.from_numpy(latents), torch.from_numpy(text), torch.from_numpy(t),
                torch.from_numpy(img_ids), torch.from_numpy(txt_ids),
                attention_mask=None if mask is None else torch.from_numpy(mask)).sample.numpy()

    expected = reference_flow(keep)
    got = ours(gpustd.asarray(latents, device=device), gpustd.asarray(text, device=device),
               t, img_ids, txt_ids, keep).numpy()
    assert_close(got, expected, tol=TOL)
    # the mask matters: without it the padding is attended to
    assert np.abs(reference_flow(None) - expected).mean() > 20 * TOL
    unmasked = ours(gpustd.asarray(latents, device=device), gpustd.asarray(text, device=device),
                    t, img_ids, txt_ids).numpy()
    assert_close(unmasked, reference_flow(None), tol=TOL)


def test_chroma_mask_shape(first_device: gpucore.Device) -> None:
    ours = ChromaTransformer2DModel(CHROMA_TINY, device=first_device)
    x = gpustd.asarray(np.ones((1, 4, 16), np.float32), device=first_device)
    text = gpustd.asarray(np.ones((1, 3, 32), np.float32), device=first_device)
    with pytest.raises(ValueError, match="text \\+ image tokens"):
        ours(x, text, [0.5], image_ids(2, 2), np.zeros((3, 3)), np.ones((1, 3)))


def test_chroma_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations (what a full-size model runs in), the approximator's
    RMS norms at float16's epsilon and a masked row included, against the float32 reference."""
    if ADAPTERS and f16_device.info.index != ADAPTERS[0].index:
        pytest.skip("float16 Chroma runs on the first adapter (CI time)")
    reference = randomized(diffusers.ChromaTransformer2DModel(**CHROMA_TINY), 7)
    ours = ChromaTransformer2DModel(dict(reference.config), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    latents, text = rng.standard_normal((2, 20, 16)), 3 * rng.standard_normal((2, 7, 32))
    # timesteps float16 holds exactly: the model takes them in its dtype, as diffusers does
    t = np.array([0.75, 0.25], np.float32)
    img_ids, txt_ids = image_ids(4, 5), np.zeros((7, 3), np.float32)
    keep = np.ones((2, 27), bool)
    keep[1, 5:7] = False
    with torch.no_grad():
        expected = reference(*(torch.from_numpy(a.astype(np.float32))
                               for a in (latents, text, t, img_ids, txt_ids)),
                             attention_mask=torch.from_numpy(keep)).sample.numpy()
    got = ours(*(gpustd.asarray(a, dtype=np.float16, device=f16_device) for a in (latents, text)),
               t, img_ids, txt_ids, keep)
    assert got.dtype == np.float16
    assert_close(got.numpy().astype(np.float32), expected, dtype=np.float16)
