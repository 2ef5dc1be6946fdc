"""LoRA for Kandinsky 5's image-to-video model through `img2vid --lora FILE[:WEIGHT]`: a LoRA
made with peft on diffusers' video transformer and saved by
`Kandinsky5I2VPipeline.save_lora_weights` gives, at the flag's weight, diffusers' video of the
picture after its `load_lora_weights` + `set_adapters`, in the plain mode and under --lowvram
(the LoRA written into weights that wait in host memory); the LoRA visibly changes the video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import diffusers
import torch
from cli_support import cli_ok, png_frames
from hunyuan_video_vae_tiny import HUNYUAN_VIDEO_VAE_TINY
from kandinsky5_tiny import tiny_kandinsky5_transformer
from lora_tiny import peft_lora
from PIL import Image

import gpucore

RED = "a red circle on a blue square"
# 17 frames: the fewest image to video takes (test_kandinsky5_i2v says why)
HEIGHT, WIDTH, FRAMES = 16, 16, 17
# the blocks' linear layers, the embeddings' and the output layer (test_kandinsky5_lora's)
TARGETS = r".+\.(to_query|to_key|to_value|out_layer|in_layer)"


def _picture() -> Image.Image:
    pixels = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        frames = reference(_picture(), RED, height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                           num_inference_steps=2, guidance_scale=1.0,
                           generator=torch.Generator().manual_seed(7), output_type="np").frames
    return np.asarray(frames[0])


@pytest.fixture(scope="module")
def lora(tiny_kandinsky5_i2v: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, np.ndarray]:
    """(a peft LoRA of the tiny video transformer, diffusers' video with it at 0.8)."""
    _, reference = tiny_kandinsky5_i2v
    channels = HUNYUAN_VIDEO_VAE_TINY["latent_channels"]
    model = tiny_kandinsky5_transformer(in_visual_dim=channels, out_visual_dim=channels,
                                        visual_cond=True)
    path = peft_lora(model, TARGETS, diffusers.Kandinsky5I2VPipeline,
                     tmp_path_factory.mktemp("k5i2v-lora"), "k5i2v")
    plain = _diffusers(reference)
    reference.load_lora_weights(str(path), adapter_name="k5i2v")
    try:
        reference.set_adapters(["k5i2v"], adapter_weights=[0.8])
        expected = _diffusers(reference)
    finally:
        reference.unload_lora_weights()
    # the LoRA matters (measured 0.14 mean)
    assert np.abs(expected - plain).mean() > 0.05
    return path, expected


@pytest.mark.parametrize("mode", [(), ("--lowvram",)], ids=["plain", "lowvram"])
def test_img2vid_lora_matches_diffusers(first_device: gpucore.Device,
                                        tiny_kandinsky5_i2v: tuple[Path, Any],
                                        lora: tuple[Path, np.ndarray], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        mode: tuple[str, ...]) -> None:
    (folder, _), (path, expected) = tiny_kandinsky5_i2v, lora
    _picture().save(tmp_path / "in.png")
    cli_ok(capsys, "img2vid", "--model", str(folder), "--image", str(tmp_path / "in.png"),
           "--width", str(WIDTH), "--height", str(HEIGHT), "--frames", str(FRAMES), "--steps",
           "2", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1", "--prompt", RED,
           "--lora", f"{path}:0.8", *mode, "-o", str(tmp_path / "lora"))
    # within a level of diffusers' frames, the PNG's rounding (measured: 1 level on 0.7% of
    # the values, 2.6e-5 mean)
    ours = png_frames(tmp_path / "lora")
    assert np.abs(ours - np.round(expected * 255) / 255).max() <= 1 / 255 + 1e-6
