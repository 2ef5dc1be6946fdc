"""HunyuanImage 2.1 with the WebUI samplers from an init image and in the hires pass: the
guided flow over the run's sigmas (img2img's tail by the strength; the hires pass's last steps
of the stretched schedule) stepped by Euler here equals diffusers' HunyuanImagePipeline given
those sigmas and the same start latents (torch CPU, float32), which is what APG's steps (the
OCR guider's CFG, then APG with momentum from the run's second step) and meanflow's next
timestep must follow; and through the command line, img2img's init image visibly matters,
inpainting keeps the unmasked pixels, the hires fix runs, a variation seed and DPM++ 2M change
the picture."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from hunyuanimage_parts_tiny import GUIDER_TINY, tiny_hunyuanimage_pipeline
from PIL import Image
from support import assert_close

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest
from diffusion.upscalers.interpolation import HiresFix

PROMPT = 'a shop sign that says "OPEN" in red'
HEIGHT, WIDTH = 32, 24
# worst |error| / (|e| + rms) of the final latents, measured 1.7e-5 (the base checkpoint's
# img2img; the distilled one's 3e-6); APG starting a step late in diffusers' guider: 0.5
TOL = 5e-5
SHIFT = 4.0  # the tiny folder's scheduler shift (diffusers shifts the sigmas it is given)


def _diffusers_run(reference: Any, sigmas: np.ndarray, start: np.ndarray,
                   **settings: Any) -> np.ndarray:
    """diffusers' final latents over the shifted `sigmas` (then 0) from `start`: its
    scheduler is given them unshifted, as it shifts them again."""
    tokens = len(reference.tokenizer(reference.prompt_template_encode.format(PROMPT)).input_ids)
    reference.tokenizer_max_length = tokens - reference.prompt_template_encode_start_idx
    shifted = sigmas[:-1]
    unshifted = shifted / (SHIFT - (SHIFT - 1) * shifted)
    with torch.no_grad():
        out = reference(PROMPT, height=HEIGHT, width=WIDTH, sigmas=list(unshifted),
                        num_inference_steps=len(unshifted), latents=torch.from_numpy(start),
                        output_type="latent", **settings).images
    return np.asarray(out, np.float32)


def _ours_run(model: Any, request: GenerationRequest, start: np.ndarray) -> np.ndarray:
    """Our guided flow of `request` stepped by Euler over its run's sigmas from `start`."""
    sigmas = model._run_sigmas(request)
    flow, shape, _ = model.guided_flow(request, [PROMPT], WIDTH, HEIGHT)
    assert shape == start.shape
    x = start.astype(np.float64)
    for sigma, after in itertools.pairwise(sigmas):
        x = x + (after - sigma) * flow(x.astype(np.float32), sigma * 1000)
    return x.astype(np.float32)


@pytest.mark.parametrize("distilled", [False, True])
def test_img2img_and_hires_runs_equal_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                                distilled: bool) -> None:
    """img2img at strength 0.5 of 4 steps (3 run) and the hires pass of 2 steps at denoise
    0.5 (the last 2 of 4): each run's sigmas, steps and timestep_r as diffusers runs them."""
    reference = tiny_hunyuanimage_pipeline(tmp_path, distilled=distilled)
    model = load_pipeline(tmp_path / "hunyuanimage", device=first_device)
    # the default CFG scale (the plain guider's): the OCR guider's own runs, as diffusers'
    guidance = ({"distilled_cfg_scale": 4.0, "cfg_scale": 1.0} if distilled
                else {"cfg_scale": GUIDER_TINY["guidance_scale"]})
    theirs = {"distilled_guidance_scale": 4.0} if distilled else {}
    img2img = GenerationRequest(prompt=PROMPT, steps=4, sampler="Euler", strength=0.5,
                                init_image=Image.new("RGB", (WIDTH, HEIGHT)), **guidance)
    hires = replace(img2img, init_image=None, steps=2,
                    hires=HiresFix(steps=2, denoise=0.5))
    model._first_pass = True  # as inside `_webui`: the first pass's run
    sigmas = model._run_sigmas(img2img)
    channels = model.pipe.transformer.config["in_channels"]
    start = np.random.default_rng(5).standard_normal((1, channels, HEIGHT // 4, WIDTH // 4))
    start = start.astype(np.float32)
    assert len(sigmas) == 4  # t_enc = int(0.5 x 4) = 2: 3 steps
    got = _ours_run(model, img2img, start)
    assert_close(got, _diffusers_run(reference, sigmas, start, **theirs), tol=TOL)
    model._first_pass = False  # the hires pass's: the last 2 steps of 4
    sigmas = model._run_sigmas(hires)
    assert len(sigmas) == 3 and sigmas[0] < 0.999
    got = _ours_run(model, hires, start)
    assert_close(got, _diffusers_run(reference, sigmas, start, **theirs), tol=TOL)


def _cli(tmp_path: Path) -> tuple[str, ...]:
    """The distilled tiny folder's CLI options at 4 steps from seed 3, the sampler not yet
    given (the distilled checkpoint: one model call a step, the quickest)."""
    tiny_hunyuanimage_pipeline(tmp_path, distilled=True)
    return ("--model", str(tmp_path / "hunyuanimage"), "--width", str(WIDTH), "--height",
            str(HEIGHT), "--prompt", PROMPT, "--steps", "4", "--seed", "3", "--dtype",
            "float32")


def test_img2img_and_inpainting_from_the_cli(first_device: gpucore.Device, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """img2img from two init pictures: they visibly matter, less at a higher strength;
    inpainting keeps the unmasked part's pixels and repaints the masked ones."""
    common = (*_cli(tmp_path), "--sampler", "Euler")
    first = png_pixels(cli_ok(capsys, "txt2img", *common, "--out", str(tmp_path / "a.png"))[0])
    Image.new("RGB", (WIDTH, HEIGHT), "white").save(tmp_path / "white.png")
    apart = []
    for strength in ("0.15", "0.95"):  # of 8 steps: the last 2 (from sigma 0.57), all 8
        pictures = [png_pixels(cli_ok(capsys, "img2img", *common, "--steps", "8", "--init-image",
                                      str(tmp_path / f"{name}.png"), "--strength", strength,
                                      "--out", str(tmp_path / f"{name}{strength}.png"))[0])
                    for name in ("a", "white")]
        apart.append(np.abs(pictures[0] - pictures[1]).mean())
    # measured 0.0083 and 0 (a PNG's rounding: ~0.002): the tiny distilled model's picture
    # moves little with its start (another seed: 0.014), and the shift (4) leaves the init
    # picture 43% of the start at 0.15; at 0.95 the start is all noise
    assert apart[0] > max(0.004, 2 * apart[1]), apart
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, :8] = 255  # repaint the left 8 columns (no blur: the rest pasted back exactly)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    painted = png_pixels(cli_ok(capsys, "inpaint", *common, "--init-image",
                                str(tmp_path / "a.png"), "--mask", str(tmp_path / "mask.png"),
                                "--mask-blur", "0", "--out", str(tmp_path / "c.png"))[0])
    assert np.abs(painted[:, 8:] - first[:, 8:]).max() == 0
    assert np.abs(painted[:, :4] - first[:, :4]).mean() > 0.01


def test_hires_samplers_and_refusals_from_the_cli(
        first_device: gpucore.Device, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The hires fix doubles the size; a variation seed and DPM++ 2M change the picture;
    "diffusers" with an init image and Heun refused in one line."""
    model = _cli(tmp_path)
    common = (*model, "--sampler", "Euler")
    first = png_pixels(cli_ok(capsys, "txt2img", *common, "--out", str(tmp_path / "a.png"))[0])
    # the hires pass's 2 steps the last of 4 (the guided flow refuses a timestep off its run)
    big = png_pixels(cli_ok(capsys, "txt2img", *common, "--hr-scale", "2", "--hr-steps", "2",
                            "--hr-denoise", "0.5", "--out", str(tmp_path / "h.png"))[0])
    assert big.shape == (2 * HEIGHT, 2 * WIDTH, 3)
    varied = png_pixels(cli_ok(capsys, "txt2img", *common, "--subseed", "5",
                               "--subseed-strength", "0.5", "--out", str(tmp_path / "v.png"))[0])
    other = png_pixels(cli_ok(capsys, "txt2img", *model, "--sampler", "DPM++ 2M",
                              "--out", str(tmp_path / "d.png"))[0])
    # measured 0.0072 and 0.012 (another seed: 0.014; a PNG's rounding ~0.002)
    assert np.abs(varied - first).mean() > 0.004  # the variation seed's noise blended in
    assert np.abs(other - first).mean() > 0.006  # another sampler, another picture
    assert "pick Euler" in cli_error(capsys, "img2img", *model, "--sampler", "diffusers",
                                     "--init-image", str(tmp_path / "a.png"))
    assert "Heun is not defined" in cli_error(capsys, "txt2img", *model, "--sampler", "Heun")
