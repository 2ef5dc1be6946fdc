"""Qwen-Image-Edit's, Edit Plus's and Qwen-Image-Layered's transformer steps replayed from the
capture their pipeline keeps (diffusion.pipelines.flow.flow_replay; the reference pictures'
tokens ride in the packed input, their grids static arguments), on tiny random folders: over
several steps with true CFG and over two prompts on those recordings the latents are the
eager ones bit for bit; a weight written in place is replayed, a replaced one recorded
afresh (replay_checks); a step cache runs the steps eagerly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from PIL import Image
from replay_checks import check_replays, counts, read_once

import gpucore

AREA = 64 * 96  # the references' pixels (diffusers' 1024 x 1024 would be slow here)
# two instructions of as many tokens: one input signature each pass
PROMPTS = ("a red circle on a blue square, " * 4, "a red square on a blue circle, " * 4)
NEGATIVE = "a blurry photo, " * 4


def _picture(seed: int, channels: int = 3) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (60, 100, channels), dtype=np.uint8)
    return Image.fromarray(pixels, "RGBA" if channels == 4 else "RGB")


def test_qwenimage_edit_replays_its_steps(first_device: gpucore.Device,
                                          tiny_qwenimage_edit: tuple[Path, Any]) -> None:
    """Two steps with true CFG (a recording each pass), then a second instruction on them;
    a weight changed in place and replaced; a step cache runs eagerly."""
    from diffusion.models.step_cache import CacheSpec, StepCache
    from diffusion.pipelines.flow.qwen_image_edit import QwenImageEditPipeline

    pipe = QwenImageEditPipeline.from_pretrained(tiny_qwenimage_edit[0], device=first_device)
    pipe.reference_area = AREA
    read_once(pipe, "encode_edit_prompt")
    read_once(pipe, "reference_latents")
    picture = _picture(1)

    def draw(prompt: str, **more: Any) -> np.ndarray:
        return pipe(prompt, image=picture, num_inference_steps=2, true_cfg_scale=4.0,
                    negative_prompt=NEGATIVE, seed=7, output_type="latent", **more)

    check_replays(pipe, draw, PROMPTS, 2, 2, pipe.transformer.proj_out)
    before = counts(pipe)
    draw(PROMPTS[0], cache=StepCache(CacheSpec("fbc", 0.5), 2))
    assert counts(pipe) == before


def test_qwenimage_edit_plus_replays_two_references(first_device: gpucore.Device,
                                                    tiny_qwenimage_edit: tuple[Path, Any]
                                                    ) -> None:
    """Edit Plus with two references (two grids after the noise's): replayed, the eager
    latents, and the second reference visibly matters."""
    from diffusion.pipelines.flow.qwen_image_edit_plus import QwenImageEditPlusPipeline

    pipe = QwenImageEditPlusPipeline.from_pretrained(tiny_qwenimage_edit[0],
                                                     device=first_device)
    pipe.reference_area = AREA
    read_once(pipe, "encode_edit_prompt")
    read_once(pipe, "reference_latents")

    def draw(prompt: str, second: int = 2) -> np.ndarray:
        return pipe(prompt, image=[_picture(1), _picture(second)], num_inference_steps=2,
                    true_cfg_scale=1.0, seed=7, output_type="latent")

    check_replays(pipe, draw, PROMPTS, 1, 1, pipe.transformer.proj_out)
    assert np.abs(draw(PROMPTS[0]) - draw(PROMPTS[0], 3)).mean() > 0.01


def test_qwenimage_layered_replays_its_steps(first_device: gpucore.Device,
                                             tiny_qwenimage_layered: tuple[Path, Any]) -> None:
    """Qwen-Image-Layered: the layers' and the picture's grids and the RGBA flag static
    arguments, true CFG a recording each pass."""
    from diffusion.pipelines.flow.qwen_image_layered import QwenImageLayeredPipeline

    pipe = QwenImageLayeredPipeline.from_pretrained(tiny_qwenimage_layered[0],
                                                    device=first_device)
    pipe.areas = {640: AREA}
    read_once(pipe, "encode_prompt")
    read_once(pipe, "picture_latents")
    picture = _picture(1, 4)

    def draw(prompt: str) -> np.ndarray:
        return pipe(picture, prompt, layers=2, num_inference_steps=3, true_cfg_scale=4.0,
                    negative_prompt=NEGATIVE, seed=7, output_type="latent")

    check_replays(pipe, draw, PROMPTS, 2, 4, pipe.transformer.proj_out, differ=1e-3)
