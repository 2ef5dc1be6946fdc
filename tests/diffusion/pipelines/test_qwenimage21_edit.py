"""Qwen-Image 2.1's editing: condition pictures read by Qwen3-VL within the prompt and by the VAE
beside it, against diffusers' QwenImage21Pipeline(image=[...]) on a tiny random model (two
pictures of other sizes, one with transparency, true CFG), the pictures visibly mattering, the
vision tower run once for both prompts of true CFG; through the command line, img2img as the
edit (the init image and a --reference the condition pictures, from noise beside them) and a
denoising strength refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from PIL import Image

import gpucore
from diffusion.models.qwen21_prompt import encode_ti2i
from diffusion.pipelines.flow import qwen_image21
from diffusion.pipelines.flow.qwen_image21 import QwenImage21Pipeline

HEIGHT, WIDTH = 64, 96
PROMPT = "put the red circle on the blue square, " * 3
GUIDED = {"true_cfg_scale": 3.0, "negative_prompt": "blurry"}
FLOAT_TOL = 5e-4  # max |ours - diffusers| in [0, 1], float32; measured 7.0e-5 (4.8e-6 mean)
PNG_TOL = 0.01  # mean, through the PNG's rounding
# condition pictures read at about 256 x 256 pixels, not 1024 x 1024 (diffusers'
# output_resolution), for the tests' time on a CPU adapter
SIDE = 256


@pytest.fixture(autouse=True)
def small_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qwen_image21, "CONDITION_AREA", SIDE * SIDE)


def _pictures() -> list[Any]:
    """A picture at the output's size and a square one with uneven transparency (read over
    white by the vision tower, its alpha by the VAE)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)),
            Image.fromarray((rng.random((80, 80, 4)) * 255).astype(np.uint8), "RGBA")]


def _diffusers(reference: Any, pictures: list[Any], **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, image=pictures, height=HEIGHT, width=WIDTH,
                           num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                           output_type="np", output_resolution=SIDE, **settings).images
    return images[0][..., :3]


def test_condition_pictures_equal_diffusers(first_device: gpucore.Device,
                                            tiny_qwenimage21: tuple[Path, Any]) -> None:
    folder, reference = tiny_qwenimage21
    pipe = QwenImage21Pipeline.from_pretrained(folder, device=first_device)
    pictures = _pictures()
    ours = pipe(PROMPT, image=pictures, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                seed=7, **GUIDED)[0]
    assert np.abs(ours - _diffusers(reference, pictures, **GUIDED)).max() < FLOAT_TOL
    flipped = pipe(PROMPT, image=[pictures[0], pictures[1].transpose(Image.FLIP_LEFT_RIGHT)],
                   height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7, **GUIDED)[0]
    assert np.abs(flipped - ours).mean() > 20 * FLOAT_TOL  # the second picture matters
    plain = pipe(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                 **GUIDED)[0]
    assert np.abs(plain - ours).mean() > 10 * PNG_TOL  # the pictures as a whole matter


def test_the_tower_runs_once_for_both_prompts(first_device: gpucore.Device,
                                             tiny_qwenimage21: tuple[Path, Any],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With true CFG the positive and the negative prompts read the pictures' vision features
    from one run of the tower (a spy on its forward), and the picture is bit for bit the one
    of a run for each prompt (encode_ti2i a pass, as the pipeline read them before)."""
    pipe = QwenImage21Pipeline.from_pretrained(tiny_qwenimage21[0], device=first_device)
    assert pipe.vision is not None
    pictures, runs, forward = _pictures(), [], pipe.vision.forward

    def spy(pixels: Any, grids: Any) -> Any:
        runs.append(len(grids))
        return forward(pixels, grids)

    def draw() -> np.ndarray:
        return pipe(PROMPT, image=pictures, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                    seed=7, **GUIDED)[0]

    monkeypatch.setattr(pipe.vision, "forward", spy)
    once = draw()
    assert runs == [2]  # one run, both pictures
    resized = [qwen_image21.condition_rgba(p, pipe.condition_area) for p in pictures]
    monkeypatch.setattr(qwen_image21, "encode_read", lambda text, tokenizer, texts, _: (
        encode_ti2i(text, pipe.vision, tokenizer, texts, resized,
                    processor_config=pipe.processor_config)))
    each = draw()
    assert runs == [2, 2, 2, 2]  # read_pictures' run, unused, and one a prompt
    np.testing.assert_array_equal(once, each)


def test_img2img_is_the_edit(first_device: gpucore.Device,
                             tiny_qwenimage21: tuple[Path, Any], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_qwenimage21
    pictures = _pictures()  # the reference's transparency kept by the CLI
    for name, picture in zip(("init.png", "ref.png"), pictures, strict=True):
        picture.save(tmp_path / name)
    common = ("img2img", "--model", str(folder), "--init-image", str(tmp_path / "init.png"),
              "--reference", str(tmp_path / "ref.png"), "--prompt", PROMPT,
              "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "2", "--seed", "7",
              "--dtype", "float32")
    out, _ = cli_ok(capsys, *common, "--sampler", "diffusers", "--rng", "torch",
                    "--out", str(tmp_path / "a.png"))
    assert np.abs(png_pixels(out) - _diffusers(reference, pictures)).mean() < PNG_TOL
    error = cli_error(capsys, *common, "--strength", "0.5", "--out", str(tmp_path / "b.png"))
    assert "denoising strength 0.5: not supported for Qwen-Image 2.1 models" in error
    assert not (tmp_path / "b.png").exists()
