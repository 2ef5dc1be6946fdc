"""HunyuanVideo-I2V (a HunyuanVideoImageToVideoPipeline folder of hunyuan_video_i2v_tiny's
parts, token_replace): our frames against diffusers' on PyTorch CPU float32 (the picture
through the VAE and LLaVA, its first latent frame kept each step, embedded guidance); another
picture visibly changes the video; the latent_concat transformer's inputs; `img2vid` on it,
and txt2vid refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames

import gpucore
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.pipelines.video.hunyuan_video import HunyuanVideoPipeline
from diffusion.pipelines.video.hunyuan_video_i2v import HunyuanVideoImageToVideoPipeline

PROMPT = "a red circle on a blue background"
# 5 frames: 2 latent frames; 8 x 12 latents (the tiny VAE's 4x), 4 x 6 patches
HEIGHT, WIDTH, FRAMES, STEPS = 32, 48, 5, 2
# (mean, max) |ours - diffusers| in [0, 1], float32: measured 2.0e-7 and 2.3e-6
# (latent_concat: 2.7e-7 and 1.9e-6)
TOL = (1e-6, 5e-6)
# true CFG triples the two passes' difference: measured 9.5e-7 and 1.3e-5
CFG_TOL = (5e-6, 3e-5)
SETTINGS = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES,
            "num_inference_steps": STEPS, "guidance_scale": 4.5, "max_sequence_length": 40}


def _picture(seed: int) -> Any:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny(tiny_hunyuan_video_i2v: tuple[Path, Any]) -> tuple[Path, Any, np.ndarray]:
    """(the folder, diffusers' pipeline, its video of PROMPT from picture 1)."""
    folder, reference = tiny_hunyuan_video_i2v
    with torch.no_grad():
        frames = reference(image=_picture(1), prompt=PROMPT, output_type="np",
                           generator=torch.Generator().manual_seed(7), **SETTINGS).frames
    return folder, reference, np.asarray(frames)[0]


def test_i2v_frames_equal_diffusers(first_device: gpucore.Device,
                                    tiny: tuple[Path, Any, np.ndarray]) -> None:
    """diffusers' frames (a prompt of 40 tokens' room); picture 2 moves them visibly."""
    folder, _reference, expected = tiny
    with pytest.raises(ValueError, match=r"is HunyuanVideo-I2V \(image to video\): load it with "
                                         "HunyuanVideoImageToVideoPipeline"):
        HunyuanVideoPipeline.from_pretrained(folder)
    pipe = HunyuanVideoImageToVideoPipeline.from_pretrained(folder)
    ours = pipe(PROMPT, image=_picture(1), seed=7, **SETTINGS)[0]
    assert ours.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).mean() < TOL[0]
    assert np.abs(ours - expected).max() < TOL[1]
    other = pipe(PROMPT, image=_picture(2), seed=7, **SETTINGS)[0]
    assert np.abs(other - ours).mean() > 0.012  # measured 0.025
    pipe.set_memory_mode(MemoryMode(lowvram=True))  # the blocks streamed: the same frames
    assert np.array_equal(pipe(PROMPT, image=_picture(1), seed=7, **SETTINGS)[0], ours)


def test_i2v_true_cfg_equals_diffusers(first_device: gpucore.Device,
                                       tiny: tuple[Path, Any, np.ndarray]) -> None:
    """True CFG against a negative prompt, which reads a black picture (every 2nd of its
    tokens, as diffusers): diffusers' frames, visibly not the unguided ones."""
    folder, reference, plain = tiny
    guided = {**SETTINGS, "negative_prompt": "a photo of a cat", "true_cfg_scale": 3.0}
    with torch.no_grad():
        expected = np.asarray(reference(image=_picture(1), prompt=PROMPT, output_type="np",
                                        generator=torch.Generator().manual_seed(7),
                                        **guided).frames)[0]
    ours = HunyuanVideoImageToVideoPipeline.from_pretrained(folder)(
        PROMPT, image=_picture(1), seed=7, **guided)[0]
    assert np.abs(ours - expected).mean() < CFG_TOL[0]
    assert np.abs(ours - expected).max() < CFG_TOL[1]
    assert np.abs(ours - plain).mean() > 0.05  # measured 0.14


def test_img2vid(first_device: gpucore.Device, tiny: tuple[Path, Any, np.ndarray],
                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`img2vid` on the folder gives diffusers' video (through 8-bit PNG frames); txt2vid is
    refused in one line before the weights load."""
    folder, _, expected = tiny
    picture = tmp_path / "in.png"
    _picture(1).save(picture)
    common = ("--model", str(folder), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", str(STEPS), "--seed", "7", "--dtype", "float32", "--prompt", PROMPT,
              "--frames", str(FRAMES), "--cfg-scale", "4.5")
    out, _ = cli_ok(capsys, "img2vid", *common, "--image", str(picture), "-o",
                    str(tmp_path / "circle"))
    assert np.abs(png_frames(out) - expected).mean() < 0.01
    assert "HunyuanVideo-I2V, which animates a picture: use img2vid --image IN.png" in \
        cli_error(capsys, "txt2vid", *common, "-o", str(tmp_path / "x.webp"))


def test_latent_concat_equals_diffusers(first_device: gpucore.Device,
                                        tmp_path: Path) -> None:
    """HunyuanVideo-I2V-33ch's way (the picture's latents and a mask as 2 x 4 + 1 channels,
    the first 4 decoded frames dropped): diffusers' 5 of 9 frames."""
    from hunyuan_video_i2v_tiny import tiny_hunyuan_video_i2v_pipeline

    reference = tiny_hunyuan_video_i2v_pipeline(tmp_path, condition="latent_concat")
    settings = {**SETTINGS, "num_frames": 9}
    with torch.no_grad():
        expected = np.asarray(reference(image=_picture(1), prompt=PROMPT, output_type="np",
                                        generator=torch.Generator().manual_seed(7),
                                        **settings).frames)[0]
    pipe = HunyuanVideoImageToVideoPipeline.from_pretrained(tmp_path / "hunyuan-video-i2v")
    ours = pipe(PROMPT, image=_picture(1), seed=7, **settings)[0]
    assert ours.shape == expected.shape == (5, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).mean() < TOL[0]
    assert np.abs(ours - expected).max() < TOL[1]
