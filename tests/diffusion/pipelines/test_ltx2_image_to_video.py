"""LTX-2 image to video with audio (LTX2ImageToVideoPipeline on an LTX-2 folder): a tiny random
folder saved by diffusers (ltx2_pipeline_tiny), our frames and waveform against diffusers' on
PyTorch CPU float32 with a random picture at its default guidance and H.264 re-compression
(CRF 33); latent frame 0 the picture's latents, kept through the steps; the picture visibly
mattering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("av", reason="LTX-2's first frame is re-compressed with PyAV's H.264")
import torch
from ltx2_pipeline_tiny import tiny_ltx2_pipeline
from PIL import Image

import gpucore
from diffusion.pipelines.video.ltx2 import LTX2Pipeline
from diffusion.pipelines.video.ltx2_guidance import LTX2Guidance
from diffusion.pipelines.video.ltx2_start import image_latents

CAT = "a cat walks on the beach"
SIZE = {"height": 32, "width": 64, "num_frames": 9, "num_inference_steps": 2,
        "max_sequence_length": 32}  # 2 x 2 x 4 video tokens (frame 0's 8 kept), 9 audio
STG = (1,)  # the tiny transformer's last block
# float32, measured: frames 6.7e-6 max, waveform 1.7e-6 max (as text to video's)
FRAMES_MAX, AUDIO_MAX = 2e-5, 1e-5


def _picture(seed: int) -> Image.Image:
    """A random 40 x 56 picture: resized to the video's 64 x 32 (its aspect not kept)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 56, 3), np.uint8))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return tiny_ltx2_pipeline(tmp_path_factory.mktemp("ltx2i2v"))


def test_image_to_video_equals_diffusers(first_device: gpucore.Device,
                                         tiny: tuple[Path, Any]) -> None:
    """diffusers' LTX2ImageToVideoPipeline at its defaults (STG at the last block, CRF 33):
    our frames and waveform; the picture's latents are latent frame 0 after the steps, and
    another picture moves the frames."""
    import diffusers

    folder, t2v = tiny
    reference = diffusers.LTX2ImageToVideoPipeline(**t2v.components)
    with torch.no_grad():
        video, audio = reference(image=_picture(1), prompt=CAT,
                                 generator=torch.Generator().manual_seed(7), output_type="np",
                                 return_dict=False, spatio_temporal_guidance_blocks=list(STG),
                                 **SIZE)
    pipe = LTX2Pipeline.from_pretrained(folder)
    settings = {**SIZE, "guidance": LTX2Guidance(stg_blocks=STG), "seed": 7}
    steps: list[np.ndarray] = []
    ours = pipe(CAT, image=_picture(1), callback=lambda i, n, x: steps.append(x.copy()),
                **settings)
    assert ours.frames[0].shape == video[0].shape and ours.audio[0].shape == audio[0].shape
    assert np.abs(ours.frames[0] - video[0]).max() < FRAMES_MAX
    assert np.abs(ours.audio[0] - audio[0].numpy()).max() < AUDIO_MAX
    # the first latent frame is the picture's (re-compressed, resized, encoded), untouched
    first = image_latents(pipe.vae, _picture(1), 32, 64, 33)  # (1, C, 1, 2, 4): 8 tokens
    for tokens in steps:
        np.testing.assert_array_equal(tokens[:, :8], first.reshape(1, -1, 8).transpose(0, 2, 1))
    other = pipe(CAT, image=_picture(2), **settings)
    assert np.abs(other.frames - ours.frames).mean() > 1e-2
    assert np.abs(other.audio - ours.audio).mean() > 1e-4


def test_memory_modes_give_the_plain_video(first_device: gpucore.Device,
                                           tiny: tuple[Path, Any]) -> None:
    """Loaded to host memory (as the CLI loads for a memory mode): the picture encoded and
    the video made under --medvram and --lowvram, bit for bit the offloaded plain run's."""
    from diffusion.pipelines.sd.memory import MemoryMode

    pipe = LTX2Pipeline.from_pretrained(tiny[0], device=first_device, offload=True)
    settings = {**SIZE, "guidance": LTX2Guidance(stg_blocks=STG), "seed": 7,
                "image": _picture(1), "image_crf": 0}
    plain = pipe(CAT, **settings)
    for mode in (MemoryMode(medvram=True), MemoryMode(lowvram=True)):
        pipe.set_memory_mode(mode)
        got = pipe(CAT, **settings)
        np.testing.assert_array_equal(got.frames, plain.frames)
        np.testing.assert_array_equal(got.audio, plain.audio)
    pipe.set_memory_mode(MemoryMode())
