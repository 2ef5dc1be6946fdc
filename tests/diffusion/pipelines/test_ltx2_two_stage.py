"""LTX-2's two-stage run (ltx2_two_stage) on a tiny random folder (ltx2_pipeline_tiny) with a
tiny random latent upsampler: image to video at half size, the latents upsampled, three
unguided steps over diffusers' stage-2 sigmas, against diffusers' recipe on PyTorch CPU
float32 (LTX2ImageToVideoPipeline with output_type="latent", LTX2LatentUpsamplePipeline, the
pipeline again with its scheduler's shift off, one generator throughout); `img2vid` with
--upsampler writing the video and its audio, and --upsampler refused for another family or a
size that does not halve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("av", reason="LTX-2's first frame is re-compressed with PyAV's H.264")
import torch
from cli_support import cli_error, cli_ok, png_frames
from ltx2_pipeline_tiny import tiny_ltx2_pipeline
from PIL import Image
from sd_tiny import randomized

import gpucore
from diffusion.pipelines.video.ltx2 import LTX2Pipeline
from diffusion.pipelines.video.ltx2_guidance import LTX2Guidance
from diffusion.pipelines.video.ltx2_start import STAGE_2_SIGMAS
from diffusion.pipelines.video.ltx2_two_stage import UNGUIDED, load_upsampler, two_stage

CAT = "a cat walks on the beach"
# the first stage 32 x 64 (2 x 2 x 4 tokens), the second 64 x 128 (2 x 4 x 8)
SIZE = {"height": 64, "width": 128, "num_frames": 9}
STG = (1,)
# float32, measured: frames 5.4e-6 max (frames ~0.5), waveform 1.1e-6 max (samples ~0.2)
FRAMES_MAX, AUDIO_MAX = 2e-5, 1e-5
OFF = {"guidance_scale": 1.0, "audio_guidance_scale": 1.0, "stg_scale": 0.0,
       "audio_stg_scale": 0.0, "modality_scale": 1.0, "audio_modality_scale": 1.0,
       "guidance_rescale": 0.0, "audio_guidance_rescale": 0.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """The tiny folder with a random latent_upsampler/ (8 channels, 32 wide) in it; (the
    folder, diffusers' pipeline, diffusers' upsampler)."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    folder, pipe = tiny_ltx2_pipeline(tmp_path_factory.mktemp("ltx2two"))
    upsampler = randomized(LTX2LatentUpsamplerModel(in_channels=8, mid_channels=32,
                                                    num_blocks_per_stage=1), 5).eval()
    upsampler.save_pretrained(folder / "latent_upsampler")
    return folder, pipe, upsampler


def _picture() -> Image.Image:
    return Image.fromarray(np.random.default_rng(4).integers(0, 256, (48, 80, 3), np.uint8))


def _diffusers(tiny: tuple[Path, Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    import diffusers
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplePipeline

    _, t2v, upsampler = tiny
    pipe = diffusers.LTX2ImageToVideoPipeline(**t2v.components)
    generator = torch.Generator().manual_seed(7)
    common = {"image": _picture(), "prompt": CAT, "num_frames": 9, "generator": generator,
              "max_sequence_length": 32, "return_dict": False}
    with torch.no_grad():
        video, audio = pipe(height=32, width=64, num_inference_steps=2, output_type="latent",
                            **OFF, **common)
        up = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)(
            latents=video, output_type="latent", return_dict=False)[0]
        pipe.scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(
            pipe.scheduler.config, use_dynamic_shifting=False, shift_terminal=None)
        frames, waveform = pipe(height=64, width=128, latents=up, audio_latents=audio,
                                noise_scale=STAGE_2_SIGMAS[0], sigmas=list(STAGE_2_SIGMAS),
                                num_inference_steps=3, output_type="np", **OFF, **common)
    return np.asarray(frames[0]), waveform[0].numpy()


def test_two_stage_equals_diffusers(first_device: gpucore.Device,
                                    tiny: tuple[Path, Any, Any]) -> None:
    """diffusers' recipe: our frames (64 x 128) and waveform (both stages unguided here, one
    pass a step: the first stage's guidance is image to video's, tested on its own)."""
    frames, audio = _diffusers(tiny)
    pipe = LTX2Pipeline.from_pretrained(tiny[0])
    ours = two_stage(pipe, load_upsampler(tiny[0]), CAT, image=_picture(), seed=7,
                     num_inference_steps=2, guidance=UNGUIDED, max_sequence_length=32,
                     **SIZE)
    assert ours.frames.shape == (1, 9, 64, 128, 3) and ours.audio is not None
    assert ours.audio[0].shape == audio.shape
    assert np.abs(ours.frames[0] - frames).max() < FRAMES_MAX
    assert np.abs(ours.audio[0] - audio).max() < AUDIO_MAX
    with pytest.raises(ValueError, match="multiples of 32 \\(the first stage makes half"):
        two_stage(pipe, load_upsampler(tiny[0]), CAT, height=48, width=128, num_frames=9)


def test_img2vid_two_stage(first_device: gpucore.Device, tiny: tuple[Path, Any, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`img2vid --upsampler`: the two-stage run's frames as PNGs with the WAV beside them;
    --upsampler refused in one line for a size that does not halve to the VAE's multiple
    and for a folder that is not LTX-2's."""
    _picture().save(tmp_path / "in.png")
    common = ("img2vid", "--model", str(tiny[0]), "--image", str(tmp_path / "in.png"),
              "--frames", "9", "--steps", "2", "--seed", "7", "--dtype", "float32",
              "--stg-blocks", "1", "--prompt", CAT, "--upsampler", str(tiny[0]))
    pipe = LTX2Pipeline.from_pretrained(tiny[0])
    expected = two_stage(pipe, load_upsampler(tiny[0]), CAT, image=_picture(), seed=7,
                         num_inference_steps=2, guidance=LTX2Guidance(stg_blocks=STG),
                         **SIZE)
    out, _ = cli_ok(capsys, *common, "--width", "128", "--height", "64", "-o",
                    str(tmp_path / "cat"))
    assert np.abs(png_frames(out) - expected.frames[0]).mean() < 0.01  # 8-bit PNGs
    assert (Path(out) / "audio.wav").is_file()
    assert "multiple of 32 for LTX-2 in two stages" in cli_error(
        capsys, *common, "--width", "128", "--height", "48", "-o", str(tmp_path / "x"))


def test_upsampler_refused_elsewhere() -> None:
    """Another family's txt2vid or img2vid refuses --upsampler in one line."""
    import argparse

    from diffusion.cli.txt2vid_ltx2 import refuse_ltx2_only

    with pytest.raises(ValueError, match=r"--upsampler is an LTX-2 option .* wan is another "
                       "family's model: leave it out"):
        refuse_ltx2_only(argparse.Namespace(upsampler="up.safetensors", model="wan"))
