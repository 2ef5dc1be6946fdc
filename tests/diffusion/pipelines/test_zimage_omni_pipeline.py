"""Z-Image Omni through the command line like any model: the family detected from a diffusers
folder, img2img's init image and --reference as condition pictures, diffusers'
ZImageOmniPipeline's picture with `--sampler diffusers --rng torch` (CFG, two pictures), the
condition picture visibly mattering, txt2img without pictures, a WebUI sampler, First Block
Cache as diffusers' hook runs it, and one-line errors for what it does not take."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_pixels
from PIL import Image
from zimage_tiny import tiny_zimage_omni_pipeline

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext

SIZE = ("--width", "64", "--height", "80")


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path]:
    """The folder, diffusers' pipeline, and a folder of pictures: init.png (64 x 80, the
    size drawn at), ref.png (72 x 64) and other.png (another 72 x 64)."""
    root = tmp_path_factory.mktemp("tiny-z-image-omni")
    reference = tiny_zimage_omni_pipeline(root)
    # diffusers encodes condition pictures in bfloat16 (`vae.encode(image.bfloat16())`, for
    # its bfloat16 VAE); its float32 VAE here reads them back in float32
    encode = reference.vae.encode
    reference.vae.encode = lambda x, *args, **kwargs: encode(x.float(), *args, **kwargs)
    rng = np.random.default_rng(3)
    for name, (height, width) in (("init", (80, 64)), ("ref", (64, 72)), ("other", (64, 72))):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(
            root / f"{name}.png")
    return root / "z-image-omni", reference, root


def _diffusers(reference: Any, prompt: str, pictures: list[Path], steps: int = 2,
               **settings: Any) -> np.ndarray:
    """diffusers' picture; its prompt pieces padded to 64 tokens, not 512 (the padding
    dropped after the causal encoder: the same states, in an eighth of the time)."""
    images = [Image.open(p).convert("RGB") for p in pictures] or None
    return reference(image=images, prompt=prompt, height=80, width=64,
                     num_inference_steps=steps,
                     generator=torch.Generator().manual_seed(7), output_type="np",
                     max_sequence_length=64, **settings).images[0]


def test_omni_edit_from_the_cli(first_device: gpucore.Device,
                                tiny_omni: tuple[Path, Any, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """Two condition pictures at CFG 3 (diffusers' guidance_scale 2): diffusers' picture; a
    different second picture visibly changes it (the test's premise)."""
    folder, reference, pictures = tiny_omni
    common = ("img2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--cfg-scale", "3", "--prompt", "a red circle", "--init-image",
              str(pictures / "init.png"))
    out, _ = cli_ok(capsys, *common, "--reference", str(pictures / "ref.png"),
                    "--out", str(tmp_path / "a.png"))
    ours = png_pixels(out)
    expected = _diffusers(reference, "a red circle", [pictures / "init.png",
                                                      pictures / "ref.png"],
                          guidance_scale=2.0)
    assert np.abs(ours - expected).mean() < 0.003  # 8-bit rounding; 7e-5 before it
    out, _ = cli_ok(capsys, *common, "--reference", str(pictures / "other.png"),
                    "--out", str(tmp_path / "b.png"))
    assert np.abs(png_pixels(out) - ours).mean() > 0.02  # measured 0.027


def test_omni_txt2img_and_webui_sampler(first_device: gpucore.Device,
                                        tiny_omni: tuple[Path, Any, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Without pictures at CFG 1: diffusers' text-to-image picture (guidance 0); a WebUI
    sampler beside one picture, and its infotext (no denoising strength: none applies)."""
    folder, reference, pictures = tiny_omni
    common = ("--model", str(folder), *SIZE, "--steps", "2", "--seed", "7", "--dtype",
              "float32", "--cfg-scale", "1", "--prompt", "a red circle")
    out, err = cli_ok(capsys, "txt2img", *common, "--sampler", "diffusers", "--rng", "torch",
                      "--out", str(tmp_path / "t.png"))
    assert "model: z-image-omni" in err
    expected = _diffusers(reference, "a red circle", [], guidance_scale=0.0)
    assert np.abs(png_pixels(out) - expected).mean() < 0.003
    out, _ = cli_ok(capsys, "img2img", *common, "--init-image", str(pictures / "init.png"),
                    "--out", str(tmp_path / "e.png"))
    text = read_infotext(out)
    assert text is not None and "Sampler: Euler, Schedule type: Simple, CFG scale: 1" in text
    # drawn from noise beside the picture: the default strength did nothing, and is not said
    assert "Denoising strength" not in text and "Reference images: 1" in text
    assert png_pixels(out).std() > 0.01


def test_omni_first_block_cache(first_device: gpucore.Device,
                                tiny_omni: tuple[Path, Any, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`--cache fbc:T` beside one condition picture at CFG 3: diffusers' picture with its
    First Block Cache hook on the transformer (one decision a step over both CFG rows, as its
    batch makes it; the blocks' `x` as the hook's `hidden_states`), some steps skipped, the
    infotext saying how many ran."""
    from diffusers.hooks._helpers import TransformerBlockRegistry
    from webui_ref import assert_steps_skipped, first_block_cache

    folder, reference, pictures = tiny_omni
    # a random tiny model moves far more than a trained one: its relative changes measured
    # 1.14, 1.10, 1.18 (the first two steps skipped, the last computed: 2 of 4)
    threshold, steps = 1.15, 4
    out, _ = cli_ok(capsys, "img2img", "--model", str(folder), *SIZE, "--steps", str(steps),
                    "--sampler", "diffusers", "--rng", "torch", "--seed", "7", "--dtype",
                    "float32", "--cfg-scale", "3", "--prompt", "a red circle",
                    "--init-image", str(pictures / "init.png"), "--cache", f"fbc:{threshold}",
                    "--out", str(tmp_path / "cached.png"))
    transformer = reference.transformer
    block = type(transformer.layers[0])
    arguments = list(inspect.signature(block.forward).parameters)[1:]
    indices = {name: i for i, name in enumerate(arguments)}
    monkeypatch.setattr(TransformerBlockRegistry.get(block), "_cached_parameter_indices",
                        {**indices, "hidden_states": indices["x"]})
    with first_block_cache(transformer, threshold):
        expected = _diffusers(reference, "a red circle", [pictures / "init.png"], steps,
                              guidance_scale=2.0)
    cached = png_pixels(out)
    assert np.abs(cached - expected).mean() < 0.003  # 8-bit rounding: measured 9e-4
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    plain = _diffusers(reference, "a red circle", [pictures / "init.png"], steps,
                       guidance_scale=2.0)
    assert np.abs(cached - plain).mean() > 0.03  # the cache visibly acted: measured 0.066


@pytest.mark.parametrize("extra, says", [
    (("--strength", "0.5"), "denoising strength 0.5: not supported for Z-Image Omni"),
    (("--mask", "init.png"), "inpainting (a mask): not supported for Z-Image Omni"),
    (("--cache", "teacache"), "step cache teacache: not supported for Z-Image Omni models; "
                              "it runs fbc"),
])
def test_omni_refusals_get_one_line(tiny_omni: tuple[Path, Any, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    extra: tuple[str, ...], says: str) -> None:
    folder, _, pictures = tiny_omni
    extra = tuple(str(pictures / a) if a.endswith(".png") else a for a in extra)
    command = "inpaint" if "--mask" in extra else "img2img"
    code = cli.main([command, "--model", str(folder), "--prompt", "a red circle", *SIZE,
                     "--init-image", str(pictures / "init.png"), "--dtype", "float32",
                     "--steps", "4", *extra, "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and says in errors[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("picture, extra, says", [
    ((48, 64), (), "reference picture 1 is 48x64: Z-Image Omni models read condition "
                   "pictures of 64 pixels a side or more; give a larger one"),
    ((600, 64), (), "reference picture 1 is 600x64: Z-Image Omni models read condition "
                    "pictures of aspect ratios up to 8 (this one 9.4); crop it nearer square"),
    ((64, 64), ("--width", "48"), "the init image fitted to width x height is 48x80: Z-Image "
                                  "Omni models read condition pictures of 64 pixels a side"),
])
def test_omni_refuses_pictures_before_loading(tiny_omni: tuple[Path, Any, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch,
                                              picture: tuple[int, int], extra: tuple[str, ...],
                                              says: str) -> None:
    """The condition pictures diffusers refuses (Flux2ImageProcessor.check_image_input), told
    from the folder's configs before the device opens or a weight loads."""
    from diffusion.cli import generate

    def device_options(*args: object) -> None:
        raise AssertionError("the device opened: the refusal came too late")

    monkeypatch.setattr(generate, "use_device_options", device_options)
    folder, _, pictures = tiny_omni
    Image.new("RGB", picture, (200, 30, 30)).save(tmp_path / "ref.png")
    code = cli.main(["img2img", "--model", str(folder), "--prompt", "a red circle", *SIZE,
                     *extra, "--init-image", str(pictures / "init.png"), "--reference",
                     str(tmp_path / "ref.png"), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and says in errors[0], err


@pytest.mark.nodevice
def test_the_pipeline_checks_its_pictures() -> None:
    """ZImageOmniPipeline called from Python refuses them too (PIL pictures and arrays)."""
    from diffusion.pipelines.flow.z_image_omni import check_pictures

    check_pictures([Image.new("RGB", (64, 512)), np.zeros((64, 64, 3), np.uint8)])
    with pytest.raises(ValueError, match="condition picture 2 is 64x48: Z-Image Omni models"):
        check_pictures([Image.new("RGB", (64, 64)), np.zeros((48, 64, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"aspect ratios up to 8 \(this one 8.1\)"):
        check_pictures([Image.new("RGB", (520, 64))])
