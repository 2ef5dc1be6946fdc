"""The Wan 2.1 transformer against diffusers' WanTransformer3DModel on torch CPU (a tiny
random model whose weights are scaled until the text visibly matters)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sd_tiny import state_dict
from support import assert_close
from wan_tiny import WAN_TINY, tiny_wan_transformer

import gpucore
from diffusion.models.wan import WanTransformer3DModel
from gpustd import asarray

TOL = 1e-3


def test_wan_transformer_equals_diffusers(device: gpucore.Device) -> None:
    reference = tiny_wan_transformer()
    ours = WanTransformer3DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((2, 4, 3, 6, 10)).astype(np.float32)
    text = rng.standard_normal((2, 7, WAN_TINY["text_dim"])).astype(np.float32)
    other = rng.standard_normal(text.shape).astype(np.float32)
    timestep = np.array([700.0, 250.5], np.float32)

    def reference_flow(states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(latents), torch.from_numpy(timestep),
                             torch.from_numpy(states)).sample.numpy()

    expected = reference_flow(text)
    got = ours(asarray(latents, device=device), timestep, asarray(text, device=device)).numpy()
    assert got.shape == latents.shape
    assert_close(got, expected, tol=TOL)
    # the text matters, the context given once equals the states given each call
    changed = reference_flow(other)
    assert np.abs(changed - expected).mean() > 0.2 * np.abs(expected).mean()
    context = ours.encode_text(asarray(other, device=device))
    again = ours(asarray(latents, device=device), timestep, None, context=context).numpy()
    assert_close(again, changed, tol=TOL)


def test_per_frame_timesteps_equal_diffusers_per_token(first_device: gpucore.Device) -> None:
    """Wan 2.2's image-to-video timesteps: 0 for the first latent frame's tokens, t for the
    rest (diffusers takes them per token, `expand_timesteps`)."""
    reference = tiny_wan_transformer()
    ours = WanTransformer3DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((2, 4, 3, 4, 6)).astype(np.float32)
    text = rng.standard_normal((2, 5, WAN_TINY["text_dim"])).astype(np.float32)
    frames = np.array([[0.0, 600.0, 600.0], [0.0, 600.0, 600.0]], np.float32)
    per_token = np.repeat(frames, 2 * 3, axis=1)  # (3 frames) x (2 x 3 patches)
    with torch.no_grad():
        expected = reference(torch.from_numpy(latents), torch.from_numpy(per_token),
                             torch.from_numpy(text)).sample.numpy()
        uniform = reference(torch.from_numpy(latents), torch.tensor([600.0, 600.0]),
                            torch.from_numpy(text)).sample.numpy()
    got = ours(asarray(latents, device=first_device), frames,
               asarray(text, device=first_device)).numpy()
    assert np.abs(expected - uniform)[:, :, 0].mean() > 0.05  # the first frame's own step
    assert_close(got, expected, tol=TOL)


@pytest.mark.nodevice
def test_wan_transformer_refuses_first_last_frame() -> None:
    with pytest.raises(ValueError, match="first-last-frame"):
        WanTransformer3DModel({**WAN_TINY, "image_dim": 32, "added_kv_proj_dim": 24,
                               "pos_embed_seq_len": 514})
    with pytest.raises(ValueError, match="together"):
        WanTransformer3DModel({**WAN_TINY, "image_dim": 32})


def test_wan_transformer_f16(f16_device: gpucore.Device) -> None:
    reference = tiny_wan_transformer()
    ours = WanTransformer3DModel(dict(reference.config), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, 4, 2, 4, 6)).astype(np.float32)
    text = rng.standard_normal((1, 5, WAN_TINY["text_dim"])).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(latents), torch.tensor([500.0]),
                             torch.from_numpy(text)).sample.numpy()
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), [500.0],
               asarray(text, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=2e-2)


def test_image_to_video_transformer_equals_diffusers(first_device: gpucore.Device) -> None:
    """Wan 2.1 I2V's transformer: the CLIP image states through the image embedder and the
    blocks' added image cross-attention (add_k_proj / add_v_proj, norm_added_k), latents with
    the conditioning channels; diffusers splits the image tokens off a 512-token text."""
    import diffusers
    from sd_tiny import randomized

    dim = WAN_TINY["num_attention_heads"] * WAN_TINY["attention_head_dim"]
    reference = randomized(diffusers.WanTransformer3DModel(
        **{**WAN_TINY, "in_channels": 12, "image_dim": 20, "added_kv_proj_dim": dim}), 9,
        scale=0.3)
    ours = WanTransformer3DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(2)
    latents = rng.standard_normal((1, 12, 2, 4, 6)).astype(np.float32)
    text = rng.standard_normal((1, 512, WAN_TINY["text_dim"])).astype(np.float32)
    image = rng.standard_normal((1, 5, 20)).astype(np.float32)
    timestep = np.array([400.0], np.float32)

    def reference_flow(picture: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(latents), torch.from_numpy(timestep),
                             torch.from_numpy(text),
                             encoder_hidden_states_image=torch.from_numpy(picture)
                             ).sample.numpy()

    expected = reference_flow(image)
    got = ours(asarray(latents, device=first_device), timestep,
               asarray(text, device=first_device),
               encoder_hidden_states_image=asarray(image, device=first_device)).numpy()
    assert got.shape == (1, 4, 2, 4, 6)
    assert_close(got, expected, tol=TOL)
    other = 2 * rng.standard_normal(image.shape).astype(np.float32)
    assert np.abs(reference_flow(other) - expected).mean() > 0.1 * np.abs(expected).mean()
    with pytest.raises(ValueError, match="reads an image"):
        ours(asarray(latents, device=first_device), timestep, asarray(text, device=first_device))
