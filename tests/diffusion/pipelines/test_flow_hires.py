"""The hires fix on FLUX against a reference written out on torch CPU: k-diffusion's Euler with
diffusers' transformer as the denoiser over ComfyUI's simple schedule, the first pass's latents
upscaled by torch's bilinear interpolation (the WebUI's "Latent"), then the WebUI's hires
img2img: the schedule stretched by 1 / denoise at the new size's shift, its last steps from
sigma0 * noise + (1 - sigma0) * latents, the noise drawn afresh from the seed at that size,
FLUX dev guided there by Forge's hr_distilled_cfg rather than the first pass's value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from kdiffusion_ref import K

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest
from diffusion.upscalers.interpolation import HiresFix

SEED, STEPS, HIRES_STEPS, DENOISE = 11, 3, 2, 0.6
GUIDANCE, HIRES_GUIDANCE = 3.5, 1.0  # the tiny model draws these 9 levels apart


def _mu(latent_h: int, latent_w: int) -> float:
    """diffusers' calculate_shift for FLUX dev's scheduler (256 -> 0.5, 4096 -> 1.15)."""
    slope = (1.15 - 0.5) / (4096 - 256)
    return (latent_h // 2) * (latent_w // 2) * slope + 0.5 - slope * 256


def _sigmas(mu: float, steps: int) -> torch.Tensor:
    """ComfyUI's simple schedule over ModelSamplingFlux's 10000-entry table."""
    table = torch.arange(1, 10001, dtype=torch.float64) / 10000
    table = math.exp(mu) / (math.exp(mu) + (1 / table - 1))
    stride = 10000 / steps
    return torch.tensor([float(table[-(1 + int(x * stride))]) for x in range(steps)] + [0.0],
                        dtype=torch.float64)


def flux_denoiser(pipe: Any, text: tuple[Any, ...], h: int, w: int, guidance: float) -> Any:
    """diffusers' FLUX transformer as k-diffusion's denoiser of (1, C, h, w) latents: the x0
    prediction x - sigma * flow, for the prompt states `text` (`encode_prompt`'s three)."""
    scale = pipe.vae_scale_factor
    states, pooled, text_ids = text
    ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        v = pipe.transformer(hidden_states=pipe._pack_latents(x.float(), 1, x.shape[1], h, w),
                             timestep=sigma.float(), guidance=torch.full((1,), guidance),
                             pooled_projections=pooled, encoder_hidden_states=states,
                             txt_ids=text_ids, img_ids=ids).sample
        v = pipe._unpack_latents(v, h * scale, w * scale, scale)
        return x - sigma[:, None, None, None] * v.double()

    return denoise


def flux_picture(pipe: Any, x: torch.Tensor) -> np.ndarray:
    """diffusers' FLUX VAE's picture of latents `x` (1, C, h, w), as uint8-rounded floats."""
    with torch.no_grad():
        z = x.float() / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        image = pipe.vae.decode(z).sample
    return ((image[0].permute(1, 2, 0).numpy() / 2 + 0.5).clip(0, 1) * 255).round()


def _reference(pipe: Any, height: int, width: int, hires_guidance: float, *,
               hires_prompt: str = "a red circle", first_sampler: str = "euler"
               ) -> np.ndarray:
    """The two passes (`first_sampler`: k-diffusion's "euler" or "dpmpp_2m" for the first;
    Euler for the second, with `hires_prompt`)."""
    scale = pipe.vae_scale_factor
    texts = {}
    with torch.no_grad():
        for text in {"a red circle", hires_prompt}:
            texts[text] = pipe.encode_prompt([text], None, max_sequence_length=512)

    def denoiser(h: int, w: int, guidance: float, text: str = "a red circle") -> Any:
        return flux_denoiser(pipe, texts[text], h, w, guidance)

    h, w = height // scale, width // scale
    shape = (1, pipe.transformer.config.in_channels // 4, h, w)
    with torch.no_grad():
        # 1. the first pass
        sigmas = _sigmas(_mu(h, w), STEPS)
        noise = torch.randn(shape[1:], generator=torch.Generator().manual_seed(SEED))
        first = getattr(K.sampling, f"sample_{first_sampler}")
        x = first(denoiser(h, w, GUIDANCE), noise[None].double() * sigmas[0], sigmas,
                  disable=True)
        # 2. "Latent": bilinear, no antialiasing, to twice the size
        x = torch.nn.functional.interpolate(x, size=(2 * h, 2 * w), mode="bilinear")
        # 3. the hires pass: HIRES_STEPS of a schedule stretched by 1 / denoise
        total = int(HIRES_STEPS / DENOISE)
        sigmas = _sigmas(_mu(2 * h, 2 * w), total)[total - (HIRES_STEPS - 1) - 1:]
        noise = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(SEED))
        x = sigmas[0] * noise[None].double() + (1 - sigmas[0]) * x
        x = K.sampling.sample_euler(denoiser(2 * h, 2 * w, hires_guidance, hires_prompt), x,
                                    sigmas, disable=True)
    return flux_picture(pipe, x)


def _assert_matches(got: np.ndarray, expected: np.ndarray) -> None:
    """Within 4 levels anywhere and 1 on average: float32 on both sides through two passes
    (measured on lavapipe: at most 2-3 levels, 0.44 on average, the most varying between CPUs
    and kernel choices); whatever the test tells apart is more than 4 levels away."""
    difference = np.abs(got - expected)
    assert difference.max() <= 4 and difference.mean() <= 1, (difference.max(), difference.mean())


def test_flux_hires_fix_matches_the_reference(first_device: gpucore.Device,
                                              tiny_flux_dev: tuple[Path, Any]) -> None:
    root, reference = tiny_flux_dev
    model = load_pipeline(root / "flux", device=first_device)
    result = model.generate(GenerationRequest(
        prompt="a red circle", width=24, height=16, steps=STEPS, sampler="Euler", seed=SEED,
        rng="torch", cfg_scale=1.0, distilled_cfg_scale=GUIDANCE,
        hr_distilled_cfg=HIRES_GUIDANCE,
        hires=HiresFix(scale=2.0, upscaler="Latent", steps=HIRES_STEPS, denoise=DENOISE)))
    got = result.images[0].astype(np.float64)
    assert got.shape == (32, 48, 3)
    _assert_matches(got, _reference(reference, 16, 24, HIRES_GUIDANCE))
    # the first pass's guidance in the hires pass would have been another picture
    assert np.abs(got - _reference(reference, 16, 24, GUIDANCE)).max() > 4
    assert result.settings["hires_scale"] == 2.0 and result.settings["hires_steps"] == 2
    assert result.settings["hires_distilled_cfg"] == HIRES_GUIDANCE
    assert (result.settings["width"], result.settings["height"]) == (24, 16)


def test_flux_hires_pass_with_its_own_prompt_and_sampler(first_device: gpucore.Device,
                                                          tiny_flux_dev: tuple[Path, Any]
                                                          ) -> None:
    """The WebUI's hr_prompt and hr_sampler_name, as Forge runs them on FLUX: DPM++ 2M for
    the first pass, Euler with another prompt for the second; the infotext's Hires prompt
    and Hires sampler; a sampler or schedule type flow models lack refused in one line."""
    root, reference = tiny_flux_dev
    model = load_pipeline(root / "flux", device=first_device)
    hires = HiresFix(scale=2.0, upscaler="Latent", steps=HIRES_STEPS, denoise=DENOISE,
                     prompt="a blue square", sampler="Euler")
    result = model.generate(GenerationRequest(
        prompt="a red circle", width=24, height=16, steps=STEPS, sampler="DPM++ 2M",
        seed=SEED, rng="torch", cfg_scale=1.0, distilled_cfg_scale=GUIDANCE,
        hr_distilled_cfg=HIRES_GUIDANCE, hires=hires))
    got = result.images[0].astype(np.float64)
    expected = _reference(reference, 16, 24, HIRES_GUIDANCE, hires_prompt="a blue square",
                          first_sampler="dpmpp_2m")
    _assert_matches(got, expected)
    same_prompt = _reference(reference, 16, 24, HIRES_GUIDANCE, first_sampler="dpmpp_2m")
    assert np.abs(got - same_prompt).max() > 4  # the hires prompt visibly acted
    settings = result.settings
    assert settings["hires_prompt"] == "a blue square" and settings["hires_sampler"] == "Euler"
    for own, message in ((dict(sampler="DPM2"), "hires sampler DPM2 is not defined"),
                         (dict(scheduler="Karras"), "hires schedule type Karras is not")):
        with pytest.raises(ValueError, match=message):
            model.generate(GenerationRequest(
                prompt="x", width=16, height=16, steps=2, sampler="Euler", cfg_scale=1.0,
                hires=HiresFix(scale=2.0, **own)))


def test_flux_hires_fix_refuses_the_diffusers_loop(first_device: gpucore.Device,
                                                   tiny_flux_dev: tuple[Path, Any]) -> None:
    model = load_pipeline(tiny_flux_dev[0] / "flux", device=first_device)
    with pytest.raises(ValueError, match="hires fix runs with the WebUI samplers"):
        model.generate(GenerationRequest(prompt="x", width=16, height=16, steps=2,
                                         sampler="diffusers", cfg_scale=1.0,
                                         hires=HiresFix(scale=2.0)))
