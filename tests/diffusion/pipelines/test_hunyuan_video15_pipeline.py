"""HunyuanVideo 1.5 text-to-video (a HunyuanVideo15Pipeline folder of hunyuan_video15_pipe_tiny's
parts): our frames against diffusers' on PyTorch CPU float32 (a prompt quoting a glyph text,
the folder's CFG against the default negative prompt, its shifted schedule), the quoted text
visibly mattering, --lowvram's frames the plain run's; `txt2vid` on it; img2vid and txt2img
refused in one line."""

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
from diffusion.pipelines.video.hunyuan_video15 import HunyuanVideo15Pipeline

SIGN = 'a neon sign that says "OPEN" in a dark street'
# 5 frames: 2 latent frames; 4 x 6 latents (the tiny VAE's 8x; the CLI takes multiples of 16)
HEIGHT, WIDTH, FRAMES, STEPS = 32, 48, 5, 2
# |ours - diffusers| in [0, 1], float32: measured 6.8e-7 mean, 4.6e-6 max
MEAN, MAX = 3e-6, 2e-5
PNG = 0.01  # mean, through 8-bit PNG frames
SETTINGS = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES,
            "num_inference_steps": STEPS}


def _diffusers(reference: Any, prompt: str, output_type: str = "np") -> np.ndarray:
    with torch.no_grad():
        frames = reference(prompt, generator=torch.Generator().manual_seed(7),
                           output_type=output_type, **SETTINGS).frames
    return np.asarray(frames[0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, np.ndarray]:
    """(the folder, diffusers' pipeline, its video of SIGN)."""
    from hunyuan_video15_pipe_tiny import tiny_hunyuan_video15_pipeline

    root = tmp_path_factory.mktemp("tiny-hv15")
    reference = tiny_hunyuan_video15_pipeline(root)
    return root / "hv15", reference, _diffusers(reference, SIGN)


def test_frames_equal_diffusers(first_device: gpucore.Device,
                                tiny: tuple[Path, Any, np.ndarray]) -> None:
    folder, _, expected = tiny
    pipe = HunyuanVideo15Pipeline.from_pretrained(folder)
    ours = pipe(SIGN, seed=7, **SETTINGS)[0]
    assert ours.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).mean() < MEAN
    assert np.abs(ours - expected).max() < MAX
    pipe.set_memory_mode(MemoryMode(lowvram=True))  # the blocks streamed: the same frames
    assert np.array_equal(pipe(SIGN, seed=7, **SETTINGS)[0], ours)
    pipe.set_memory_mode(MemoryMode())
    # the quoted text matters: the velocity at the first step moves with ByT5's states
    # (measured by 1.3% of its mean size)
    model = pipe.transformer
    sample = np.random.default_rng(0).standard_normal((1, 9, 2, 4, 6)).astype(np.float32)
    flows = []
    for text in (SIGN, SIGN.replace("OPEN", "SHUT")):
        states, mask, glyph, glyph_mask = pipe.encode_prompt([text])
        flows.append(model(sample, np.float32([1000]), states, mask,
                           encoder_hidden_states_2=glyph,
                           encoder_attention_mask_2=glyph_mask).numpy())
    assert np.abs(flows[0] - flows[1]).mean() > 0.006 * np.abs(flows[0]).mean()
    with pytest.raises(ValueError, match="from text only"):
        pipe(SIGN, image=np.zeros((32, 48, 3), np.uint8), num_frames=FRAMES)


def test_txt2vid(first_device: gpucore.Device, tiny: tuple[Path, Any, np.ndarray],
                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`txt2vid` on the folder gives diffusers' video; img2vid, txt2img and a cache other
    than First Block Cache are refused in one line before the weights load."""
    folder, _, expected = tiny
    common = ("--model", str(folder), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", str(STEPS), "--seed", "7", "--dtype", "float32", "--prompt", SIGN,
              "--frames", str(FRAMES))
    out, _ = cli_ok(capsys, "txt2vid", *common, "-o", str(tmp_path / "sign"))
    assert np.abs(png_frames(out) - expected).mean() < PNG
    picture = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(picture)
    assert "makes videos from text only: use txt2vid" in cli_error(
        capsys, "img2vid", *common, "--image", str(picture), "-o", str(tmp_path / "x.webp"))
    assert "HunyuanVideo 1.5 text-to-video model: make videos with `python -m diffusion " \
        "txt2vid" in cli_error(capsys, "txt2img", "--model", str(folder), "--prompt", SIGN)
    assert "HunyuanVideo 1.5 runs First Block Cache (fbc[:THRESHOLD])" in cli_error(
        capsys, "txt2vid", *common, "--cache", "teacache", "-o", str(tmp_path / "x.webp"))
