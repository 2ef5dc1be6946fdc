"""Lucy Edit: a tiny LucyEditPipeline folder saved by diffusers (Wan 2.2 TI2V 5B's VAE, the
transformer reading the noise and the input video's latents side by side), a 40 x 24 video
resized to 64 x 32 and edited as the prompt says, equal to diffusers' LucyEditPipeline of the
same parts (the torch RNG's noise); another prompt and another video each visibly change it;
what it does not take is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from lucy_tiny import tiny_lucy_pipeline
from PIL import Image
from wan_tiny import wave_video

import gpucore

PROMPT = "make the cube red"
HEIGHT, WIDTH, FRAMES = 32, 64, 5
SETTINGS = dict(negative_prompt="blurry", num_inference_steps=2, guidance_scale=4.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The folder and diffusers' LucyEditPipeline of its parts (its prompt cleaning without
    ftfy, as WanPipeline's is where ftfy is not installed: the same for ASCII)."""
    from diffusers.pipelines.lucy import pipeline_lucy_edit
    from diffusers.pipelines.wan import pipeline_wan

    root = tmp_path_factory.mktemp("tiny-lucy")
    reference = tiny_lucy_pipeline(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_lucy_edit, "prompt_clean", pipeline_wan.prompt_clean)
        yield root / "lucy", reference


def diffusers_edit(reference: Any, video: list[Image.Image], prompt: str = PROMPT
                   ) -> np.ndarray:
    return reference(video=video, prompt=prompt, height=HEIGHT, width=WIDTH,
                     num_frames=len(video), output_type="np",
                     generator=torch.Generator().manual_seed(3), **SETTINGS).frames[0]


def test_edit_equals_diffusers(first_device: gpucore.Device, tiny: tuple[Path, Any]) -> None:
    """2 UniPC steps from noise, the video's latents beside it each step; the prompt and the
    video each move the frames (the tiny random VAE's frames move less than a trained
    one's)."""
    from diffusion.pipelines.video.lucy_edit import LucyEditPipeline

    folder, reference = tiny
    pipe = LucyEditPipeline.from_pretrained(folder, device=first_device)
    video = wave_video(1, 24, 40)

    def ours(frames: list[Image.Image], prompt: str = PROMPT) -> np.ndarray:
        return pipe(prompt, video=frames, height=HEIGHT, width=WIDTH, seed=3, **SETTINGS)[0]

    made = ours(video)
    expected = diffusers_edit(reference, video)
    assert made.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    error = np.abs(made - expected)
    assert error.mean() < 5e-6 and error.max() < 5e-5, (error.mean(), error.max())  # 1.4e-6, 1.3e-5
    # (a prompt of whole pieces of the tiny tokenizer: its training is not deterministic, and
    # a prompt of rarer pieces changes the frames by 0.02 to 0.08 with its draw)
    other = "the quick brown fox jumps over the lazy dog"
    assert np.abs(ours(video, other) - made).mean() > 0.04  # 0.072 to 0.078
    assert np.abs(ours(wave_video(2, 24, 40)) - made).mean() > 0.03  # 0.062 to 0.068


@pytest.mark.nodevice
def test_edit_refusals() -> None:
    from diffusion.pipelines.video.wan_refuse import refuse_lucy

    base: dict[str, Any] = dict(image=False, cache_kind=None, guidance_scale_2=None,
                                control=None, strength=None)
    for change, says in (({"image": True}, "takes no first frame"),
                         ({"control": "--control-video"}, "--control-video needs a Wan VACE"),
                         ({"strength": "--denoising-strength"},
                          "--denoising-strength: Lucy Edit runs the whole schedule"),
                         ({"cache_kind": "teacache"}, "for Lucy Edit use First Block Cache"),
                         ({"guidance_scale_2": 3.0}, "Lucy Edit has one transformer")):
        with pytest.raises(ValueError, match=says):
            refuse_lucy(**{**base, **change})
