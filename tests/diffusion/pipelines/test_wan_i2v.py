"""Wan 2.1 image-to-video through `python -m diffusion img2vid`: a tiny WanImageToVideoPipeline
folder (CLIPVisionModel image encoder, CLIPImageProcessor) saved by diffusers; our frames equal
to diffusers' (the CLIP penultimate states, the mask and the first frame's latents concatenated
to the noise), the picture visibly changing them, and a missing picture refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import png_frames
from PIL import Image
from wan_tiny import tiny_wan_i2v_pipeline

import diffusion.cli.main as cli
import gpucore

PROMPT = "a red cube on a wooden table"


@pytest.fixture(scope="module")
def tiny_i2v(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-wan-i2v")
    return root / "wan-i2v", tiny_wan_i2v_pipeline(root)


def test_img2vid_equals_diffusers(first_device: gpucore.Device, tiny_i2v: tuple[Path, Any],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_i2v

    # the image-to-video module calls ftfy unconditionally; WanPipeline's cleaning skips it
    # when it is not installed (as here), and is the same for this ASCII prompt
    monkeypatch.setattr(pipeline_wan_i2v, "prompt_clean", pipeline_wan.prompt_clean)
    folder, reference = tiny_i2v
    rng = np.random.default_rng(3)
    # not the video's size nor square: both the VAE's resize and CLIP's crop matter
    pictures = [(rng.random((30, 44, 3)) * 255).astype(np.uint8) for _ in range(2)]
    outputs = []
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(tmp_path / f"in{i}.png")
        code = cli.main(["img2vid", "--model", str(folder), "--image",
                         str(tmp_path / f"in{i}.png"), "--prompt", PROMPT, "--width", "48",
                         "--height", "32", "--frames", "5", "--steps", "2", "--cfg-scale", "3",
                         "--negative-prompt", "blurry", "--seed", "4", "--dtype", "float32",
                         "-o", str(tmp_path / f"out{i}")])
        out, err = capsys.readouterr()
        assert code == 0, err
        outputs.append(png_frames(out.strip()))
    assert outputs[0].shape == (5, 32, 48, 3)
    expected = reference(image=Image.fromarray(pictures[0]), prompt=PROMPT,
                         negative_prompt="blurry", height=32, width=48, num_frames=5,
                         num_inference_steps=2, guidance_scale=3.0, output_type="np",
                         generator=torch.Generator().manual_seed(4)).frames[0]
    assert np.abs(outputs[0] - expected).mean() < 0.01
    assert np.abs(outputs[0] - outputs[1]).mean() > 0.02  # the picture matters


def test_txt2vid_refused(first_device: gpucore.Device, tiny_i2v: tuple[Path, Any],
                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An image-to-video model without a picture: one line saying to give one."""
    code = cli.main(["txt2vid", "--model", str(tiny_i2v[0]), "--prompt", "x", "--width", "48",
                     "--height", "32", "--frames", "5", "--steps", "1", "--dtype", "float32",
                     "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "img2vid --image" in err and "Traceback" not in err, err
