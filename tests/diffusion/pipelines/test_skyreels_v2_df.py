"""SkyReels V2 diffusion forcing against diffusers' SkyReelsV2DiffusionForcingPipeline on a
tiny folder: synchronous (every frame at one timestep, guided, fps 16), and asynchronous
(ar_step 2, causal blocks of 2 latent frames) over a long video made in two overlapping
windows whose given frames are re-noised (addnoise_condition)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_frames
from skyreels_v2_tiny import tiny_skyreels_pipeline

import diffusion.cli.main as cli
import gpucore
from diffusion.pipelines.video.skyreels_v2_df import SkyReelsV2DiffusionForcingPipeline

RED = "a red cube on a wooden table"


@pytest.fixture(scope="module")
def tiny_df(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-skyreels-df")
    return root / "skyreels-df", tiny_skyreels_pipeline(root, "df")


@pytest.fixture(autouse=True)
def _no_ftfy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline calls ftfy unconditionally (not installed here); Wan's cleaning is the
    same for this ASCII prompt."""
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2_diffusion_forcing as df
    from diffusers.pipelines.wan import pipeline_wan

    monkeypatch.setattr(df, "prompt_clean", pipeline_wan.prompt_clean)


def _fresh(reference: Any) -> Any:
    """The reference's transformer back to the folder's causal blocks (1): diffusers'
    pipelines keep the last `causal_block_size` given in its config."""
    reference.transformer.register_to_config(num_frame_per_block=1)
    return reference


def _expected(reference: Any, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> np.ndarray:
    """diffusers' frames, its addnoise draws taken from the run's generator (ours draw them
    there; diffusers from torch's global one)."""
    _fresh(reference)
    generator = torch.Generator().manual_seed(3)
    monkeypatch.setattr(torch, "randn_like", lambda x: torch.randn(
        x.shape, generator=generator, dtype=x.dtype))
    return reference(RED, height=32, width=48, num_inference_steps=2, output_type="np",
                     generator=generator, **kw).frames[0]


def test_synchronous_txt2vid_equals_diffusers(first_device: gpucore.Device,
                                              tiny_df: tuple[Path, Any], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Through `txt2vid` (PNG frames: 8-bit rounding), guided, the fps 16 conditioning."""
    folder, reference = tiny_df
    out, _ = cli_ok(capsys, "txt2vid", "--model", str(folder), "--prompt", RED, "--width",
                    "48", "--height", "32", "--frames", "9", "--steps", "2", "--cfg-scale", "3",
                    "--negative-prompt", "blurry", "--fps", "16", "--seed", "3", "--dtype",
                    "float32", "-o", str(tmp_path / "out"))
    ours = png_frames(out)
    kw = dict(num_frames=9, guidance_scale=3.0, negative_prompt="blurry", fps=16)
    expected = _expected(reference, monkeypatch, **kw)
    assert ours.shape == (9, 32, 48, 3)
    assert np.abs(ours - expected).max() < 1.5 / 255  # the PNGs' rounding
    # the fps visibly matters
    assert np.abs(_expected(reference, monkeypatch, **{**kw, "fps": 24}) - expected).mean() \
        > 0.02


def test_asynchronous_long_video_equals_diffusers(first_device: gpucore.Device,
                                                  tiny_df: tuple[Path, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder, reference = tiny_df
    pipe = SkyReelsV2DiffusionForcingPipeline.from_pretrained(folder, device=first_device)
    kw = dict(num_frames=21, guidance_scale=1.0, base_num_frames=13, overlap_history=5,
              ar_step=2, causal_block_size=2, addnoise_condition=20)
    ours = pipe(RED, height=32, width=48, num_inference_steps=2, seed=3, **kw)[0]
    expected = _expected(reference, monkeypatch, **kw)
    assert ours.shape == (21, 32, 48, 3)
    assert np.abs(ours - expected).max() < 1e-3  # measured 7e-5
    # the lag and the re-noising of the given frames visibly matter (measured 0.059, 0.0094)
    for change, least in (({"ar_step": 0}, 0.02), ({"addnoise_condition": 0}, 0.003)):
        other = _expected(reference, monkeypatch, **{**kw, **change})
        assert np.abs(other - expected).mean() > least
    with pytest.raises(ValueError, match="give overlap_history"):
        pipe(RED, height=32, width=48, num_frames=21, base_num_frames=13)
    with pytest.raises(ValueError, match="not a multiple of causal_block_size"):
        pipe(RED, height=32, width=48, num_frames=9, causal_block_size=2)


def test_img2vid_equals_diffusers(first_device: gpucore.Device, tiny_df: tuple[Path, Any],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Through `img2vid --image` (PNG frames: 8-bit rounding): the picture's latents as the
    given first frame, re-noised by addnoise_condition, as
    SkyReelsV2DiffusionForcingImageToVideoPipeline of the same parts does."""
    import diffusers
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2_diffusion_forcing_i2v
    from diffusers.pipelines.wan import pipeline_wan
    from PIL import Image

    monkeypatch.setattr(pipeline_skyreels_v2_diffusion_forcing_i2v, "prompt_clean",
                        pipeline_wan.prompt_clean)
    folder, reference = tiny_df
    i2v = diffusers.SkyReelsV2DiffusionForcingImageToVideoPipeline(
        **_fresh(reference).components)
    rng = np.random.default_rng(5)
    picture = Image.fromarray((rng.random((30, 44, 3)) * 255).astype(np.uint8))
    picture.save(tmp_path / "in.png")
    out, _ = cli_ok(capsys, "img2vid", "--model", str(folder), "--image",
                    str(tmp_path / "in.png"), "--prompt", RED, "--width", "48", "--height",
                    "32", "--frames", "9", "--steps", "2", "--cfg-scale", "1",
                    "--addnoise-condition", "20", "--seed", "3", "--dtype", "float32", "-o",
                    str(tmp_path / "out"))
    ours = png_frames(out)
    kw = dict(num_frames=9, guidance_scale=1.0, addnoise_condition=20)
    generator = torch.Generator().manual_seed(3)
    monkeypatch.setattr(torch, "randn_like", lambda x: torch.randn(
        x.shape, generator=generator, dtype=x.dtype))
    expected = i2v(image=picture, prompt=RED, height=32, width=48, num_inference_steps=2,
                   output_type="np", generator=generator, **kw).frames[0]
    assert np.abs(ours - expected).max() < 1.5 / 255  # the PNGs' rounding
    plain = _expected(reference, monkeypatch, **kw)  # the picture visibly matters
    assert np.abs(plain - expected)[0].mean() > 0.05


def test_img2vid_last_image_equals_diffusers(first_device: gpucore.Device,
                                             tiny_df: tuple[Path, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`img2vid --image --last-image` (PNG frames: 8-bit rounding): the end picture's latents
    one more latent frame, never stepped, dropped before the decode, as
    SkyReelsV2DiffusionForcingImageToVideoPipeline(last_image=) does; the end picture
    visibly matters; without --image, or with a long video, one line."""
    import diffusers
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2_diffusion_forcing_i2v
    from diffusers.pipelines.wan import pipeline_wan
    from PIL import Image

    monkeypatch.setattr(pipeline_skyreels_v2_diffusion_forcing_i2v, "prompt_clean",
                        pipeline_wan.prompt_clean)
    folder, reference = tiny_df
    i2v = diffusers.SkyReelsV2DiffusionForcingImageToVideoPipeline(
        **_fresh(reference).components)
    rng = np.random.default_rng(6)
    first, last = (Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8))
                   for _ in range(2))
    first.save(tmp_path / "first.png")
    last.save(tmp_path / "last.png")
    argv = ["--model", str(folder), "--prompt", RED, "--width", "48", "--height", "32",
            "--frames", "9", "--steps", "2", "--cfg-scale", "1", "--seed", "3", "--dtype",
            "float32", "--last-image", str(tmp_path / "last.png")]
    out, _ = cli_ok(capsys, "img2vid", "--image", str(tmp_path / "first.png"), *argv, "-o",
                    str(tmp_path / "out"))
    ours = png_frames(out)

    def expected(end: Any) -> np.ndarray:
        return i2v(image=first, last_image=end, prompt=RED, height=32, width=48,
                   num_inference_steps=2, num_frames=9, guidance_scale=1.0, output_type="np",
                   generator=torch.Generator().manual_seed(3)).frames[0]

    theirs = expected(last)
    assert ours.shape == theirs.shape == (9, 32, 48, 3)
    assert np.abs(ours - theirs).max() < 1.5 / 255  # the PNGs' rounding
    assert np.abs(expected(last.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) - theirs)[-1].mean() \
        > 0.01  # the end picture visibly matters to the last frames
    for command, extra, said in (
            ("txt2vid", [], "use img2vid --image FIRST.png"),
            ("img2vid", ["--image", str(tmp_path / "first.png"), "--frames", "21",
                         "--base-num-frames", "13", "--overlap-history", "5"], "one window")):
        code = cli.main([command, *argv, *extra, "-o", str(tmp_path / "o.webp")])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, err


def test_video_extension_equals_diffusers(first_device: gpucore.Device,
                                          tiny_df: tuple[Path, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Through `txt2vid --init-video` (a folder of PNG frames in, PNG frames out: 8-bit
    rounding): the video's last 5 frames encoded as the given start, 13 frames made in two
    windows of 9, the file the video then them, as
    SkyReelsV2DiffusionForcingVideoToVideoPipeline."""
    import diffusers
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2_diffusion_forcing_v2v
    from diffusers.pipelines.wan import pipeline_wan
    from wan_tiny import wave_video

    monkeypatch.setattr(pipeline_skyreels_v2_diffusion_forcing_v2v, "prompt_clean",
                        pipeline_wan.prompt_clean)
    folder, reference = tiny_df
    v2v = diffusers.SkyReelsV2DiffusionForcingVideoToVideoPipeline(
        **_fresh(reference).components)
    video = wave_video(4, 32, 48, frames=7)
    (tmp_path / "in").mkdir()
    for i, frame in enumerate(video):
        frame.save(tmp_path / "in" / f"{i:05d}.png")
    argv = ["txt2vid", "--model", str(folder), "--prompt", RED, "--width", "48", "--height",
            "32", "--frames", "13", "--base-num-frames", "9", "--steps", "2", "--cfg-scale",
            "1", "--seed", "3", "--dtype", "float32", "--init-video", str(tmp_path / "in")]
    out, _ = cli_ok(capsys, *argv, "--overlap-history", "5", "-o", str(tmp_path / "out"))
    ours = png_frames(out)
    kw = dict(num_frames=13, base_num_frames=9, overlap_history=5, guidance_scale=1.0)
    expected = v2v(video=video, prompt=RED, height=32, width=48, num_inference_steps=2,
                   output_type="np", generator=torch.Generator().manual_seed(3),
                   **kw).frames[0]
    assert ours.shape == expected.shape == (7 + 13, 32, 48, 3)
    assert np.abs(ours - expected).max() < 1.5 / 255  # the PNGs' rounding (measured 7e-5)
    # the video visibly matters to what is made
    other = v2v(video=video[::-1], prompt=RED, height=32, width=48, num_inference_steps=2,
                output_type="np", generator=torch.Generator().manual_seed(3), **kw).frames[0]
    assert np.abs(other[7:] - expected[7:]).mean() > 0.02
    for extra, said in ((["--overlap-history", "9"], "fewer than --overlap-history 9"),
                        ([], "give --overlap-history"),
                        (["--overlap-history", "5", "--denoising-strength", "0.5"],
                         "it extends it")):
        code = cli.main([*argv, *extra, "-o", str(tmp_path / "o.webp")])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, err


def test_txt2vid_refusals(first_device: gpucore.Device, tiny_df: tuple[Path, Any], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """One line each, before the weights load: a diffusion forcing option for another model,
    Wan 2.2 A14B's second guidance, a step cache."""
    folder = str(tiny_df[0])
    (tmp_path / "other").mkdir()
    for argv, said in (
            (["txt2vid", "--model", str(tmp_path / "other"), "--ar-step", "2"],
             "--ar-step is a SkyReels V2 diffusion forcing option"),
            (["txt2vid", "--model", folder, "--cfg-scale-2", "2"], "--cfg-scale-2 is for Wan"),
            (["txt2vid", "--model", folder, "--cache", "fbc"], "without a step cache")):
        code = cli.main([*argv, "--prompt", "x", "-o", str(tmp_path / "o.webp")])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, err
