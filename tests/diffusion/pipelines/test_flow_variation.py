"""Variation seeds, "Seed resize from" and img2img's noise multiplier on FLUX with the WebUI
samplers, as the WebUI and Forge draw them, against a reference written out on torch CPU: the
seed's noise and the variation seed's blended by the WebUI's slerp (`modules/rng.py`), drawn at
the resize size and centred in the picture's noise, or laid over the init image's latents
times the multiplier, then k-diffusion's Euler with diffusers' transformer over ComfyUI's
simple schedule (test_flow_hires's reference)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from kdiffusion_ref import K
from test_flow_hires import _mu, _sigmas, flux_denoiser, flux_picture
from webui_ref import webui_slerp

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest

SEED, SUBSEED, STRENGTH, STEPS, GUIDANCE = 11, 5, 0.4, 3, 3.5


def _noise(shape: tuple[int, int, int], small: tuple[int, int, int]) -> torch.Tensor:
    """The WebUI's `create_random_tensors` for one image: seed and subseed noise at `small`,
    slerped, centred in the seed's noise at `shape`."""
    def randn(seed: int, size: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(size, generator=torch.Generator().manual_seed(seed))

    sub = randn(SUBSEED, small)
    noise = webui_slerp(STRENGTH, randn(SEED, small), sub)
    x = randn(SEED, shape)
    dx, dy = (shape[2] - small[2]) // 2, (shape[1] - small[1]) // 2
    assert dx >= 0 and dy >= 0  # the case this test draws
    x[:, dy:dy + small[1], dx:dx + small[2]] = noise
    return x


def _reference(pipe: Any, height: int, width: int, resize: tuple[int, int]) -> np.ndarray:
    scale = pipe.vae_scale_factor
    with torch.no_grad():
        text = pipe.encode_prompt(["a red circle"], None, max_sequence_length=512)
    h, w = height // scale, width // scale
    channels = pipe.transformer.config.in_channels // 4
    noise = _noise((channels, h, w), (channels, resize[1] // scale, resize[0] // scale))
    with torch.no_grad():
        sigmas = _sigmas(_mu(h, w), STEPS)
        x = K.sampling.sample_euler(flux_denoiser(pipe, text, h, w, GUIDANCE),
                                    noise[None].double() * sigmas[0], sigmas, disable=True)
    return flux_picture(pipe, x)


def test_variation_seed_and_seed_resize_match_the_webui(first_device: gpucore.Device,
                                                        tiny_flux_dev: tuple[Path, Any]) -> None:
    root, reference = tiny_flux_dev
    model = load_pipeline(root / "flux", device=first_device)
    scale = reference.vae_scale_factor
    width, height, resize = 16 * scale, 8 * scale, (12 * scale, 4 * scale)
    request = GenerationRequest(
        prompt="a red circle", width=width, height=height, steps=STEPS, sampler="Euler",
        seed=SEED, subseed=SUBSEED, subseed_strength=STRENGTH, seed_resize_from=resize,
        rng="torch", cfg_scale=1.0, distilled_cfg_scale=GUIDANCE)
    result = model.generate(request)
    got = result.images[0].astype(np.float64)
    expected = _reference(reference, height, width, resize)
    assert np.abs(got - expected).max() <= 2
    settings = result.settings
    assert (settings["subseed"], settings["subseed_strength"]) == (SUBSEED, STRENGTH)
    assert settings["seed_resize_from"] == resize
    plain = model.generate(GenerationRequest(
        prompt="a red circle", width=width, height=height, steps=STEPS, sampler="Euler",
        seed=SEED, rng="torch", cfg_scale=1.0, distilled_cfg_scale=GUIDANCE)).images[0]
    assert np.abs(plain.astype(np.float64) - got).mean() > 2  # the variation shows
    # strength 1: every image the variation seed's own (image k: subseed + k), as the WebUI
    whole = model.generate(GenerationRequest(
        prompt="a red circle", width=width, height=height, steps=STEPS, sampler="Euler",
        seed=SEED, subseed=SUBSEED, subseed_strength=1.0, batch_size=2, rng="torch",
        cfg_scale=1.0, distilled_cfg_scale=GUIDANCE)).images
    own = model.generate(GenerationRequest(
        prompt="a red circle", width=width, height=height, steps=STEPS, sampler="Euler",
        seed=SUBSEED, batch_size=2, rng="torch", cfg_scale=1.0,
        distilled_cfg_scale=GUIDANCE)).images
    for a, b in zip(whole, own, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1


def _img2img_reference(pipe: Any, init: Any, width: int, height: int, strength: float,
                       steps: int, multiplier: float = 1.0) -> np.ndarray:
    """The WebUI's img2img with Euler: the init image's latents (diffusers' VAE posterior
    drawn from the seed's generator; a picture of another size encoded at its own size and
    its latents resized bilinearly, the WebUI's resize mode 3), the seed's noise times
    `multiplier` at the first kept sigma of the schedule's tail (t_enc = strength x steps)."""
    from diffusion.imaging import to_unit_image

    scale = pipe.vae_scale_factor
    h, w = height // scale, width // scale
    with torch.no_grad():
        text = pipe.encode_prompt(["a red circle"], None, max_sequence_length=512)
        pixels = torch.from_numpy(to_unit_image(init, *init.size))
        latents = pipe.vae.encode(pixels).latent_dist.sample(
            torch.Generator().manual_seed(SEED))
        latents = (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        if latents.shape[2:] != (h, w):
            latents = torch.nn.functional.interpolate(latents, size=(h, w), mode="bilinear")
    t_enc = int(strength * steps)
    sigmas = _sigmas(_mu(h, w), steps)[steps - t_enc - 1:]
    noise = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        x = sigmas[0] * multiplier * noise[None].double() + (1 - sigmas[0]) * latents.double()
        x = K.sampling.sample_euler(flux_denoiser(pipe, text, h, w, GUIDANCE), x, sigmas,
                                    disable=True)
    return flux_picture(pipe, x)


def test_img2img_noise_multiplier_and_latent_resize_match_the_webui(
        first_device: gpucore.Device, tiny_flux_dev: tuple[Path, Any]) -> None:
    """img2img's initial_noise_multiplier with a WebUI sampler, as the WebUI applies it, and
    resize mode 3 ("Just resize (latent upscale)"): the infotext's "Noise multiplier"; with
    'diffusers', which lays its own noise and encodes the resized picture, each refused in
    one line."""
    from PIL import Image

    root, pipe = tiny_flux_dev
    model = load_pipeline(root / "flux", device=first_device)
    scale = pipe.vae_scale_factor
    # strength 0.5 of 4 steps: t_enc 2, from the second sigma (the first is 1: pure noise)
    width, height, strength, multiplier, steps = 8 * scale, 8 * scale, 0.5, 0.6, 4
    init = Image.fromarray(np.random.default_rng(4).integers(0, 256, (height, width, 3),
                                                            np.uint8))
    request = GenerationRequest(
        prompt="a red circle", width=width, height=height, steps=steps, sampler="Euler",
        seed=SEED, rng="torch", cfg_scale=1.0, distilled_cfg_scale=GUIDANCE,
        init_image=init, strength=strength, initial_noise_multiplier=multiplier)
    result = model.generate(request)
    got = result.images[0].astype(np.float64)
    expected = _img2img_reference(pipe, init, width, height, strength, steps, multiplier)
    assert np.abs(got - expected).max() <= 2
    assert result.settings["noise_multiplier"] == multiplier
    plain = model.generate(replace(request, initial_noise_multiplier=1.0))
    assert np.abs(plain.images[0].astype(np.float64) - got).mean() > 1  # it acted
    with pytest.raises(ValueError, match="initial_noise_multiplier scales the noise"):
        model.generate(replace(request, sampler="diffusers"))
    # resize mode 3: a smaller picture encoded at its own size, its latents made larger
    small = init.resize((4 * scale, 6 * scale))
    resized = model.generate(replace(request, init_image=small, resize_mode=3,
                                     initial_noise_multiplier=1.0))
    expected = _img2img_reference(pipe, small, width, height, strength, steps)
    assert np.abs(resized.images[0].astype(np.float64) - expected).max() <= 2
    picture = model.generate(replace(request, init_image=small, initial_noise_multiplier=1.0))
    assert np.abs(picture.images[0].astype(np.float64) - expected).mean() > 1  # mode 0 differs
    with pytest.raises(ValueError, match=r"resize mode 3 .* resizes the latents"):
        model.generate(replace(request, init_image=small, resize_mode=3, sampler="diffusers",
                               initial_noise_multiplier=1.0))
