"""CLIP text encoder, UNet and VAE against diffusers/transformers on torch CPU (tiny models)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from sd_tiny import state_dict, tiny_text_encoder, tiny_unet, tiny_vae
from support import assert_close

import gpucore
import gpustd
from diffusion.models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel

# f32 end to end through dozens of layers: the worst element's |error| / (rms + |expected|)
# (support.assert_close's rule) measured on lavapipe and llvmpipe is 7.1e-6 (the VAE decoder;
# the rest 1e-6 to 4.5e-6)
TOL = 5e-5


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_text_encoder(device: gpucore.Device, act: str) -> None:
    reference = tiny_text_encoder(hidden_act=act)
    ours = CLIPTextModel(reference.config.to_dict(), device=device)
    ours.load_state_dict(state_dict(reference, strip="text_model."))
    ids = np.array([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70,
                    [49406, 11, 22, 33, 44, 49407] + [0] * 71], np.int32)
    with torch.no_grad():
        out = reference(torch.from_numpy(ids.astype(np.int64)), output_hidden_states=True)
    assert_close(ours(ids).numpy(), out.last_hidden_state.numpy(), tol=TOL)
    # clip_skip=1: the penultimate layer through the final layer norm, as diffusers does
    final_norm = getattr(reference, "text_model", reference).final_layer_norm
    with torch.no_grad():
        skipped = final_norm(out.hidden_states[-2]).numpy()
    assert_close(ours(ids, clip_skip=1).numpy(), skipped, tol=TOL)


@pytest.mark.parametrize("variant", [{}, {"use_linear_projection": True},
                                     {"in_channels": 9, "upcast_attention": True}])
def test_unet(device: gpucore.Device, variant: dict) -> None:
    reference = tiny_unet(**variant)
    ours = UNet2DConditionModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2, reference.config.in_channels, 16, 16)).astype(np.float32)
    context = rng.standard_normal((2, 77, 32)).astype(np.float32)
    t = np.array([999.0, 17.0], np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(sample), torch.from_numpy(t),
                             torch.from_numpy(context)).sample.numpy()
    got = ours(gpustd.asarray(sample, device=device), t, gpustd.asarray(context, device=device))
    assert_close(got.numpy(), expected, tol=TOL)


def test_unet_at_odd_latent_sizes(first_device: gpucore.Device) -> None:
    """A side that is a multiple of 8 pixels but not of the UNet's overall factor (520 px for
    SD 1.x) halves to an odd skip: the upsampler meets it as diffusers' does (its
    forward_upsample_size)."""
    reference = tiny_unet()
    ours = UNet2DConditionModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(1)
    sample = rng.standard_normal((1, 4, 9, 11)).astype(np.float32)
    context = rng.standard_normal((1, 77, 32)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(sample), 500.0,
                             torch.from_numpy(context)).sample.numpy()
    got = ours(gpustd.asarray(sample, device=first_device), [500.0],
               gpustd.asarray(context, device=first_device))
    assert_close(got.numpy(), expected, tol=TOL)


def test_vae_decode_and_encode(device: gpucore.Device) -> None:
    reference = tiny_vae()
    ours = AutoencoderKL(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(1)
    assert_vae_matches(ours, reference, rng.standard_normal((1, 4, 12, 10)).astype(np.float32),
                       rng.uniform(-1, 1, (1, 3, 24, 20)).astype(np.float32), device)


def assert_vae_matches(ours: Any, reference: Any, latents: np.ndarray, image: np.ndarray,
                       device: gpucore.Device) -> None:
    """Our VAE's decode of `latents` and encode (mean, log-variance) of `image` equal the
    diffusers `reference`'s (test_vae_16ch uses it too)."""
    with torch.no_grad():
        decoded = reference.decode(torch.from_numpy(latents)).sample.numpy()
        posterior = reference.encode(torch.from_numpy(image)).latent_dist
    assert_close(ours.decode(gpustd.asarray(latents, device=device)).numpy(), decoded, tol=TOL)
    mean, logvar = ours.encode(gpustd.asarray(image, device=device))
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)


def test_warm_forward_pass_allocates_nothing(first_device: gpucore.Device) -> None:
    """The buffer pool's reuse is host logic: one adapter shows it, at a small size. Two
    passes warm it: the first also makes the device's kept constants (`Device.keep`: the
    placeholders, the timestep frequencies), which can take a pooled buffer that the second
    pass then makes anew (38, 1, 0, 0 buffers in a fresh process)."""
    device = first_device
    reference = tiny_unet()
    ours = UNet2DConditionModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(2)
    sample = gpustd.asarray(rng.standard_normal((2, 4, 8, 8)), device=device)
    context = gpustd.asarray(rng.standard_normal((2, 77, 32)), device=device)
    for _ in range(2):
        ours(sample, [10, 10], context).numpy()
    before = device.buffers_created
    for _ in range(2):
        ours(sample, [10, 10], context).numpy()
    assert device.buffers_created == before
