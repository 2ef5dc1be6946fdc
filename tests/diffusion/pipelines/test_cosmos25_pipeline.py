"""Cosmos Predict2.5's pipeline against diffusers' Cosmos2_5_PredictBasePipeline on PyTorch CPU
float32 (a tiny random folder of cosmos_tiny): Qwen2.5-VL's normalised layer stack of the
chat, text2world with CFG and Cosmos' default negative prompt, image2world (the picture's
latent frame held, its own timestep), the decoded video; the prompt and the picture visibly
steering the video; txt2vid and img2vid from the command line, and video2world (txt2vid
--init-video)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_error, cli_ok, png_frames
from cosmos_tiny import tiny_cosmos25_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.video.cosmos25 import Cosmos25PredictPipeline

PROMPT = "a robot arm stacks red blocks"
RUN: dict[str, Any] = {"height": 32, "width": 48, "num_frames": 5, "num_inference_steps": 3,
                       "guidance_scale": 3.0}
TOL = 1e-4  # of latents ~3: measured 5.8e-5 (text2world), 3.8e-5 (image2world)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("cosmos25")
    return tiny_cosmos25_pipeline(root), root / "cosmos25"


def _theirs(pipe: Any, **extra: Any) -> np.ndarray:
    with torch.no_grad():
        out = pipe(prompt=PROMPT, **RUN, generator=torch.Generator().manual_seed(7), **extra)
    return np.asarray(out.frames)


def test_cosmos25_text_and_image_to_world_equal_diffusers(first_device: gpucore.Device,
                                                          built: tuple[Any, Path]) -> None:
    from PIL import Image

    reference, folder = built
    ours = Cosmos25PredictPipeline.from_pretrained(folder, device=first_device)
    with torch.no_grad():
        states = reference.encode_prompt(PROMPT, do_classifier_free_guidance=False,
                                         device="cpu")[0].numpy()
    assert_close(ours.prompt_states([PROMPT]), states, tol=1e-4)  # measured 3.7e-6
    # text2world: the decoded video; another prompt in the batch moves the latents
    video = ours(PROMPT, **RUN, seed=7)
    assert_close(video, _theirs(reference, output_type="np"), tol=1e-3)
    latents = ours([PROMPT, "a cat sleeps on a sofa"], **RUN, seed=7, output_type="latent")
    assert np.abs(latents[1] - latents[0]).mean() > 0.02 * np.abs(latents[0]).mean()
    # image2world, two pictures in a batch: the first's latents diffusers' (its video path of
    # one frame: its image path needs torchvision), the second's other after the held frame
    rng = np.random.default_rng(0)
    pictures = (rng.uniform(0, 1, (2, 32, 48, 3)) * 255).astype(np.uint8)
    held = ours([PROMPT] * 2, **RUN, seed=7, output_type="latent",
                frames=pictures[:, None] / 255)
    expected = _theirs(reference, video=[Image.fromarray(pictures[0])], output_type="latent",
                       num_latent_conditional_frames=1)
    assert_close(held[:1], expected, tol=TOL)
    assert np.abs(held[1] - held[0])[:, 1:].mean() > 0.02 * np.abs(held[0]).mean()


def test_cosmos25_from_the_cli(first_device: gpucore.Device, built: tuple[Any, Path],
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """txt2vid: diffusers' video as PNG frames; img2vid: the picture as the first frame
    (diffusers' video path of one frame); what Cosmos does not take refused in one line."""
    from PIL import Image

    reference, folder = built
    common = ("--model", str(folder), "--width", "48", "--height", "32", "--frames", "5",
              "--steps", "3", "--cfg-scale", "3", "--seed", "7", "--dtype", "float32",
              "--prompt", PROMPT)
    out, err = cli_ok(capsys, "txt2vid", *common, "-o", str(tmp_path / "t2w"))
    assert "seed: 7" in err
    assert np.abs(png_frames(out) - _theirs(reference, output_type="np")[0]).max() < 1 / 255
    picture = (np.random.default_rng(1).uniform(0, 1, (32, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    out, _ = cli_ok(capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"),
                    "-o", str(tmp_path / "i2w"))
    expected = _theirs(reference, video=[Image.fromarray(picture)], output_type="np",
                       num_latent_conditional_frames=1)[0]
    assert np.abs(png_frames(out) - expected).max() < 1 / 255
    for more, words in ((("--sampler", "Euler"), "runs its folder's UniPC"),
                        (("--lowvram",), "a memory mode"),
                        (("--cache", "fbc"), "--cache: not supported")):
        assert words in cli_error(capsys, "txt2vid", *common, *more)
    refused = cli_error(capsys, "txt2img", "--model", str(folder), "--prompt", PROMPT)
    assert "Cosmos Predict2.5 text-to-video model" in refused


def _video(seed: int, count: int) -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(seed)  # 40 x 56: resized to the run's 32 x 48
    return [Image.fromarray((rng.uniform(0, 1, (40, 56, 3)) * 255).astype(np.uint8))
            for _ in range(count)]


def _continued(pipe: Any, video: list[Any]) -> np.ndarray:
    with torch.no_grad():
        out = pipe(prompt=PROMPT, video=video, height=32, width=48, num_frames=9,
                   num_inference_steps=2, guidance_scale=3.0, output_type="np",
                   generator=torch.Generator().manual_seed(7))
    return np.asarray(out.frames[0])


def test_cosmos25_video2world_from_the_cli(first_device: gpucore.Device,
                                           built: tuple[Any, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """txt2vid --init-video: a 7-frame video of another size, its last 5 frames resized and
    held, diffusers' video2world; the video visibly steering it; what does not fit refused."""
    reference, folder = built
    video = _video(3, 7)
    for i, frame in enumerate(video):
        (tmp_path / "in").mkdir(exist_ok=True)
        frame.save(tmp_path / "in" / f"{i:05d}.png")
    common = ("--model", str(folder), "--width", "48", "--height", "32",
              "--steps", "2", "--cfg-scale", "3", "--seed", "7", "--dtype", "float32",
              "--prompt", PROMPT, "--init-video", str(tmp_path / "in"))
    out, _ = cli_ok(capsys, "txt2vid", *common, "--frames", "9", "-o", str(tmp_path / "v2w"))
    expected = _continued(reference, video)
    ours = png_frames(out)
    assert ours.shape == expected.shape == (9, 32, 48, 3)
    assert np.abs(ours - expected).max() < 1 / 255  # measured within a level
    # the video steers diffusers' result: other frames before the last 5 do not, others do
    assert np.abs(_continued(reference, _video(4, 2) + video[2:]) - expected).max() < 1e-6
    assert np.abs(_continued(reference, _video(4, 7)) - expected).mean() > 0.02
    short = tmp_path / "short"
    short.mkdir()
    for i, frame in enumerate(video[:3]):
        frame.save(short / f"{i:05d}.png")
    for more, words in ((("--frames", "5"), "give --frames 9 or more"),
                        (("--denoising-strength", "0.5"), "does not redraw --init-video"),
                        (("--init-video", str(short)), "3 frames; Cosmos Predict2.5 continues")):
        assert words in cli_error(capsys, "txt2vid", *common, *more)
