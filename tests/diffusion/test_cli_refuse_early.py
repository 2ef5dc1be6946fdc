"""`python -m diffusion` refusing a --refiner that cannot take over from --model, and a --base
that a GGUF --model cannot run with, from their files' configs and headers (pipelines.
before_load), before the device opens or a weight loads: one `error:` line, exit status 2.
Where the pair fits, the run goes on to the device (a stand-in there says it got so far)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import cli_error
from PIL import Image
from sd_headers import write_sd_folder

import diffusion.cli.main as cli
from diffusion.pipelines.load import DEFAULT_MODEL

pytestmark = pytest.mark.nodevice

SD = ("--prompt", "a", "--steps", "2", "--width", "64", "--height", "64")
ON = "on to the device"  # the stand-in's line where the checks let the run go on


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """tmp_path as the current folder with header-only SD 1.x, SDXL, SDXL refiner and SDXL
    inpainting folders, a picture and a mask; what follows the checks (the device options,
    then the load) stands in as a ValueError saying ON."""
    from diffusion.cli import generate

    def device_options(*args: object) -> None:
        raise ValueError(ON)

    monkeypatch.setattr(generate, "use_device_options", device_options)
    monkeypatch.chdir(tmp_path)
    for kind in ("sd1", "sdxl", "sdxl-refiner"):
        write_sd_folder(tmp_path / kind, kind)
    write_sd_folder(tmp_path / "sdxl-inpaint", "sdxl", in_channels=9)
    Image.new("RGB", (16, 16), (200, 30, 30)).save("good.png")
    Image.new("L", (16, 16), 255).save("mask.png")
    return tmp_path


LATENTS = ("is a {} model and cannot continue the latents of a {} model; an SDXL base hands "
           "over to the SDXL refiner (or another SDXL model)")


@pytest.mark.parametrize("argv, message", [
    (("txt2img", *SD, "--refiner", "sdxl-refiner"),  # the bundled SD 1.x model
     "--refiner 'sdxl-refiner' " + LATENTS.format("sdxl-refiner", "sd1")),
    (("txt2img", "--model", "sd1", *SD, "--refiner", "sdxl"),
     "--refiner 'sdxl' " + LATENTS.format("sdxl", "sd1")),
    (("img2img", "--model", "sdxl", *SD, "--init-image", "good.png", "--refiner",
      "sdxl-inpaint"), "--refiner 'sdxl-inpaint' is an inpainting model; the refiner takes "
                       "over txt2img and img2img: give a model that is not one"),
    (("inpaint", "--model", "sdxl", *SD, "--init-image", "good.png", "--mask", "mask.png",
      "--refiner", "sdxl-refiner"), "--refiner 'sdxl-refiner': the refiner takes over "
                                    "txt2img and img2img; inpainting runs without one"),
    (("txt2img", *SD, "--refiner", "nope"), "--refiner 'nope' does not exist"),
    # the pairs that fit go on
    (("txt2img", "--model", "sdxl", *SD, "--refiner", "sdxl-refiner"), ON),
    (("img2img", "--model", "sdxl", *SD, "--init-image", "good.png", "--refiner",
      "sdxl-refiner"), ON),
])
def test_a_refiner_is_refused_before_anything_loads(
        here: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
        message: str) -> None:
    assert message in cli_error(capsys, *argv)


def test_a_reference_unit_is_no_control_map(here: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Model "None" with a reference module is a reference unit, which SD 1.x runs; without
    one it is FLUX.1 Canny / Depth dev's control map, which SD 1.x refuses."""
    unit = ("--controlnet", "None", "--control-image", "good.png")
    assert "a control map without a ControlNet model: sd1 models take none" in cli_error(
        capsys, "txt2img", *SD, *unit)
    assert ON in cli_error(capsys, "txt2img", *SD, *unit, "--control-module", "reference_only")


def test_a_gguf_base_is_refused_before_anything_loads(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bundled SD 1.x model's UNet as a UNet-only GGUF (`quantize --unet-only`): a --base
    of SDXL, or of SD 1.x at another text width, refused with what each header says; the
    bundled model itself, its own base, goes on. A whole-model GGUF takes no --base."""
    assert cli.main(["quantize", str(DEFAULT_MODEL), "--unet-only", "--type", "f16",
                     "unet.gguf"]) == 0
    assert cli.main(["quantize", "sd1", "--type", "f16", "whole.gguf"]) == 0
    capsys.readouterr()
    width = 128  # the bundled model's text encoder's
    assert cli_error(capsys, "txt2img", "--model", "unet.gguf", "--base", "sdxl", *SD) == (
        "error: --base sdxl is a sdxl model (64-wide text, SDXL's added embedding) and the "
        f"UNet in unet.gguf a sd1 one ({width}-wide text): its UNet config does not fit; give "
        "a base model of the UNet's family")
    assert "a sd1 model (32-wide text) and the UNet in unet.gguf a sd1 one" in cli_error(
        capsys, "txt2img", "--model", "unet.gguf", "--base", "sd1", *SD)
    assert ON in cli_error(capsys, "txt2img", "--model", "unet.gguf", "--base",
                           str(DEFAULT_MODEL), *SD)
    assert "whole.gguf: a whole-model GGUF, with its own text encoders and VAE; a base " \
           "model (--base) is for UNet-only GGUFs: leave it out" in cli_error(
               capsys, "txt2img", "--model", "whole.gguf", "--base", "sd1", *SD)
