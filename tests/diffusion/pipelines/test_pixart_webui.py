"""The WebUI's k-diffusion samplers on PixArt-Σ (diffusion.pipelines.flow.pixart_webui) against
the WebUI's recipe rebuilt on k-diffusion 0.1.1 and diffusers' PixArtTransformer2DModel (torch
CPU, a tiny random folder): k-diffusion's `DiscreteEpsDDPMDenoiser` over the folder's linear
betas (float64, stored float32 as the LDM code), the transformer's noise half at
sigma_to_t(sigma) on x * c_in, CFG on the denoised predictions, each image's noise from a torch
generator seeded with seed + k (its first draw the start, its later ones the ancestral steps').
txt2img with DPM++ 2M Karras and Euler a (two images), img2img with Euler from the init
image's VAE posterior (drawn from the seed's generator) at the schedule's tail. The timestep
samplers (DDIM, UniPC) against PixArtSigmaPipeline with those diffusers schedulers.

Compared: the final latents (the last step's), relative error |ours - ref| / |ref|; measured
7e-6 to 2e-5 (float32 GEMMs in another order, carried through 3 steps of a tiny random model
whose latents grow to thousands); a wrong sigma, coefficient or noise draw moves them by 1e-2
or more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from kdiffusion_ref import K

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest

PROMPT, NEGATIVE = "a red circle on a blue square", "a photo of a cat"
WIDTH, HEIGHT, STEPS, CFG, SEED = 40, 24, 3, 4.5, 7
TOLERANCE = 1e-4


class _Eps(K.external.DiscreteEpsDDPMDenoiser):
    """k-diffusion's epsilon wrapper around diffusers' PixArt transformer: its first 4 output
    channels (the variance half dropped, as PixArtSigmaPipeline does)."""

    def get_eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        out = self.inner_model(x, encoder_hidden_states=cond, encoder_attention_mask=mask,
                               timestep=t, added_cond_kwargs={"resolution": None,
                                                              "aspect_ratio": None}).sample
        return out[:, :x.shape[1]]


def _denoiser(pipe: Any) -> _Eps:
    """The transformer over the folder's linear betas (float64, the product stored float32)."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    return _Eps(pipe.transformer, torch.tensor(np.cumprod(1 - betas), dtype=torch.float32),
                quantize=False)


def _reference(pipe: Any, function: str, sigmas: torch.Tensor, seeds: list[int],
               init: torch.Tensor | None = None) -> np.ndarray:
    """k-diffusion's `function` over `sigmas` from the seeds' noise (plus `init`)."""
    denoiser = _denoiser(pipe)
    with torch.no_grad():
        cond, cond_mask, uncond, uncond_mask = pipe.encode_prompt(
            PROMPT, True, NEGATIVE, clean_caption=False, max_sequence_length=300)
    batch = len(seeds)
    states = torch.cat([cond.repeat(batch, 1, 1), uncond.repeat(batch, 1, 1)])
    masks = torch.cat([cond_mask.repeat(batch, 1), uncond_mask.repeat(batch, 1)])

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = denoiser(torch.cat([x, x]).float(), torch.cat([sigma, sigma]).float(),
                       cond=states, mask=masks).double()
        return out[batch:] + (out[:batch] - out[batch:]) * CFG

    generators = [torch.Generator().manual_seed(s) for s in seeds]

    def draw() -> torch.Tensor:
        return torch.stack([torch.randn((4, HEIGHT // 2, WIDTH // 2), generator=g)
                            for g in generators]).double()

    x = draw() * sigmas[0] + (0 if init is None else init)
    kwargs = {"noise_sampler": lambda s, t: draw()} if function.endswith("ancestral") else {}
    with torch.no_grad():
        out = getattr(K.sampling, function)(model, x, sigmas, disable=True, **kwargs)
    return out.numpy()


def _ours(model: Any, **settings: Any) -> np.ndarray:
    final: list[np.ndarray] = []
    request = GenerationRequest(**{**dict(prompt=PROMPT, negative_prompt=NEGATIVE, width=WIDTH,
                                          height=HEIGHT, steps=STEPS, cfg_scale=CFG, seed=SEED,
                                          rng="torch"), **settings})
    model.generate(request, on_step=lambda done, total, latents: final.append(latents))
    return np.asarray(final[-1], np.float64)


def _error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


@pytest.fixture(scope="module")
def model(first_device: gpucore.Device, tiny_pixart: tuple[Path, Any]) -> Any:
    return load_pipeline(tiny_pixart[0], device=first_device)


def test_pixart_runs_the_webui_samplers(model: Any, tiny_pixart: tuple[Path, Any]) -> None:
    """DPM++ 2M Karras and Euler a (a batch of two: seeds 7 and 8) are the WebUI's on
    k-diffusion; the negative prompt matters."""
    pipe = tiny_pixart[1]
    assert "DPM++ 2M" in model.capabilities.samplers
    denoiser = _denoiser(pipe)
    karras = K.sampling.get_sigmas_karras(STEPS, denoiser.sigma_min.item(),
                                          denoiser.sigma_max.item()).double()
    dpm = _ours(model, sampler="DPM++ 2M", scheduler="Karras")
    expected = _reference(pipe, "sample_dpmpp_2m", karras, [SEED])
    assert _error(dpm, expected) < TOLERANCE, _error(dpm, expected)
    got = _ours(model, sampler="Euler a", batch_size=2)
    expected = _reference(pipe, "sample_euler_ancestral", denoiser.get_sigmas(STEPS).double(),
                          [SEED, 8])
    assert _error(got, expected) < TOLERANCE, _error(got, expected)
    plain = _ours(model, sampler="DPM++ 2M", scheduler="Karras", negative_prompt="")
    assert _error(plain, dpm) > 0.02


def test_pixart_img2img_with_a_webui_sampler(model: Any, tiny_pixart: tuple[Path, Any]
                                             ) -> None:
    """img2img with Euler: the init image's SD VAE latents (a posterior draw from the seed's
    generator) plus the seed's noise at the schedule's tail (t_enc = strength x steps),
    as the WebUI does for SD; the init image matters. 'diffusers' and the timestep samplers
    with an init image are refused in one line."""
    from PIL import Image

    from diffusion.imaging import to_unit_image

    pipe = tiny_pixart[1]
    rng = np.random.default_rng(4)
    init = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8))
    # 20 steps at strength 0.15: the last t_enc + 1 = 4 sigmas (0.5 down), where the
    # init latents (~0.1) weigh beside the tiny model's noise (~3 times sigma)
    settings: dict[str, Any] = dict(sampler="Euler", steps=20, strength=0.15)
    got = _ours(model, init_image=init, **settings)
    with torch.no_grad():
        pixels = torch.from_numpy(to_unit_image(init, WIDTH, HEIGHT))
        latents = pipe.vae.encode(pixels).latent_dist.sample(
            torch.Generator().manual_seed(SEED)) * pipe.vae.config.scaling_factor
    t_enc = int(0.15 * 20)
    expected = _reference(pipe, "sample_euler", _denoiser(pipe).get_sigmas(20)[20 - t_enc - 1:],
                          [SEED], init=latents.double())
    assert _error(got, expected) < TOLERANCE, _error(got, expected)
    other = _ours(model, init_image=Image.fromarray(255 - np.asarray(init)), **settings)
    assert _error(other, got) > 0.02, _error(other, got)
    for sampler in ("diffusers", "UniPC"):
        with pytest.raises(ValueError, match="k-diffusion sampler") as refused:
            model.generate(GenerationRequest(prompt=PROMPT, width=WIDTH, height=HEIGHT,
                                             steps=2, init_image=init, sampler=sampler))
        assert "\n" not in str(refused.value)


def test_pixart_timestep_samplers_are_diffusers(model: Any,
                                                tiny_pixart: tuple[Path, Any]) -> None:
    """The WebUI's DDIM (two images, the batch's noise from the one seed) and UniPC run as
    diffusers' DDIMScheduler (x0 unclipped, as the WebUI's DDIM) and UniPCMultistepScheduler
    from the folder's config in PixArtSigmaPipeline."""
    pipe = tiny_pixart[1]
    folder_scheduler = pipe.scheduler
    for label, kind, batch in (("DDIM", diffusers.DDIMScheduler, 2),
                               ("UniPC", diffusers.UniPCMultistepScheduler, 1)):
        pipe.scheduler = kind.from_config(folder_scheduler.config, clip_sample=False)
        try:
            with torch.no_grad():
                expected = pipe([PROMPT] * batch, negative_prompt=NEGATIVE, height=HEIGHT,
                                width=WIDTH, num_inference_steps=STEPS, guidance_scale=CFG,
                                generator=torch.Generator().manual_seed(SEED),
                                use_resolution_binning=False, output_type="latent").images
        finally:
            pipe.scheduler = folder_scheduler
        got = _ours(model, sampler=label, batch_size=batch)
        assert _error(got, expected.double().numpy()) < TOLERANCE, (label, _error(
            got, expected.double().numpy()))
