"""Kandinsky 5's image-to-video model (a Kandinsky5I2VPipeline folder of kandinsky5_video_tiny's
parts): our frames against diffusers' on PyTorch CPU float32 (the picture resized, encoded as
the first latent frame after the noise, held through the steps, the first frames renormalised
after them), the picture visibly mattering, --medvram and --lowvram giving the plain run's
frames; `img2vid --image` on it; txt2vid, a missing picture and too few frames refused in one
line."""

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
from diffusion.pipelines.video.kandinsky5 import Kandinsky5VideoPipeline

RED = "a red circle on a blue square"
# 17 frames: 5 latent frames, the fewest where diffusers' first-frame fix reads one after the
# four it renormalises (fewer give it NaN); 4 x 4 latents (the tiny VAE's 4x), 2 x 2 patches
HEIGHT, WIDTH, FRAMES = 16, 16, 17
# |ours - diffusers| in [0, 1], float32: measured 3e-5 mean, 3.1e-4 max
MEAN, MAX = 1e-4, 6e-4
PNG = 0.01  # mean, through 8-bit PNG frames
SETTINGS = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES, "num_inference_steps": 1,
            "guidance_scale": 5.0}


def _picture(seed: int) -> Image.Image:
    """A random picture of another size than the video's (both sides resize it)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _diffusers(reference: Any, picture: Image.Image, output_type: str = "np") -> np.ndarray:
    with torch.no_grad():
        frames = reference(picture, RED, generator=torch.Generator().manual_seed(7),
                           output_type=output_type, **SETTINGS).frames
    return np.asarray(frames[0])


@pytest.fixture(scope="module")
def expected(tiny_kandinsky5_i2v: tuple[Path, Any]) -> np.ndarray:
    """diffusers' video of RED animating _picture(1)."""
    return _diffusers(tiny_kandinsky5_i2v[1], _picture(1))


def test_frames_equal_diffusers(first_device: gpucore.Device,
                                tiny_kandinsky5_i2v: tuple[Path, Any],
                                expected: np.ndarray) -> None:
    folder, reference = tiny_kandinsky5_i2v
    pipe = Kandinsky5VideoPipeline.from_pretrained(folder)
    ours = pipe(RED, image=_picture(1), seed=7, **SETTINGS)[0]
    assert ours.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).mean() < MEAN
    assert np.abs(ours - expected).max() < MAX
    # the picture matters, past the first frame too (diffusers' latents, not decoded: the
    # decode is the slow part; measured 0.11 mean)
    one, two = (_diffusers(reference, _picture(seed), "latent") for seed in (1, 2))
    assert one.shape[0] == 5 and np.abs(one[1:] - two[1:]).mean() > 0.05  # (F, h, w, C)
    with pytest.raises(ValueError, match="animates a picture"):
        pipe(RED, **SETTINGS)


def test_img2vid(first_device: gpucore.Device, tiny_kandinsky5_i2v: tuple[Path, Any],
                 expected: np.ndarray, tmp_path: Path,
                 capsys: pytest.CaptureFixture[str]) -> None:
    """`img2vid --image` on the folder gives diffusers' video; txt2vid, 13 frames and txt2img
    are refused in one line before the weights load."""
    folder, _ = tiny_kandinsky5_i2v
    _picture(1).save(tmp_path / "in.png")
    common = ("--model", str(folder), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", "1", "--seed", "7", "--dtype", "float32", "--prompt", RED)
    out, _ = cli_ok(capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"),
                    "--frames", str(FRAMES), "-o", str(tmp_path / "red"))
    assert np.abs(png_frames(out) - expected).mean() < PNG
    assert "animates a picture: use img2vid" in cli_error(
        capsys, "txt2vid", *common, "--frames", str(FRAMES), "-o", str(tmp_path / "x.webp"))
    assert "at least 17 frames, got 13" in cli_error(
        capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"), "--frames", "13",
        "-o", str(tmp_path / "x.webp"))
    assert "image-to-video model: make videos with `python -m diffusion img2vid" in cli_error(
        capsys, "txt2img", "--model", str(folder), "--prompt", RED)


def test_memory_modes_give_the_plain_frames(first_device: gpucore.Device,
                                            tiny_kandinsky5_i2v: tuple[Path, Any]) -> None:
    """Loaded to host memory (as the CLI loads for a memory mode): the offloaded run's frames
    bit for bit under --medvram and --lowvram (units uploaded: the mode is in effect), the
    picture encoded by the VAE before the steps too."""
    from diffusion.pipelines.sd.memory import MemoryMode

    folder, _ = tiny_kandinsky5_i2v
    pipe = Kandinsky5VideoPipeline.from_pretrained(folder, device=first_device, offload=True)
    plain = pipe(RED, image=_picture(1), seed=7, **SETTINGS)
    try:
        for mode in (MemoryMode(medvram=True), MemoryMode(lowvram=True)):
            pipe.set_memory_mode(mode)
            assert pipe._memory is not None
            start = pipe._memory.residency.uploaded
            np.testing.assert_array_equal(pipe(RED, image=_picture(1), seed=7, **SETTINGS),
                                          plain)
            assert pipe._memory.residency.uploaded > start
    finally:
        pipe.set_memory_mode(MemoryMode())
