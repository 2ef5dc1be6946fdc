"""Wan 2.1 text-to-video through `python -m diffusion txt2vid`: a tiny WanPipeline folder saved
by diffusers, our frames equal to diffusers' (`--sampler diffusers --rng torch`), the prompt
visibly changing them, the MP4 decoding (PyAV) to the frames within the codec's loss, the
animated WebP, and what is refused in one line before the model loads."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_frames
from PIL import Image
from wan_tiny import tiny_wan_pipeline

import diffusion.cli.main as cli
import gpucore

RED = "a red cube on a wooden table"
SNOW = "two blue spheres in the snow at night"
SIZE = ("--width", "48", "--height", "32", "--frames", "5")


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-wan")
    return root / "wan", tiny_wan_pipeline(root)


def test_txt2vid_equals_diffusers(first_device: gpucore.Device, tiny_wan: tuple[Path, Any],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    av = pytest.importorskip("av", reason="PyAV (the video extra) writes and reads the MP4")
    folder, reference = tiny_wan
    common = ("txt2vid", "--model", str(folder), *SIZE, "--steps", "2", "--cfg-scale", "4",
              "--negative-prompt", "blurry", "--sampler", "diffusers", "--rng", "torch",
              "--seed", "3", "--dtype", "float32", "--fps", "8")
    out, err = cli_ok(capsys, *common, "--prompt", RED, "-o", str(tmp_path / "red"))
    assert "seed: 3" in err and "txt2vid" in err  # the seed and the progress line
    ours = png_frames(out)
    assert ours.shape == (5, 32, 48, 3)
    expected = reference(RED, negative_prompt="blurry", height=32, width=48, num_frames=5,
                         num_inference_steps=2, guidance_scale=4.0, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]
    assert np.abs(ours - expected).mean() < 0.01
    assert np.abs(ours[1:] - ours[:1]).mean() > 0.01  # frames, not one picture repeated
    # the prompt matters; the MP4 holds the same frames, within H.264's loss
    out, _ = cli_ok(capsys, *common, "--prompt", SNOW, "-o", str(tmp_path / "snow.mp4"))
    with av.open(out) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 8
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    snow = decoded.astype(np.float32) / 255
    assert snow.shape == ours.shape
    assert np.abs(snow - ours).mean() > 0.05  # another prompt, another video
    cli_ok(capsys, *common, "--prompt", SNOW, "-o", str(tmp_path / "snow"))
    frames = png_frames(str(tmp_path / "snow"))
    # H.264 4:2:0 keeps the brightness at full resolution and the colour at half (the tiny
    # model's frames are mostly fine colour noise): the luma within the codec's loss
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(snow @ luma - frames @ luma).mean() < 0.03
    assert np.abs(snow - frames).mean() < 0.15


def test_img2vid_needs_wan22(first_device: gpucore.Device, tiny_wan: tuple[Path, Any],
                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.new("RGB", (48, 32)).save(tmp_path / "in.png")
    code = cli.main(["img2vid", "--model", str(tiny_wan[0]), "--image", str(tmp_path / "in.png"),
                     "--prompt", "x", *SIZE, "--dtype", "float32", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "needs Wan 2.2 TI2V 5B" in err and "Traceback" not in err, err


@pytest.mark.nodevice
@pytest.mark.parametrize(("argv", "message"), [
    (("--frames", "8"), "frames must be 1 + 4k"),
    (("--fps", "0"), "--fps must be a number"),
    (("--width", "40"), "--width must be a multiple of 16"),
    (("-o", "clip.gif"), "write .mp4, .webp or a folder"),
])
def test_bad_settings_get_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   argv: tuple[str, ...], message: str) -> None:
    code = cli.main(["txt2vid", "--model", str(tmp_path), "--prompt", "x", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_txt2img_points_at_txt2vid(tiny_wan: tuple[Path, Any],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = tiny_wan
    code = cli.main(["txt2img", "--model", str(folder), "--prompt", "x", "--dtype", "float32"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {folder} is a Wan text-to-video model: make videos with `python -m diffusion "
        f"txt2vid --model {folder} --prompt ...`"]


@pytest.fixture(scope="module")
def tiny_wan22(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-wan22")
    return root / "wan22", tiny_wan_pipeline(root, wan22=True)


def test_wan22_ti2v_text_to_video(first_device: gpucore.Device,
                                  tiny_wan22: tuple[Path, Any]) -> None:
    """A Wan 2.2 TI2V 5B-shaped folder (its VAE: 16x smaller latents; per-token timesteps,
    all one value without an image): WanPipeline's frames."""
    from diffusion.pipelines.video import WanPipeline

    folder, reference = tiny_wan22
    pipe = WanPipeline.from_pretrained(folder, device=first_device)
    settings = dict(height=32, width=64, num_frames=5, num_inference_steps=2,
                    guidance_scale=3.0, negative_prompt="blurry")
    ours = pipe(RED, seed=5, **settings)[0]
    expected = reference(RED, generator=torch.Generator().manual_seed(5), output_type="np",
                         **settings).frames[0]
    assert ours.shape == (5, 32, 64, 3)
    assert np.abs(ours - expected).mean() < 0.01
    with pytest.raises(ValueError, match="multiples of 32"):
        pipe(RED, **{**settings, "width": 48})


def test_img2vid_equals_diffusers(first_device: gpucore.Device, tiny_wan22: tuple[Path, Any],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`img2vid`: Wan 2.2 TI2V 5B animating a picture (its latents as frame 0 at timestep 0)
    is WanImageToVideoPipeline's video; another picture, another video."""
    import diffusers
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_i2v

    # the image-to-video module calls ftfy unconditionally; WanPipeline's cleaning skips it
    # when it is not installed (as here), and is the same for these ASCII prompts
    monkeypatch.setattr(pipeline_wan_i2v, "prompt_clean", pipeline_wan.prompt_clean)

    folder, reference = tiny_wan22
    i2v = diffusers.WanImageToVideoPipeline(
        tokenizer=reference.tokenizer, text_encoder=reference.text_encoder, vae=reference.vae,
        scheduler=reference.scheduler, transformer=reference.transformer, image_encoder=None,
        image_processor=None, expand_timesteps=True)
    rng = np.random.default_rng(2)
    pictures = [(rng.random((24, 40, 3)) * 255).astype(np.uint8) for _ in range(2)]
    outputs = []
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(tmp_path / f"in{i}.png")
        out, _ = cli_ok(capsys, "img2vid", "--model", str(folder), "--image",
                        str(tmp_path / f"in{i}.png"), "--prompt", RED, "--width", "64",
                        "--height", "32", "--frames", "5", "--steps", "2", "--cfg-scale", "3",
                        "--seed", "4", "--dtype", "float32", "-o", str(tmp_path / f"out{i}"))
        outputs.append(png_frames(out))
    expected = i2v(image=Image.fromarray(pictures[0]), prompt=RED, height=32, width=64,
                   num_frames=5, num_inference_steps=2, guidance_scale=3.0, output_type="np",
                   generator=torch.Generator().manual_seed(4)).frames[0]
    assert np.abs(outputs[0] - expected).mean() < 0.01
    assert np.abs(outputs[0] - outputs[1]).mean() > 0.02  # the picture matters


PLAIN = dict(height=32, width=48, num_frames=5, num_inference_steps=1, guidance_scale=4.0,
             seed=9)


@pytest.fixture(scope="module")
def plain_video(first_device: gpucore.Device, tiny_wan: tuple[Path, Any]) -> np.ndarray:
    """The tiny Wan 2.1 folder's video of RED with PLAIN's settings, every weight on the GPU."""
    from diffusion.pipelines.video import WanPipeline

    return WanPipeline.from_pretrained(tiny_wan[0], device=first_device)(RED, **PLAIN)


def test_offload_gives_the_same_video(first_device: gpucore.Device,
                                      tiny_wan: tuple[Path, Any],
                                      plain_video: np.ndarray) -> None:
    """`offload`: each network on the GPU only while it runs, the same frames. The same
    pipeline under --lowvram: the prompt and the negative prompt pass UMT5 together, so each
    streamed block comes to the GPU once for both (half the uploads of two calls), each
    prompt's states bitwise its own call's."""
    from diffusion.pipelines.sd.memory import MemoryMode
    from diffusion.pipelines.video import WanPipeline
    from gpustd.nn.offload import device_bytes

    folder, _ = tiny_wan
    settings, kept = PLAIN, plain_video
    pipe = WanPipeline.from_pretrained(folder, device=first_device, offload=True)
    parts = (pipe.text_encoder, pipe.transformer, pipe.vae)
    assert [device_bytes(part) for part in parts] == [0, 0, 0]
    np.testing.assert_array_equal(pipe(RED, **settings), kept)
    assert [device_bytes(part) for part in parts] == [0, 0, 0]
    pipe.set_memory_mode(MemoryMode(lowvram=True))
    try:
        residency = pipe._memory.residency
        start = residency.uploaded
        alone = [pipe.prompt_states([RED]), pipe.prompt_states([SNOW])]
        twice = residency.uploaded - start
        residency.evict_all()
        start = residency.uploaded
        both = pipe.prompt_states_each([[RED], [SNOW]])
        once = residency.uploaded - start
    finally:
        pipe.set_memory_mode(MemoryMode())
    assert once > 0 and twice == 2 * once
    assert np.abs(alone[0][0] - alone[1][0]).max() > 0.1  # the prompt matters
    for got, want in zip(both, alone, strict=True):
        np.testing.assert_array_equal(got, want)


def test_lowvram_txt2vid_gives_the_plain_frames(first_device: gpucore.Device,
                                                tiny_wan: tuple[Path, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                plain_video: np.ndarray) -> None:
    """`txt2vid --lowvram`: the transformer's and UMT5's blocks streamed one at a time (each
    uploaded before it runs, the others evicted), the plain mode's frames bit for bit."""
    folder, _ = tiny_wan
    out, err = cli_ok(capsys, "txt2vid", "--model", str(folder), *SIZE, "--steps", "1",
                      "--cfg-scale", "4", "--seed", "9", "--dtype", "float32", "--lowvram",
                      "--verbose", "--prompt", RED, "-o", str(tmp_path / "low"))
    assert "mode: --lowvram" in err
    frames = np.stack([np.asarray(Image.open(f).convert("RGB"))
                       for f in sorted(Path(out).glob("*.png"))])
    np.testing.assert_array_equal(frames, np.round(plain_video[0] * 255).astype(np.uint8))


def test_max_vram_img2vid_gives_the_plain_frames(first_device: gpucore.Device,
                                                 tiny_wan22: tuple[Path, Any]) -> None:
    """Wan 2.2 TI2V 5B animating a picture under --max-vram: every unit (UMT5's table and
    blocks, the transformer's blocks, the VAE) brought in as it runs, the pool never past the
    budget, the plain mode's frames bit for bit; a budget below the largest unit refused in
    one line naming the least."""
    from diffusion.pipelines.sd.memory import MemoryMode
    from diffusion.pipelines.video import WanPipeline

    folder, _ = tiny_wan22
    picture = (np.random.default_rng(3).random((24, 40, 3)) * 255).astype(np.uint8)
    settings = dict(height=32, width=64, num_frames=5, num_inference_steps=1,
                    guidance_scale=3.0, seed=4, image=picture)
    plain = WanPipeline.from_pretrained(folder, device=first_device)(RED, **settings)
    pipe = WanPipeline.from_pretrained(folder, device=first_device, offload=True)
    with pytest.raises(ValueError, match=r"--max-vram 0\.000 GiB .* at least .* MiB"):
        pipe.set_memory_mode(MemoryMode(max_vram=4096))
    gc.collect()  # the budget is the device's: what earlier tests left on it counts too
    first_device.empty_pool()
    # what the device holds already, and 16 MiB: the tiny model's activations (its 512-token
    # position biases)
    budget = first_device.memory_stats().allocated + (16 << 20)
    pipe.set_memory_mode(MemoryMode(max_vram=budget))
    try:
        first_device.reset_peak_memory()
        np.testing.assert_array_equal(pipe(RED, **settings), plain)
        assert first_device.memory_stats().peak_reserved <= budget
    finally:  # a budget left set would fail every later test of the session's device
        pipe.set_memory_mode(MemoryMode())


