"""NVIDIA Cosmos Predict2 / 2.5's transformer against diffusers' CosmosTransformer3DModel on
torch CPU (tiny random models whose weights are scaled until the text and the conditioning
frames visibly matter)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cosmos_tiny import COSMOS25_TINY, COSMOS_TINY, tiny_cosmos_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.cosmos import CosmosTransformer3DModel
from gpustd import asarray

TOL = 1e-4  # measured 1.7e-6 of the output's size (float32, lavapipe)


def _ours(reference: object, device: gpucore.Device, **options: object
          ) -> CosmosTransformer3DModel:
    ours = CosmosTransformer3DModel(dict(reference.config), device=device,  # type: ignore[attr-defined]
                                    **options)
    ours.load_state_dict(state_dict(reference))
    return ours


def test_text2image_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Predict2 Text2Image's call: one latent frame, a timestep per picture, the zero padding
    mask; a size (6 x 10 latents) off every tile multiple."""
    reference = tiny_cosmos_transformer()
    ours = _ours(reference, device)
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((2, 4, 1, 6, 10)).astype(np.float32)
    text = rng.standard_normal((2, 7, COSMOS_TINY["text_embed_dim"])).astype(np.float32)
    other = rng.standard_normal(text.shape).astype(np.float32)
    timestep = np.array([0.9, 0.25], np.float32)

    def reference_out(states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(latents), torch.from_numpy(timestep),
                             torch.from_numpy(states), padding_mask=torch.zeros(1, 1, 48, 80)
                             ).sample.numpy()

    expected = reference_out(text)
    got = ours(asarray(latents, device=device), timestep, asarray(text, device=device)).numpy()
    assert got.shape == latents.shape
    assert_close(got, expected, tol=TOL)
    changed = reference_out(other)  # the text matters; the context given once is the same
    assert np.abs(changed - expected).mean() > 0.1 * np.abs(expected).mean()
    again = ours(asarray(latents, device=device), timestep, None,
                 context=ours.encode_text(asarray(other, device=device))).numpy()
    assert_close(again, changed, tol=TOL)


def test_predict25_transformer_per_frame_equals_diffusers(first_device: gpucore.Device) -> None:
    """Predict2.5's call (and Predict2 Video2World's, without the text projection): the
    condition-mask channel, the conditioning frame's own timestep, a video's fps in the
    frame positions (a temporal RoPE scale of 2 here), the projected text states."""
    reference = tiny_cosmos_transformer(**{**COSMOS25_TINY, "rope_scale": (2.0, 3.0, 3.0)})
    ours = _ours(reference, first_device)
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((1, 4, 3, 4, 6)).astype(np.float32)
    text = rng.standard_normal((1, 5, COSMOS25_TINY["crossattn_proj_in_channels"]))
    text = text.astype(np.float32)
    mask = np.zeros((1, 1, 3, 4, 6), np.float32)
    mask[:, :, 0] = 1
    frames = np.array([[1e-4, 0.7, 0.7]], np.float32)

    def reference_out(video: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(video), torch.from_numpy(frames)[:, None, :, None,
                                                                               None],
                             torch.from_numpy(text), fps=16,
                             condition_mask=torch.from_numpy(mask),
                             padding_mask=torch.zeros(1, 1, 32, 48)).sample.numpy()

    expected = reference_out(latents)
    got = ours(asarray(latents, device=first_device), frames,
               asarray(text, device=first_device), fps=16,
               condition_mask=asarray(mask, device=first_device)).numpy()
    assert_close(got, expected, tol=TOL)
    # the conditioning frame visibly steers the frames after it
    other = latents.copy()
    other[:, :, 0] = rng.standard_normal(other[:, :, 0].shape)
    moved = reference_out(other)[:, :, 1:]
    assert np.abs(moved - expected[:, :, 1:]).mean() > 0.1 * np.abs(expected).mean()


@pytest.mark.nodevice
def test_refuses_cosmos1_and_wrong_channels() -> None:
    with pytest.raises(ValueError, match="learnable positions"):
        CosmosTransformer3DModel({**COSMOS_TINY, "extra_pos_embed_type": "learnable"})
    with pytest.raises(ValueError, match="image context"):
        CosmosTransformer3DModel({**COSMOS_TINY, "img_context_dim_in": 32})


def test_cosmos_transformer_f16(f16_device: gpucore.Device) -> None:
    reference = tiny_cosmos_transformer()
    ours = _ours(reference, f16_device, dtype=np.float16)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, 4, 1, 4, 6)).astype(np.float32)
    text = rng.standard_normal((1, 5, COSMOS_TINY["text_embed_dim"])).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(latents), torch.tensor([0.5]),
                             torch.from_numpy(text), padding_mask=torch.zeros(1, 1, 32, 48)
                             ).sample.numpy()
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), [0.5],
               asarray(text, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=1e-2)  # measured 4.6e-3
    with pytest.raises(ValueError, match="reads 4 channels"):
        ours(asarray(np.zeros((1, 5, 1, 4, 6), np.float16), device=f16_device), [0.5],
             asarray(text, dtype=np.float16, device=f16_device))
