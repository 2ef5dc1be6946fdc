"""SkyReels V2 text- and image-to-video through `python -m diffusion txt2vid` / `img2vid`:
tiny SkyReelsV2Pipeline and SkyReelsV2ImageToVideoPipeline folders saved by diffusers (Wan
2.1's pipelines in all but the transformer's name and the CLIP encoder's projection), our
frames equal to diffusers', the prompt and the picture visibly changing them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_frames
from PIL import Image
from skyreels_v2_tiny import tiny_skyreels_pipeline

import gpucore

RED = "a red cube on a wooden table"
SNOW = "two blue spheres in the snow at night"
COMMON = ("--width", "48", "--height", "32", "--frames", "5", "--steps", "2", "--cfg-scale",
          "4", "--negative-prompt", "blurry", "--seed", "3", "--dtype", "float32")


@pytest.fixture(autouse=True)
def _no_ftfy(monkeypatch: pytest.MonkeyPatch) -> None:
    """SkyReels' pipelines call ftfy unconditionally (not installed here); Wan's cleaning is
    the same for these ASCII prompts."""
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2, pipeline_skyreels_v2_i2v
    from diffusers.pipelines.wan import pipeline_wan

    for module in (pipeline_skyreels_v2, pipeline_skyreels_v2_i2v):
        monkeypatch.setattr(module, "prompt_clean", pipeline_wan.prompt_clean)


def test_txt2vid_equals_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    reference = tiny_skyreels_pipeline(tmp_path, "t2v")
    common = ("txt2vid", "--model", str(tmp_path / "skyreels-t2v"), *COMMON)
    ours = png_frames(cli_ok(capsys, *common, "--prompt", RED, "-o", str(tmp_path / "a"))[0])
    assert ours.shape == (5, 32, 48, 3)

    def expected(prompt: str) -> np.ndarray:
        return reference(prompt, negative_prompt="blurry", height=32, width=48, num_frames=5,
                         num_inference_steps=2, guidance_scale=4.0, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]

    assert np.abs(ours - expected(RED)).max() < 1.5 / 255  # the PNGs' rounding (measured 0.5)
    assert np.abs(expected(SNOW) - ours).mean() > 0.05  # the prompt matters


def test_img2vid_equals_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    reference = tiny_skyreels_pipeline(tmp_path, "i2v")
    rng = np.random.default_rng(3)
    pictures = [(rng.random((30, 44, 3)) * 255).astype(np.uint8) for _ in range(2)]
    outputs = []
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(tmp_path / f"in{i}.png")
        out, _ = cli_ok(capsys, "img2vid", "--model", str(tmp_path / "skyreels-i2v"),
                        "--image", str(tmp_path / f"in{i}.png"), "--prompt", RED, *COMMON,
                        "-o", str(tmp_path / f"out{i}"))
        outputs.append(png_frames(out))
    expected = reference(image=Image.fromarray(pictures[0]), prompt=RED,
                         negative_prompt="blurry", height=32, width=48, num_frames=5,
                         num_inference_steps=2, guidance_scale=4.0, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]
    assert outputs[0].shape == (5, 32, 48, 3)
    assert np.abs(outputs[0] - expected).max() < 1.5 / 255  # the PNGs' rounding
    assert np.abs(outputs[0] - outputs[1]).mean() > 0.02  # the picture matters
