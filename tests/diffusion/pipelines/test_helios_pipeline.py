"""Helios' pipeline against diffusers' HeliosPipeline on PyTorch CPU float32 (a tiny random
folder of helios_tiny): UMT5 with a negative prompt under CFG, two chunks (the second drawn
in front of the first's history), the HeliosScheduler's UniPC (and Euler with a dynamic
shift), each chunk decoded by the Wan VAE; the prompt visibly steering the video."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_error, cli_ok, png_frames
from helios_tiny import tiny_helios_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.video.helios import HeliosPipeline
from diffusion.pipelines.video.helios_schedule import helios_mu, helios_sigmas

PROMPT = "a red fox runs through the snow"
# two chunks of 2 latent frames (5 frames each), 9 frames after the cut to 1 + 4k
RUN: dict[str, Any] = {"height": 32, "width": 48, "num_inference_steps": 3, "num_frames": 10,
                       "guidance_scale": 4.0, "negative_prompt": "blurry",
                       "num_latent_frames_per_chunk": 2, "max_sequence_length": 16}
TOL = 1e-4  # of frames in [0, 1]: measured 1.0e-5


@pytest.fixture(autouse=True)
def _no_ftfy(monkeypatch: pytest.MonkeyPatch) -> None:
    """HeliosPipeline calls ftfy unconditionally (not installed here); Wan's cleaning is the
    same for these ASCII prompts."""
    from diffusers.pipelines.helios import pipeline_helios
    from diffusers.pipelines.wan import pipeline_wan

    monkeypatch.setattr(pipeline_helios, "prompt_clean", pipeline_wan.prompt_clean)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("helios")
    return tiny_helios_pipeline(root), root / "helios"


def _theirs(pipe: Any, **extra: Any) -> np.ndarray:
    with torch.no_grad():
        out = pipe(prompt=PROMPT, **{**RUN, **extra},
                   generator=torch.Generator().manual_seed(7))
    return np.asarray(out.frames)


@pytest.fixture(scope="module")
def ours(first_device: gpucore.Device, built: tuple[Any, Path]) -> HeliosPipeline:
    return HeliosPipeline.from_pretrained(built[1], device=first_device)


def test_helios_equals_diffusers(ours: HeliosPipeline, built: tuple[Any, Path]) -> None:
    reference, _ = built
    video = ours(PROMPT, **RUN, seed=7)
    expected = _theirs(reference, output_type="np")
    assert video.shape == expected.shape == (1, 9, 32, 48, 3)
    assert_close(video, expected, tol=TOL, atol=TOL)
    latents = ours([PROMPT, "a blue whale sings"], **{**RUN, "num_frames": 5}, seed=7,
                   output_type="latent")
    assert latents.shape == (2, 4, 2, 4, 6)
    assert np.abs(latents[1] - latents[0]).mean() > 0.02 * np.abs(latents[0]).mean()


def test_helios_image_to_video_equals_diffusers(ours: HeliosPipeline,
                                               built: tuple[Any, Path]) -> None:
    """`image`: the picture's posterior draw (noised) ahead of every chunk and the still
    video's last latent frame as the history's newest, diffusers' draws in diffusers' order;
    another picture changes the video."""
    from PIL import Image

    reference, _ = built
    rng = np.random.default_rng(3)
    pictures = [Image.fromarray((rng.uniform(0, 1, (32, 48, 3)) * 255).astype(np.uint8))
                for _ in range(2)]
    video = ours(PROMPT, **RUN, seed=7, image=pictures[0])
    assert_close(video, _theirs(reference, image=pictures[0], output_type="np"), tol=TOL,
                 atol=TOL)
    other = ours(PROMPT, **RUN, seed=7, image=pictures[1])
    assert np.abs(other - video).mean() > 0.01


def test_helios_video_to_video_equals_diffusers(ours: HeliosPipeline,
                                               built: tuple[Any, Path]) -> None:
    """`video`: 11 frames continued, its first frame ahead of every chunk and its last two
    whole chunks (5 frames each, the first frame left over) as the history, diffusers' draws
    in diffusers' order; another video changes the continuation; a video shorter than a
    chunk is refused in one line."""
    from wan_tiny import wave_video

    reference, _ = built
    given = wave_video(4, 32, 48, frames=11)
    video = ours(PROMPT, **RUN, seed=7, video=given)
    assert_close(video, _theirs(reference, video=given, output_type="np"), tol=TOL, atol=TOL)
    other = ours(PROMPT, **RUN, seed=7, video=wave_video(5, 32, 48, frames=11))
    assert np.abs(other - video).mean() > 0.01
    with pytest.raises(ValueError, match="whole chunks of 5: give at least 5"):
        ours(PROMPT, **RUN, video=given[:4])


@pytest.mark.parametrize("shift", ["exponential", "linear"])
def test_helios_euler_with_dynamic_shift(first_device: gpucore.Device, tmp_path: Path,
                                         shift: str) -> None:
    """A folder whose HeliosScheduler steps by Euler on dynamically shifted sigmas (mu of
    the chunk's token count); the shift visibly moves the inner sigmas."""
    reference = tiny_helios_pipeline(tmp_path, scheduler_type="euler",
                                     use_dynamic_shifting=True, time_shift_type=shift)
    ours = HeliosPipeline.from_pretrained(tmp_path / "helios", device=first_device)
    video = ours(PROMPT, **RUN, seed=7)
    assert_close(video, _theirs(reference, output_type="np"), tol=TOL, atol=TOL)
    config = ours.scheduler_config
    mu = helios_mu(2 * 4 * 6 // 4, config)
    shifted = helios_sigmas(3, mu, config)
    plain = helios_sigmas(3, mu, {**config, "use_dynamic_shifting": False})
    assert np.abs(shifted - plain)[1:-1].min() > 0.02


def test_helios_refuses_what_it_cannot_run(ours: HeliosPipeline) -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        ours(PROMPT, **{**RUN, "height": 40})
    with pytest.raises(ValueError, match="history sizes"):
        ours(PROMPT, **RUN, history_sizes=(2, 1))
    with pytest.raises(ValueError, match="pyramid"):
        HeliosPipeline(transformer=ours.transformer, vae=ours.vae, tokenizer=ours.tokenizer,
                       text_encoder=ours.text_encoder, scheduler_config={"stages": 3})


def test_helios_from_the_cli(first_device: gpucore.Device, built: tuple[Any, Path],
                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """txt2vid: one 33-frame chunk, diffusers' video as PNG frames (a note where --frames is
    not whole chunks); what Helios does not take refused in one line; txt2img says to use
    txt2vid."""
    reference, folder = built
    common = ("--model", str(folder), "--width", "48", "--height", "32", "--steps", "2",
              "--cfg-scale", "4", "--seed", "7", "--dtype", "float32", "--prompt", PROMPT,
              "--negative-prompt", "blurry")
    out, err = cli_ok(capsys, "txt2vid", *common, "--frames", "29", "-o", str(tmp_path / "v"))
    assert "seed: 7" in err and "33 frames for --frames 29" in err
    with torch.no_grad():
        expected = reference(prompt=PROMPT, negative_prompt="blurry", height=32, width=48,
                             num_frames=29, num_inference_steps=2, guidance_scale=4.0,
                             generator=torch.Generator().manual_seed(7)).frames[0]
    frames = png_frames(out)
    assert frames.shape == (33, 32, 48, 3)
    assert np.abs(frames - np.asarray(expected)).max() < 1 / 255
    webp = ("-o", str(tmp_path / "r.webp"))  # (an .mp4 would first need PyAV)
    for more, words in ((("--sampler", "Euler"), "HeliosScheduler"),
                        (("--cache", "fbc"), "--cache: not supported")):
        assert words in cli_error(capsys, "txt2vid", *common, *more, *webp)
    refused = cli_error(capsys, "txt2img", "--model", str(folder), "--prompt", PROMPT)
    assert "Helios text-to-video model" in refused


def test_helios_inputs_from_the_cli(built: tuple[Any, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """txt2vid --init-video: the video's frames, in order, reach the pipeline (which resizes
    them to --width x --height) as the video to continue; img2vid's --image as the picture
    (their runs against diffusers': the tests above; here a stand-in pipeline records what it
    is given); a short video or --denoising-strength is refused in one line before anything
    loads."""
    from PIL import Image

    from diffusion.pipelines.video import helios as module

    _, folder = built
    given: dict[str, Any] = {}

    class Recorder:
        memory_mode = None

        def set_memory_mode(self, mode: Any) -> None:
            assert not mode

        def __call__(self, prompt: str, **kwargs: Any) -> np.ndarray:
            given.update(kwargs)
            return np.zeros((1, 33, 32, 48, 3), np.float32)

    monkeypatch.setattr(module.HeliosPipeline, "from_pretrained",
                        classmethod(lambda cls, path, dtype, offload: Recorder()))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(34):
        Image.new("RGB", (64, 40), (i * 7, 50, 90)).save(frames / f"{i:05d}.png")
    common = ("txt2vid", "--model", str(folder), "--width", "48", "--height", "32",
              "--frames", "33", "--dtype", "float32", "--prompt", PROMPT)
    cli_ok(capsys, *common, "--init-video", str(frames), "-o", str(tmp_path / "v"))
    assert len(given["video"]) == 34 and given["image"] is None
    assert given["video"][5].getpixel((0, 0)) == (35, 50, 90)
    cli_ok(capsys, "img2vid", *common[1:], "--image", str(frames / "00003.png"), "-o",
           str(tmp_path / "i2v"))
    assert given["video"] is None and given["image"].getpixel((0, 0)) == (21, 50, 90)
    assert "strength" in cli_error(capsys, *common, "--init-video", str(frames),
                                   "--denoising-strength", "0.5")
    for extra in frames.glob("0000[5-9].png"):
        extra.unlink()
    for extra in frames.glob("000[1-3]*.png"):
        extra.unlink()
    assert "whole chunks of 33" in cli_error(capsys, *common, "--init-video", str(frames))


def test_helios_pyramid_folder_is_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A HeliosPyramidPipeline folder (Helios-Mid, Helios-Distilled) is told apart as Helios
    and refused in one line naming what runs instead."""
    import json

    from diffusion.loaders.helios import helios_family

    folder = tmp_path / "pyramid"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "HeliosPyramidPipeline"}))
    assert helios_family(folder) == "helios"
    refused = cli_error(capsys, "txt2vid", "--model", str(folder), "--prompt", PROMPT,
                        "--frames", "33", "--width", "48", "--height", "32", "-o",
                        str(tmp_path / "r.webp"))  # (an .mp4 would first need PyAV)
    assert "HeliosPyramidPipeline" in refused and "Helios-Base" in refused


def test_helios_loader_skips_norm_added_q(built: tuple[Any, Path], tmp_path: Path) -> None:
    """A transformer file holding `norm_added_q` (which diffusers ignores on load) loads
    without it."""
    from safetensors.numpy import load_file, save_file

    from diffusion.loaders.helios import load_helios_folder

    folder = tmp_path / "helios"
    shutil.copytree(built[1], folder)
    (file,) = (folder / "transformer").glob("*.safetensors")
    tensors = load_file(file)
    save_file({**tensors, "blocks.0.attn2.norm_added_q.weight": np.ones(24, np.float32)}, file)
    weights = load_helios_folder(folder)
    assert weights.transformer is not None
    assert set(weights.transformer) == set(tensors)
