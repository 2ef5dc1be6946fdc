"""The hires fix on Qwen-Image against a reference written out on torch CPU, as
test_flow_hires.py checks FLUX's: k-diffusion's Euler with diffusers' Qwen-Image transformer as
the denoiser over the simple schedule of Qwen-Image's scheduler config (its exponential shift
by the picture's size from diffusers' calculate_shift, stretched to its shift_terminal by
diffusers' own scheduler), the first pass's latents upscaled by torch's bilinear interpolation
(the WebUI's "Latent"), then the WebUI's hires img2img: the schedule stretched by 1 / denoise
at the new size's shift, its last steps from sigma0 * noise + (1 - sigma0) * latents, the
noise drawn afresh from the seed at that size; decoded by diffusers' Qwen-Image VAE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from kdiffusion_ref import K
from qwenimage_tiny import QWENIMAGE_SCHEDULER

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest
from diffusion.upscalers.interpolation import HiresFix

SEED, STEPS, HIRES_STEPS, DENOISE = 11, 3, 2, 0.6
PROMPT = "a red circle"


def _sigmas(h: int, w: int, steps: int) -> torch.Tensor:
    """The simple schedule (every 1000 / steps-th of the 1000 training times from the top)
    shifted by Qwen-Image's mu for h x w latents and stretched to shift_terminal, by
    diffusers' scheduler; 0 appended."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

    config = QWENIMAGE_SCHEDULER
    mu = calculate_shift((h // 2) * (w // 2), config["base_image_seq_len"],
                         config["max_image_seq_len"], config["base_shift"],
                         config["max_shift"])
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    t = torch.tensor([(1000 - int(x * 1000 / steps)) / 1000 for x in range(steps)],
                     dtype=torch.float64)
    sigmas = scheduler.stretch_shift_to_terminal(scheduler.time_shift(mu, 1.0, t))
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def _reference(pipe: Any, height: int, width: int, hires_seed: int = SEED) -> np.ndarray:
    scale = pipe.vae_scale_factor
    with torch.no_grad():
        embeds, mask = pipe.encode_prompt([PROMPT], device="cpu", max_sequence_length=512)

    def denoiser(h: int, w: int) -> Any:
        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            packed = pipe._pack_latents(x.float(), 1, x.shape[1], h, w)
            v = pipe.transformer(hidden_states=packed, timestep=sigma.float(), guidance=None,
                                 encoder_hidden_states_mask=mask, encoder_hidden_states=embeds,
                                 img_shapes=[[(1, h // 2, w // 2)]], return_dict=False)[0]
            v = pipe._unpack_latents(v, h * scale, w * scale, scale)[:, :, 0]
            return x - sigma[:, None, None, None] * v.double()

        return denoise

    h, w = height // scale, width // scale
    channels = pipe.transformer.config.in_channels // 4
    with torch.no_grad():
        # 1. the first pass
        sigmas = _sigmas(h, w, STEPS)
        noise = torch.randn((channels, h, w), generator=torch.Generator().manual_seed(SEED))
        x = K.sampling.sample_euler(denoiser(h, w), noise[None].double() * sigmas[0], sigmas,
                                    disable=True)
        # 2. "Latent": bilinear, no antialiasing, to twice the size
        x = torch.nn.functional.interpolate(x, size=(2 * h, 2 * w), mode="bilinear")
        # 3. the hires pass: HIRES_STEPS of a schedule stretched by 1 / denoise
        total = int(HIRES_STEPS / DENOISE)
        sigmas = _sigmas(2 * h, 2 * w, total)[total - (HIRES_STEPS - 1) - 1:]
        noise = torch.randn(x.shape[1:],
                            generator=torch.Generator().manual_seed(hires_seed))
        x = sigmas[0] * noise[None].double() + (1 - sigmas[0]) * x
        x = K.sampling.sample_euler(denoiser(2 * h, 2 * w), x, sigmas, disable=True)
        config = pipe.vae.config
        z = (x.float() * torch.tensor(config.latents_std).view(1, -1, 1, 1)
             + torch.tensor(config.latents_mean).view(1, -1, 1, 1))
        image = pipe.vae.decode(z[:, :, None], return_dict=False)[0][:, :, 0]
    return ((image[0].permute(1, 2, 0).numpy() / 2 + 0.5).clip(0, 1) * 255).round()


def _request(**settings: Any) -> GenerationRequest:
    return GenerationRequest(prompt=PROMPT, width=24, height=16, steps=STEPS, sampler="Euler",
                             seed=SEED, rng="torch", cfg_scale=1.0, **settings)


def test_qwenimage_hires_fix_matches_the_reference(first_device: gpucore.Device,
                                                   tiny_qwenimage: tuple[Path, Any]) -> None:
    folder, reference = tiny_qwenimage
    model = load_pipeline(folder, device=first_device)
    latent = model.generate(_request(hires=HiresFix(scale=2.0, upscaler="Latent",
                                                    steps=HIRES_STEPS, denoise=DENOISE)))
    got = latent.images[0].astype(np.float64)
    assert got.shape == (32, 48, 3)
    expected = _reference(reference, 16, 24)
    assert np.abs(got - expected).max() <= 2
    # the bound tells pictures apart: the second pass's noise from another seed is far off
    assert np.abs(got - _reference(reference, 16, 24, hires_seed=SEED + 1)).max() > 10
    assert latent.settings["hires_scale"] == 2.0 and latent.settings["hires_steps"] == 2
    # an image upscaler: the first pass decoded and the larger picture encoded again by the
    # Qwen-Image VAE
    lanczos = model.generate(_request(hires=HiresFix(scale=2.0, upscaler="Lanczos",
                                                     steps=HIRES_STEPS, denoise=DENOISE)))
    picture = lanczos.images[0].astype(np.float64)
    assert picture.shape == (32, 48, 3) and picture.std() > 5
    assert np.abs(picture - got).mean() > 0.5  # another start, another picture


def test_no_vae_module_for_the_hires_pass(first_device: gpucore.Device,
                                         tiny_qwenimage: tuple[Path, Any],
                                         tmp_path: Path) -> None:
    """Forge's hr_additional_modules: Qwen-Image keeps its own VAE (no module file is one of
    its kind), so a VAE file there is refused in one line and "Built-in" keeps the model's."""
    from server_support import write_vae_file

    from diffusion.loaders import WeightsError
    from diffusion.pipelines.module_load import hires_modules

    folder, _ = tiny_qwenimage
    model = load_pipeline(folder, device=first_device)
    assert hires_modules(model, folder, ("Built-in",), []).vae is None
    ae = tmp_path / "ae.safetensors"
    write_vae_file(ae, 3, latent_channels=4)
    with pytest.raises(WeightsError, match="qwen-image models keep their own VAE"):
        hires_modules(model, folder, ("ae",), [ae])
