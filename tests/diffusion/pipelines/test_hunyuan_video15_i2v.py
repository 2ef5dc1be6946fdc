"""HunyuanVideo 1.5 image-to-video (a HunyuanVideo15ImageToVideoPipeline folder of
hunyuan_video15_pipe_tiny's parts): our frames against diffusers' on PyTorch CPU float32 (the
picture cropped to its aspect bucket, read by SigLIP and encoded as the first frame's
condition latents), both of the picture's paths visibly mattering, a meanflow transformer's
next timestep too; `img2vid --image` on it; txt2vid and a given size refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames
from PIL import Image

import gpucore
from diffusion.pipelines.video.hunyuan_video15 import HunyuanVideo15Pipeline
from diffusion.pipelines.video.hunyuan_video15_inputs import condition_channels, first_frame

CAT = 'a cat holds a sign that says "HI"'
# a 30 x 50 picture: the 24 x 40 bucket of the tiny 32-pixel target; 5 frames, 2 steps
FRAMES, STEPS, HEIGHT, WIDTH = 5, 2, 24, 40
# |ours - diffusers| in [0, 1], float32: measured 6.4e-7 mean, 6.4e-6 max
MEAN, MAX = 3e-6, 2e-5
PNG = 0.01  # mean, through 8-bit PNG frames


def _picture(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def diffusers_video(reference: Any, picture: Image.Image) -> np.ndarray:
    """diffusers' video of CAT animating `picture` (5 frames, 2 steps, seed 7)."""
    with torch.no_grad():
        frames = reference(image=picture, prompt=CAT, num_frames=FRAMES,
                           num_inference_steps=STEPS,
                           generator=torch.Generator().manual_seed(7)).frames
    return np.asarray(frames[0])


@pytest.fixture(scope="module")
def tiny(tiny_hunyuan_video15_i2v: tuple[Path, Any]) -> tuple[Path, np.ndarray]:
    """(the folder, diffusers' video of CAT animating _picture(1))."""
    folder, reference = tiny_hunyuan_video15_i2v
    return folder, diffusers_video(reference, _picture(1))


def test_frames_equal_diffusers(first_device: gpucore.Device,
                                tiny: tuple[Path, np.ndarray]) -> None:
    folder, expected = tiny
    pipe = HunyuanVideo15Pipeline.from_pretrained(folder)
    ours = pipe(CAT, image=_picture(1), num_frames=FRAMES, num_inference_steps=STEPS,
                seed=7)[0]
    assert ours.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).mean() < MEAN
    assert np.abs(ours - expected).max() < MAX
    # the picture matters both ways at the first step: SigLIP's tokens and the first frame's
    # latents (measured 1.7% and 3.8% of the velocity's mean size)
    states, mask, glyph, glyph_mask = pipe.encode_prompt([CAT])
    encoded = [pipe.encode_image(first_frame(_picture(seed), HEIGHT, WIDTH))
               for seed in (1, 2)]
    noise = np.random.default_rng(0).standard_normal((1, 4, 2, 3, 5)).astype(np.float32)

    def flow(embeds: np.ndarray, latents: np.ndarray) -> np.ndarray:
        sample = np.concatenate([noise, condition_channels(latents, noise.shape)], axis=1)
        return pipe.transformer(sample, np.float32([1000]), states, mask,
                                encoder_hidden_states_2=glyph,
                                encoder_attention_mask_2=glyph_mask,
                                image_embeds=embeds).numpy()
    base = flow(*encoded[0])
    size = np.abs(base).mean()
    assert np.abs(flow(encoded[1][0], encoded[0][1]) - base).mean() > 0.008 * size
    assert np.abs(flow(encoded[0][0], encoded[1][1]) - base).mean() > 0.015 * size
    with pytest.raises(ValueError, match="animates a picture"):
        pipe(CAT, num_frames=FRAMES, height=HEIGHT, width=WIDTH)


def test_img2vid(first_device: gpucore.Device, tiny: tuple[Path, np.ndarray], tmp_path: Path,
                 capsys: pytest.CaptureFixture[str]) -> None:
    """`img2vid --image` on the folder gives diffusers' video; txt2vid and --width are
    refused in one line before the weights load."""
    folder, expected = tiny
    _picture(1).save(tmp_path / "in.png")
    common = ("--model", str(folder), "--steps", str(STEPS), "--seed", "7", "--dtype",
              "float32", "--prompt", CAT, "--frames", str(FRAMES))
    out, _ = cli_ok(capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"), "-o",
                    str(tmp_path / "cat"))
    assert np.abs(png_frames(out) - expected).mean() < PNG
    assert "animates a picture: use img2vid" in cli_error(
        capsys, "txt2vid", *common, "-o", str(tmp_path / "x.webp"))
    assert "leave --width and --height out" in cli_error(
        capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"), "--width", "48",
        "-o", str(tmp_path / "x.webp"))


def test_meanflow_equals_diffusers(first_device: gpucore.Device,
                                   tiny_hunyuan_video15_i2v: tuple[Path, Any],
                                   tmp_path: Path) -> None:
    """A meanflow transformer (use_meanflow) reads the next step's timestep too, 0 after the
    last, as diffusers' image-to-video pipeline passes it."""
    import diffusers
    from hunyuan_video15_pipe_tiny import TARGET_SIZE
    from hunyuan_video15_tiny import tiny_hunyuan_video15_transformer

    parts = {**tiny_hunyuan_video15_i2v[1].components, "transformer":
             tiny_hunyuan_video15_transformer(target_size=TARGET_SIZE, use_meanflow=True)}
    reference = diffusers.HunyuanVideo15ImageToVideoPipeline(**parts)
    reference.save_pretrained(tmp_path / "meanflow")
    expected = diffusers_video(reference, _picture(1))
    pipe = HunyuanVideo15Pipeline.from_pretrained(tmp_path / "meanflow")
    ours = pipe(CAT, image=_picture(1), num_frames=FRAMES, num_inference_steps=STEPS,
                seed=7)[0]
    assert np.abs(ours - expected).mean() < MEAN  # measured 6.2e-7
    assert np.abs(ours - expected).max() < MAX  # 4.4e-6
    # the next timestep matters (measured 41% of the velocity's mean size)
    states, mask, glyph, glyph_mask = pipe.encode_prompt([CAT])
    sample = np.random.default_rng(0).standard_normal((1, 9, 2, 3, 5)).astype(np.float32)
    flows = [pipe.transformer(sample, np.float32([1000]), states, mask, np.float32([r]),
                              glyph, glyph_mask).numpy() for r in (500, 0)]
    assert np.abs(flows[0] - flows[1]).mean() > 0.2 * np.abs(flows[0]).mean()
