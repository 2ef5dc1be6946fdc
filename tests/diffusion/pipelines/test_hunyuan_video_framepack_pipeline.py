"""FramePack image to video (a HunyuanVideoFramepackPipeline folder of
hunyuan_video_framepack_tiny's parts): our frames against diffusers' on PyTorch CPU float32,
two sections of 2 latent frames each, backwards (FramePackI2V_HY's inverted anti-drifting)
and forwards (F1's vanilla), the picture visibly mattering; `img2vid` on the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from PIL import Image

import gpucore
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.pipelines.video.hunyuan_video_framepack import HunyuanVideoFramepackPipeline

PROMPT = "a red circle on a blue background"
# 8 x 12 latents (the tiny VAE's 4x), 2-frame windows: 9 frames ask for two 5-frame sections
HEIGHT, WIDTH, FRAMES, WINDOW, STEPS = 32, 48, 9, 2, 2
SETTINGS = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES,
            "latent_window_size": WINDOW, "num_inference_steps": STEPS, "guidance_scale": 9.0}
# (mean, max) |ours - diffusers| in [0, 1], float32, both ways: lavapipe 1.9e-7 / 1.9e-6.
# (The H200's 1e-4 / 1.4e-3 of stop 83 was the reference's: SiglipImageProcessor resizes with
# torchvision where it is installed; the tiny processor is now the Pillow one, as ours.)
TOL = (1e-6, 1e-5)


def _picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3),
                                                                dtype=np.uint8))


def _diffusers(reference: Any, picture: Image.Image, **options: Any) -> np.ndarray:
    with torch.no_grad():
        frames = reference(image=picture, prompt=PROMPT, output_type="np",
                           generator=torch.Generator().manual_seed(7),
                           **{**SETTINGS, **options}).frames
    return np.asarray(frames)[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, tiny_hunyuan_video: tuple[Path, Any]
         ) -> tuple[Path, Any]:
    """(the folder, diffusers' pipeline), HunyuanVideo's test parts shared."""
    from hunyuan_video_framepack_tiny import tiny_framepack_pipeline

    root = tmp_path_factory.mktemp("framepack")
    return root / "framepack", tiny_framepack_pipeline(root, tiny_hunyuan_video[1])


@pytest.mark.parametrize("sampling", ["inverted_anti_drifting", "vanilla"])
def test_framepack_equals_diffusers(first_device: gpucore.Device, tiny: tuple[Path, Any],
                                    sampling: str) -> None:
    """Two sections' frames (17: the second section's first frame's latents too, backwards),
    joined by the soft fade, as diffusers'; forwards, another picture moves them by 0.011
    mean (measured; backwards 0.008), through SigLIP's tokens and the first frame's
    latents; First Block Cache per section; --lowvram's frames the plain run's, bit for bit;
    backwards with a last frame to
    end on (diffusers' `last_image`) as diffusers', the frames moved by it."""
    folder, reference = tiny
    pipe = HunyuanVideoFramepackPipeline.from_pretrained(folder)
    ours = pipe(PROMPT, image=_picture(1), seed=7, sampling_type=sampling, **SETTINGS)[0]
    expected = _diffusers(reference, _picture(1), sampling_type=sampling)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).mean() < TOL[0]
    assert np.abs(ours - expected).max() < TOL[1]
    if sampling == "inverted_anti_drifting":  # a last frame: the first section's history
        ended = pipe(PROMPT, image=_picture(1), last_image=_picture(3), seed=7, **SETTINGS)[0]
        expected_end = _diffusers(reference, _picture(1), last_image=_picture(3))
        assert np.abs(ended - expected_end).mean() < TOL[0]
        assert np.abs(ended - expected_end).max() < TOL[1]
        assert np.abs(ended - ours).mean() > 0.008  # measured 0.017
    if sampling == "vanilla":
        other = pipe(PROMPT, image=_picture(2), seed=7, sampling_type=sampling, **SETTINGS)[0]
        assert np.abs(other - ours).mean() > 0.006
        # First Block Cache: each section's first step computed (its own state), the
        # second skipped at a huge threshold
        from diffusion.models.step_cache import CacheSpec, StepCache

        cache = StepCache(CacheSpec("fbc", 1e9), STEPS)
        pipe(PROMPT, image=_picture(1), seed=7, sampling_type=sampling, cache=cache,
             **SETTINGS)
        assert cache.summary().endswith("2/4 model calls computed")
        # the blocks streamed, SigLIP with the text encoders: the same frames
        pipe.set_memory_mode(MemoryMode(lowvram=True))
        assert np.array_equal(
            pipe(PROMPT, image=_picture(1), seed=7, sampling_type=sampling, **SETTINGS)[0],
            ours)


def test_img2vid(first_device: gpucore.Device, tiny: tuple[Path, Any], tmp_path: Path,
                 capsys: pytest.CaptureFixture[str],
                 tiny_hunyuan_video: tuple[Path, Any]) -> None:
    """`img2vid --image --sampling-type vanilla` on the folder gives diffusers' video (one
    step, one section of the default 9-frame window), with a bar for the section, and with
    its transformer as one file (`--model FILE --base FOLDER`) the same frames; txt2vid,
    FramePack's options on another model, a window above 33 and a last frame with forwards
    sampling are refused in one line before the weights load."""
    from cli_support import cli_error, cli_ok, png_frames

    folder, reference = tiny
    _picture(1).save(tmp_path / "in.png")
    common = ("--model", str(folder), "--steps", "1", "--seed", "7", "--dtype",
              "float32", "--prompt", PROMPT, "--frames", "9", "--width", str(WIDTH),
              "--height", str(HEIGHT), "--cfg-scale", "9")
    out, err = cli_ok(capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"),
                      "--sampling-type", "vanilla", "-o", str(tmp_path / "cat"))
    expected = _diffusers(reference, _picture(1), sampling_type="vanilla",
                          latent_window_size=9, num_inference_steps=1)
    got = png_frames(out)
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 0.01  # through 8-bit PNG frames
    assert "section 1/1" in err
    # lllyasviel's transformer as one file with the folder as --base: the same frames
    from safetensors.numpy import save_file
    from sd_tiny import state_dict

    save_file(state_dict(reference.transformer), tmp_path / "fp.safetensors")
    out, _ = cli_ok(capsys, "img2vid", *common[2:], "--model", str(tmp_path / "fp.safetensors"),
                    "--base", str(folder), "--image", str(tmp_path / "in.png"),
                    "--sampling-type", "vanilla", "-o", str(tmp_path / "file"))
    assert np.array_equal(png_frames(out), got)
    assert "--base" in cli_error(capsys, "img2vid", *common[2:], "--model",
                                 str(tmp_path / "fp.safetensors"), "--image",
                                 str(tmp_path / "in.png"), "-o", str(tmp_path / "x.webp"))
    assert "not a FramePack folder" in cli_error(
        capsys, "img2vid", *common[2:], "--model", str(tmp_path / "fp.safetensors"), "--base",
        str(tiny_hunyuan_video[0]), "--image", str(tmp_path / "in.png"), "-o",
        str(tmp_path / "x.webp"))
    assert "img2vid" in cli_error(capsys, "txt2vid", *common, "-o", str(tmp_path / "x.webp"))
    assert "image-to-video model: make videos with `python -m diffusion img2vid" in cli_error(
        capsys, "txt2img", "--model", str(folder), "--prompt", PROMPT)
    assert "--sampling-type is for FramePack" in cli_error(
        capsys, "txt2vid", *common[2:], "--model", str(tiny_hunyuan_video[0]),
        "--sampling-type", "vanilla", "-o", str(tmp_path / "x.webp"))
    assert "--latent-window-size is for FramePack" in cli_error(
        capsys, "txt2vid", *common[2:], "--model", str(tiny_hunyuan_video[0]),
        "--latent-window-size", "3", "-o", str(tmp_path / "x.webp"))
    picture = ("--image", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.webp"))
    assert "--latent-window-size must be 1 to 33" in cli_error(
        capsys, "img2vid", *common, *picture, "--latent-window-size", "34")
    assert "--last-image needs --sampling-type inverted_anti_drifting" in cli_error(
        capsys, "img2vid", *common, *picture, "--sampling-type", "vanilla", "--last-image",
        str(tmp_path / "in.png"))


def test_folder(tiny: tuple[Path, Any], tmp_path: Path) -> None:
    """The folder is FramePack's family; a transformer/ folder of another model and a folder
    without its SigLIP processor are refused in one line naming the file; its transformer
    as one file (`transformer=`) loads as its transformer/ does (the rotary axes the
    folder's config's)."""
    import shutil

    from diffusion.loaders.errors import WeightsError
    from diffusion.loaders.hunyuan_video.framepack import (
        framepack_family,
        load_framepack_folder,
        load_framepack_transformer,
    )
    from diffusion.pipelines.video.models import video_family_name

    folder, reference = tiny
    assert framepack_family(folder) == video_family_name(folder) == "framepack"
    with pytest.raises(WeightsError, match="is not a FramePack transformer"):
        load_framepack_transformer(folder / "vae")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "feature_extractor" / "preprocessor_config.json").unlink()
    with pytest.raises(WeightsError, match=r"preprocessor_config\.json: required"):
        load_framepack_folder(broken)
    # lllyasviel's transformer as one file in place of transformer/: the same weights
    from safetensors.numpy import save_file
    from sd_tiny import state_dict

    state = state_dict(reference.transformer)
    save_file(state, tmp_path / "fp.safetensors")
    own = load_framepack_folder(folder).transformer
    got = load_framepack_folder(folder, transformer=tmp_path / "fp.safetensors").transformer
    assert {k: v for k, v in got.config.items() if not k.startswith("_")} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in own.config.items()
        if not k.startswith("_")}
    assert sorted(got.keys()) == sorted(own.keys())
    np.testing.assert_array_equal(got["clean_x_embedder.proj_4x.weight"],
                                  own["clean_x_embedder.proj_4x.weight"])
