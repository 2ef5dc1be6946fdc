"""The hires fix on Qwen-Image-Edit against diffusers' QwenImageEditPipeline running the same
two passes beside the reference (the init image, read at the reference area by both passes):
the first pass over the simple schedule, its latents enlarged by torch's bilinear
interpolation (the WebUI's "Latent"), noised to the stretched schedule's first kept sigma by
the seed's noise at the new size, then finished over that schedule's last sigmas (`sigmas`,
`latents`). Qwen-Image's scheduler stretches every schedule so that its last sigma is
`shift_terminal`: ours stretches the whole stretched schedule (1 / denoise of the steps) and
runs its tail, diffusers stretches the tail it is given; the stretch reads only the last
sigma, which both share, so the two are one schedule (asserted below). The stretch shows:
diffusers' two passes without it draw a picture 9.7e-2 mean abs away (measured), a hundred
times the bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from PIL import Image
from qwenedit_tiny import read_at_area, tiny_qwenimage_edit_pipeline

import diffusion.pipelines.flow.qwen_image_edit as edit_module
import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest
from diffusion.upscalers.interpolation import HiresFix

AREA = 64 * 96  # the reference's pixels (diffusers' 1024 x 1024 would be slow here)
PROMPT = "make the red circle blue and the square green, " * 4
SEED, STEPS, HIRES_STEPS, DENOISE = 7, 2, 3, 0.75
TOTAL = int(HIRES_STEPS / DENOISE)  # the stretched schedule's steps
WIDTH, HEIGHT = 48, 32


@pytest.fixture(scope="module")
def tiny_edit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-qwen-edit-hires")
    pipe = tiny_qwenimage_edit_pipeline(root)
    with read_at_area(pipe, AREA):
        yield root / "qwen-edit", pipe


def _simple(steps: int) -> list[float]:
    """The simple schedule's unshifted times (diffusers' own linspace differs in the last
    digits)."""
    return [(1000 - int(x * 1000 / steps)) / 1000 for x in range(steps)]


def _hires_start(pipe: Any, init: Image.Image) -> torch.Tensor:
    """diffusers' first pass beside `init`, its latents enlarged and noised to the stretched
    schedule's first kept sigma, packed."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_shift

    packed = pipe(image=init, prompt=PROMPT, true_cfg_scale=1.0, height=HEIGHT, width=WIDTH,
                  num_inference_steps=STEPS, sigmas=_simple(STEPS), output_type="latent",
                  generator=torch.Generator().manual_seed(SEED)).images
    x = pipe._unpack_latents(packed, HEIGHT, WIDTH, pipe.vae_scale_factor)[:, :, 0]
    x = torch.nn.functional.interpolate(x, size=(2 * x.shape[2], 2 * x.shape[3]),
                                        mode="bilinear")
    config = pipe.scheduler.config
    mu = calculate_shift(x.shape[2] * x.shape[3] // 4, config.base_image_seq_len,
                         config.max_image_seq_len, config.base_shift, config.max_shift)
    whole, tail = (diffusers.FlowMatchEulerDiscreteScheduler.from_config(config)
                   for _ in range(2))
    whole.set_timesteps(sigmas=_simple(TOTAL), mu=mu)
    tail.set_timesteps(sigmas=_simple(TOTAL)[TOTAL - HIRES_STEPS:], mu=mu)
    # the tail stretched alone is the whole schedule's tail
    torch.testing.assert_close(tail.sigmas, whole.sigmas[TOTAL - HIRES_STEPS:])
    sigma = tail.sigmas[0].item()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED))
    return pipe._pack_latents(sigma * noise + (1 - sigma) * x, *x.shape)


def _second_pass(pipe: Any, start: torch.Tensor, reference: Image.Image) -> np.ndarray:
    """diffusers' second pass from `start` beside `reference` over the schedule's tail."""
    return pipe(image=reference, prompt=PROMPT, true_cfg_scale=1.0, height=2 * HEIGHT,
                width=2 * WIDTH, sigmas=_simple(TOTAL)[TOTAL - HIRES_STEPS:], latents=start,
                output_type="np").images[0]


def test_edit_hires_fix_matches_diffusers(first_device: gpucore.Device,
                                          tiny_edit: tuple[Path, Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """48 x 32 -> 96 x 64 ("Latent", 2x), 3 hires steps of 4 (denoise 0.75): diffusers'
    picture (measured 9.6e-4 mean abs, 2.0e-3 max of [0, 1] pixels: the uint8 rounding);
    another reference in diffusers' second pass alone moves its picture 15 times that
    (measured 1.4e-2 mean abs)."""
    folder, reference = tiny_edit
    monkeypatch.setattr(edit_module, "REFERENCE_AREA", AREA)
    rng = np.random.default_rng(1)
    init = Image.fromarray(rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    other = Image.fromarray(rng.integers(180, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    model = load_pipeline(folder, device=first_device)
    result = model.generate(GenerationRequest(
        prompt=PROMPT, init_image=init, width=WIDTH, height=HEIGHT, steps=STEPS, seed=SEED,
        cfg_scale=1.0, sampler="Euler", rng="torch",
        hires=HiresFix(scale=2.0, upscaler="Latent", steps=HIRES_STEPS, denoise=DENOISE)))
    got = result.images[0] / 255
    assert got.shape == (2 * HEIGHT, 2 * WIDTH, 3)
    with torch.no_grad():
        start = _hires_start(reference, init)
        expected = _second_pass(reference, start, init)
        moved = _second_pass(reference, start, other)
    error = np.abs(got - expected)
    assert error.mean() < 2e-3 and error.max() < 4e-3
    assert np.abs(moved - expected).mean() > 0.01
    assert (result.settings["hires_upscaler"], result.settings["hires_steps"]) == (
        "Latent", HIRES_STEPS)
