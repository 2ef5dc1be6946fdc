"""The hires fix on FLUX.2 dev's img2img (the init image a reference beside the noise, the
guidance embedded: the Distilled CFG Scale, the hires pass's own) against diffusers'
Flux2Pipeline running the same two passes, as test_flux2_hires.py checks klein's: the first
pass beside the reference over the simple schedule shifted by FLUX.2's empirical mu, its
patchified, normalized latents enlarged by torch's bilinear interpolation (the WebUI's
"Latent"), noised to the stretched schedule's first kept sigma (mu of the new size's tokens
and the stretched step count) by the seed's noise at the new size, then finished beside the
same reference over that schedule's last sigmas (`sigmas`, `latents`) at the hires pass's
guidance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from flux2_dev_tiny import tiny_flux2_dev_pipeline
from PIL import Image

import gpucore
from diffusion.pipelines.flow.flux2_model import Flux2Model
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest
from diffusion.upscalers.interpolation import HiresFix

SEED, STEPS, HIRES_STEPS, DENOISE = 7, 2, 3, 0.75
TOTAL = int(HIRES_STEPS / DENOISE)  # the stretched schedule's steps
WIDTH, HEIGHT = 24, 16
GUIDANCE, HIRES_GUIDANCE = 4.0, 3.0
TOKENS = 192  # the templated prompt's 174 tokens, padded (diffusers' 512 would be slow here)
PROMPT = "put the red circle on the blue square"


@pytest.fixture(scope="module")
def tiny_dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder, diffusers' Flux2Pipeline) of FLUX.2 dev's tiny parts, the attention's
    query and key norms scaled up (sharper attention) so the reference's tokens visibly steer
    the noise's."""
    root = tmp_path_factory.mktemp("tiny-flux2-dev-hires")
    pipe = tiny_flux2_dev_pipeline(root)
    transformer = pipe.transformer
    with torch.no_grad():
        for block in (*transformer.transformer_blocks, *transformer.single_transformer_blocks):
            block.attn.norm_q.weight.mul_(3)
            block.attn.norm_k.weight.mul_(3)
    transformer.save_pretrained(root / "flux2-dev" / "transformer")
    return root / "flux2-dev", pipe


def _simple(steps: int) -> list[float]:
    """The simple schedule's unshifted times (diffusers' own linspace differs in the last
    digits, which the tiny random model magnifies)."""
    return [(1000 - int(x * 1000 / steps)) / 1000 for x in range(steps)]


def _hires_start(pipe: Any, init: Image.Image) -> torch.Tensor:
    """diffusers' first pass beside `init`, its latents (B, C, h, w) enlarged and noised to
    the stretched schedule's first kept sigma."""
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    packed = pipe(image=[init], prompt=PROMPT, height=HEIGHT, width=WIDTH,
                  num_inference_steps=STEPS, sigmas=_simple(STEPS), guidance_scale=GUIDANCE,
                  max_sequence_length=TOKENS, generator=torch.Generator().manual_seed(SEED),
                  output_type="latent").images
    h, w = HEIGHT // (2 * pipe.vae_scale_factor), WIDTH // (2 * pipe.vae_scale_factor)
    x = packed.permute(0, 2, 1).reshape(1, -1, h, w)  # _pack_latents undone
    x = torch.nn.functional.interpolate(x, size=(2 * h, 2 * w), mode="bilinear")
    mu = compute_empirical_mu(4 * h * w, TOTAL)
    t = _simple(TOTAL)[TOTAL - HIRES_STEPS]
    sigma = pipe.scheduler.time_shift(mu, 1.0, torch.tensor(t)).item()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED))
    return sigma * noise + (1 - sigma) * x


def _second_pass(pipe: Any, start: torch.Tensor, reference: Image.Image,
                 guidance: float = HIRES_GUIDANCE) -> np.ndarray:
    """diffusers' second pass from `start` beside `reference` over the schedule's tail (mu of
    TOTAL steps: `num_inference_steps`)."""
    return pipe(image=[reference], prompt=PROMPT, height=2 * HEIGHT, width=2 * WIDTH,
                num_inference_steps=TOTAL, sigmas=_simple(TOTAL)[TOTAL - HIRES_STEPS:],
                latents=start, guidance_scale=guidance, max_sequence_length=TOKENS,
                output_type="np").images[0]


def test_flux2_dev_hires_fix_matches_diffusers(first_device: gpucore.Device,
                                               tiny_dev: tuple[Path, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """24 x 16 -> 48 x 32 ("Latent", 2x), 3 hires steps of 4 (denoise 0.75), Distilled CFG 4
    then Hires Distilled CFG 3: diffusers' picture (measured 9.1e-4 mean abs, 2.3e-3 max of
    [0, 1] pixels: the uint8 rounding). Another reference in diffusers' second pass alone
    moves its picture a hundred times that (measured 0.10 mean abs), and the first pass's
    guidance in the second moves it too (measured 0.15)."""
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

    folder, reference = tiny_dev
    monkeypatch.setattr(Flux2Model, "max_sequence_length", TOKENS)
    # diffusers refuses pictures under 64 px a side (a check of its own, not the model's)
    monkeypatch.setattr(Flux2ImageProcessor, "check_image_input",
                        staticmethod(lambda image, *args, **kwargs: image))
    rng = np.random.default_rng(2)
    init = Image.fromarray(rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    other = Image.fromarray(rng.integers(180, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    model = load_pipeline(folder, device=first_device)
    assert model.family == "flux2-dev"
    result = model.generate(GenerationRequest(
        prompt=PROMPT, init_image=init, width=WIDTH, height=HEIGHT, steps=STEPS, seed=SEED,
        sampler="Euler", rng="torch", cfg_scale=1.0, distilled_cfg_scale=GUIDANCE,
        hr_distilled_cfg=HIRES_GUIDANCE,
        hires=HiresFix(scale=2.0, upscaler="Latent", steps=HIRES_STEPS, denoise=DENOISE)))
    got = result.images[0] / 255
    assert got.shape == (2 * HEIGHT, 2 * WIDTH, 3)
    with torch.no_grad():
        start = _hires_start(reference, init)
        expected = _second_pass(reference, start, init)
        moved = _second_pass(reference, start, other)
        first_guidance = _second_pass(reference, start, init, GUIDANCE)
    error = np.abs(got - expected)
    assert error.mean() < 2e-3 and error.max() < 4e-3
    assert np.abs(moved - expected).mean() > 0.05
    assert np.abs(first_guidance - expected).mean() > 0.05
