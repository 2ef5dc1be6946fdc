"""FLUX.2 dev inpainting (img2img with a mask, the "diffusers" sampler) against a reference
assembled from diffusers, which has no FLUX.2 dev inpaint pipeline: Flux2KleinInpaintPipeline
run on dev's parts, given dev's prompt embeddings (`Flux2Pipeline.encode_prompt`: Mistral
Small 3.1's hidden states after layers 10, 20 and 30 of the templated prompt) as
`prompt_embeds`, and dev's distilled guidance put into the transformer's `guidance` by a
forward pre-hook (the klein pipeline always passes `guidance=None`, which dev's transformer
takes as no guidance embedding at all) as Flux2Pipeline builds it: `torch.full([1],
guidance_scale, dtype=torch.float32).expand(batch)`.

What else the klein inpaint pipeline does is Flux2Pipeline's where Flux2Pipeline does it at
all: the schedule (`compute_empirical_mu`, `retrieve_timesteps`), the latent and reference
ids, `_encode_vae_image` (the posterior's mean), the packing and the batch norm are the same
functions (`_prepare_image_ids` and `prepare_image_latents` differ only for batches of several
references). Flux2Pipeline has no init image, strength or mask: the noised start, the
bilinear mask and the kept part put back after every step are the klein inpaint pipeline's
alone, the one diffusers definition of FLUX.2 inpainting. Flux2Pipeline reads its
references with `resize_mode="crop"`, the inpaint pipeline its init image with "default":
the same pixels at sides that are multiples of 16, as here. The klein pipeline runs without
its CFG at `guidance_scale=1`, as dev always does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from PIL import Image

import gpucore
from diffusion.imaging import to_unit_image
from diffusion.pipelines.flow.flux2_model import Flux2Model
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest

PROMPT, SEED, STEPS, STRENGTH = "a red circle", 7, 4, 0.6
WIDTH, HEIGHT = 48, 32
GUIDANCE, OTHER_GUIDANCE = 4.0, 8.0
TOKENS = 192  # the templated prompt's 174 tokens, padded (diffusers' 512 would be slow here)


def _reference(dev: Any, embeds: torch.Tensor, init: np.ndarray, mask: np.ndarray,
               guidance: float) -> np.ndarray:
    """The assembled reference's picture (H, W, 3) in [0, 1] of dev's prompt embeddings
    `embeds` at `guidance`."""
    import diffusers

    inpaint = diffusers.Flux2KleinInpaintPipeline(**dev.components)

    def embedded(module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        assert kwargs["guidance"] is None  # what the klein pipeline passes
        batch = kwargs["hidden_states"].shape[0]
        kwargs["guidance"] = torch.full([1], guidance, dtype=torch.float32).expand(batch)
        return args, kwargs

    hook = dev.transformer.register_forward_pre_hook(embedded, with_kwargs=True)
    try:
        with torch.no_grad():
            return inpaint(  # type: ignore[no-any-return]
                prompt_embeds=embeds, image=Image.fromarray(init),
                mask_image=Image.fromarray(mask), strength=STRENGTH, height=HEIGHT,
                width=WIDTH, num_inference_steps=STEPS, guidance_scale=1.0,
                generator=torch.Generator().manual_seed(SEED), output_type="np").images[0]
    finally:
        hook.remove()


def test_flux2_dev_inpaint_equals_diffusers(first_device: gpucore.Device,
                                            tiny_flux2_dev: tuple[Path, Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """48 x 32, 3 steps of 4 (strength 0.6), the mask's edge halfway through a latent column:
    the assembled reference's picture at Distilled CFG 4 through the model (measured 9.1e-4
    mean abs, 2.0e-3 max of [0, 1] pixels: the uint8 rounding) and at 8 through the pipeline
    (measured 9.7e-7 mean abs, 8.4e-6 max of the float pictures). The guidance moves the
    repainted part (measured 0.16 mean abs between 8 and 4) and keeps the rest: the kept
    latents are the init image's mean exactly; the kept pixels move a tenth as much (measured
    0.018: the VAE decoder's mid-block attention reaches across the whole picture)."""
    folder, dev = tiny_flux2_dev
    with torch.no_grad():
        embeds = dev.encode_prompt(PROMPT, device="cpu", max_sequence_length=TOKENS)[0]
    monkeypatch.setattr(Flux2Model, "max_sequence_length", TOKENS)
    rng = np.random.default_rng(3)
    init = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, 22:] = 255  # latents of 16 pixels: column 0 kept, 1 half (bilinear), 2 repainted
    model = load_pipeline(folder, device=first_device)
    assert model.family == "flux2-dev"
    ours = model.generate(GenerationRequest(
        prompt=PROMPT, width=WIDTH, height=HEIGHT, steps=STEPS, seed=SEED, sampler="diffusers",
        rng="torch", strength=STRENGTH, cfg_scale=1.0, distilled_cfg_scale=GUIDANCE,
        init_image=init, mask=mask)).images[0] / 255
    error = np.abs(ours - _reference(dev, embeds, init, mask, GUIDANCE))
    assert error.mean() < 1.5e-3 and error.max() < 3e-3
    # at the other guidance through the pipeline (the init image its first reference, as
    # the model passes it): the kept latents the init image's mean, the picture diffusers'
    latents = model.pipe(PROMPT, image=[init / 255.0], init_image=init, mask_image=mask,
                         strength=STRENGTH, height=HEIGHT, width=WIDTH,
                         num_inference_steps=STEPS, guidance_scale=OTHER_GUIDANCE,
                         max_sequence_length=TOKENS, seed=SEED, output_type="latent")
    start = model.pipe.mean_latents(to_unit_image(init, WIDTH, HEIGHT))
    assert np.abs(latents - start)[..., :1].max() < 1e-5
    guided = model.pipe.decode(latents)[0]
    error = np.abs(guided - _reference(dev, embeds, init, mask, OTHER_GUIDANCE))
    assert error.mean() < 5e-6 and error.max() < 5e-5
    moved = np.abs(guided - ours)
    assert moved[:, 32:].mean() > 0.08  # the repainted pixels follow the guidance
    assert moved[:, :16].mean() < 0.03  # the kept ones barely
