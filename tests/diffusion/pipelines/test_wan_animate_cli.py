"""Wan 2.2 Animate through `python -m diffusion txt2vid`: a tiny WanAnimatePipeline folder saved
by diffusers, the character picture, a pose video (a folder of PNGs) and a face video (a GIF):
our frames equal to diffusers' with Wan Animate's defaults (unguided, the segment the pose
video's length); the folder's transformer as the original release's single file with the
folder as --base giving the same frames; what is refused in one line before the model loads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames
from PIL import Image
from wan_animate_pipe_tiny import random_video, tiny_wan_animate_pipeline
from wan_animate_tiny import animate_original_names, tiny_animate_transformer

import gpucore

PROMPT = "a dancer on a stage"
HEIGHT, WIDTH, FRAMES = 16, 32, 7
COMMON = ("--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "2", "--seed", "3",
          "--dtype", "float32", "--prompt", PROMPT)


@pytest.fixture(scope="module")
def tiny_animate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    """The folder, diffusers' pipeline and the input files (and their frames)."""
    root = tmp_path_factory.mktemp("tiny-wan-animate-cli")
    reference = tiny_wan_animate_pipeline(root)
    rng = np.random.default_rng(5)
    frames = {"image": random_video(rng, 1, 24, 20)[0], "pose": random_video(rng, FRAMES, 24, 40),
              "face": random_video(rng, FRAMES, 20, 20)}
    Image.fromarray(frames["image"]).save(root / "me.png")
    (root / "pose").mkdir()
    for i, frame in enumerate(frames["pose"]):
        Image.fromarray(frame).save(root / "pose" / f"{i:05d}.png")
    faces = [Image.fromarray(f) for f in frames["face"]]
    faces[0].save(root / "face.webp", save_all=True, append_images=faces[1:], lossless=True)
    return root / "wan-animate", reference, frames


def _files(root: Path) -> tuple[str, ...]:
    return ("--animate-image", str(root / "me.png"), "--pose-video", str(root / "pose"),
            "--face-video", str(root / "face.webp"))


def test_txt2vid_animate_equals_diffusers(first_device: gpucore.Device,
                                          tiny_animate: tuple[Path, Any, dict[str, Any]],
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_animate

    # diffusers' Animate module calls ftfy unconditionally; the same for this ASCII prompt
    monkeypatch.setattr(pipeline_wan_animate, "prompt_clean", pipeline_wan.prompt_clean)
    folder, reference, frames = tiny_animate
    out, _ = cli_ok(capsys, "txt2vid", "--model", str(folder), *COMMON, *_files(folder.parent),
                    "-o", str(tmp_path / "out"))
    ours = png_frames(out)
    expected = reference(image=Image.fromarray(frames["image"]),
                         pose_video=[Image.fromarray(f) for f in frames["pose"]],
                         face_video=[Image.fromarray(f) for f in frames["face"]],
                         prompt=PROMPT, height=HEIGHT, width=WIDTH, segment_frame_length=9,
                         num_inference_steps=2, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    # the PNGs' rounding (1/510)
    assert np.abs(ours - expected).max() < 1 / 255


def test_txt2vid_animate_step_cache(first_device: gpucore.Device,
                                    tiny_animate: tuple[Path, Any, dict[str, Any]],
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--cache reaches Wan Animate's pipeline (its frames against diffusers' with the rule by
    hand: test_wan_animate_pipeline): at 5 the tiny model's first block never moves that
    far, so only the first of three steps runs the other blocks, and stderr says so."""
    folder, _, _ = tiny_animate
    out, err = cli_ok(capsys, "txt2vid", "--model", str(folder), *COMMON, "--steps", "3",
                      *_files(folder.parent), "--cache", "fbc:5", "-o", str(tmp_path / "out"))
    assert "cache: fbc 5, 1/3 steps computed" in err, err
    assert png_frames(out).shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_txt2vid_animate_refusals(tiny_animate: tuple[Path, Any, dict[str, Any]],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each in one line, before the model loads."""
    folder, _, _ = tiny_animate
    root = folder.parent
    short = tmp_path / "short"
    shutil.copytree(root / "pose", short)
    (short / "00000.png").unlink()
    files = _files(root)
    for argv, message in (
            (files[:4], "Wan Animate needs --face-video"),
            ((*files, "--background-video", str(root / "pose")),
             "needs both --background-video and --mask-video"),
            ((*files, "--background-video", str(root / "pose"), "--mask-video", str(short)),
             "the --mask-video has 6 frames but the --pose-video has 7"),
            ((*files[:2], "--pose-video", str(short), *files[4:]),
             "the --face-video has 7 frames but the --pose-video has 6"),
            ((*files, "--segment-frames", "6"), "the segment length must be 1 + 4k"),
            ((*files, "--cfg-scale-2", "2"), "Wan Animate does not take --cfg-scale-2"),
            ((*files, "--cache", "magcache"), "Wan runs First Block Cache"),
            ((*files, "--frames", "9"), "leave --frames out"),
            ((*files, "--control-video", str(root / "pose")), "needs a Wan VACE model"),
            ((), "this is Wan 2.2 Animate: give --animate-image")):
        error = cli_error(capsys, "txt2vid", "--model", str(folder), *COMMON, *argv,
                          "-o", str(tmp_path / "o"))
        assert message in error, error
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "in.png")
    error = cli_error(capsys, "img2vid", "--model", str(folder), "--image",
                      str(tmp_path / "in.png"), *COMMON, "-o", str(tmp_path / "o"))
    assert "Wan Animate runs as txt2vid" in error, error
    plain = tmp_path / "plain"  # the same parts under a WanImageToVideoPipeline index
    shutil.copytree(folder, plain)
    index = (plain / "model_index.json").read_text()
    (plain / "model_index.json").write_text(index.replace("WanAnimatePipeline",
                                                          "WanImageToVideoPipeline"))
    error = cli_error(capsys, "txt2vid", "--model", str(plain), *COMMON, *files, "-o",
                      str(tmp_path / "o"))
    assert "--animate-image needs a Wan 2.2 Animate model" in error, error


def test_txt2vid_animate_file_equals_folder(first_device: gpucore.Device,
                                            tiny_animate: tuple[Path, Any, dict[str, Any]],
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The transformer in the original release's names (Wan2_2-Animate-14B.safetensors,
    under model.diffusion_model., blur kernels and all) with the folder as --base: the
    folder's frames bit for bit; the same names in a GGUF (the tiny model's matrices too
    small to quantize: stored float16, as such files keep their small tensors; quantized
    ones: loaders/test_wan_animate_gguf) within float16 storage's error; the file alone,
    with a second expert, or with a base holding no CLIP vision encoder, refused in one
    line."""
    from safetensors.torch import save_file

    from diffusion.loaders.formats.gguf_write import write_gguf

    folder, reference, _ = tiny_animate
    file, other = tmp_path / "Wan2_2-Animate-14B.safetensors", tmp_path / "other.safetensors"
    for model, path in ((reference.transformer, file), (tiny_animate_transformer(32), other)):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_file({f"model.diffusion_model.{k}": v
                   for k, v in animate_original_names(state, 2).items()}, str(path))
        if path == file:
            gguf = tmp_path / "Wan2.2-Animate-14B-Q8_0.gguf"
            write_gguf(gguf, animate_original_names(state, 2).items(), "q8_0",
                       architecture="wan")
    files = _files(folder.parent)
    frames = []
    for model in (("--model", str(folder)), ("--model", str(file), "--base", str(folder)),
                  ("--model", str(other), "--base", str(folder)),
                  ("--model", str(gguf), "--base", str(folder))):
        out, _ = cli_ok(capsys, "txt2vid", *model, *COMMON, *files,
                        "-o", str(tmp_path / f"out{len(frames)}"))
        frames.append(png_frames(out))
    assert frames[0].shape == (FRAMES, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(frames[1], frames[0])
    # the file's weights are the ones run: another model's file moves the frames (0.33)
    assert np.abs(frames[2] - frames[0]).mean() > 0.1, np.abs(frames[2] - frames[0]).mean()
    error = np.abs(frames[3] - frames[0])  # measured: 2/255 at worst, 5.4e-4 mean
    assert 0 < error.max() <= 3 / 255 and error.mean() < 2e-3, (error.max(), error.mean())
    t2v = tmp_path / "t2v"  # a text-to-video base: no CLIP vision encoder
    shutil.copytree(folder, t2v, ignore=shutil.ignore_patterns("image_*"))
    index = (t2v / "model_index.json").read_text()
    (t2v / "model_index.json").write_text(index.replace("WanAnimatePipeline", "WanPipeline"))
    for argv, message in (
            ((), "is a single file: give --base"),
            (("--base", str(t2v)), "t2v/image_encoder: no weights in the folder; give them as "
                                   "--clip-vision"),
            (("--base", str(folder), "--model-2", str(file)),
             "is Wan 2.2 Animate, which takes no --model-2")):
        error = cli_error(capsys, "txt2vid", "--model", str(file), *argv, *COMMON, *files,
                          "-o", str(tmp_path / "o"))
        assert message in error, error

