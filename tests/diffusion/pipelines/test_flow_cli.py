"""FLUX and SD3 through the command line like any model: the family detected from the folder
and printed, FLUX's defaults (CFG 1, Euler) and distilled guidance, Forge's infotext, text
encoders from single files (--text-encoder), and with `--sampler diffusers --rng torch`
diffusers' picture."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_levels
from flow_tiny import bfl_checkpoint
from PIL import Image
from safetensors.torch import save_file

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.flow.flow_model import FlowModel

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

SIZE = ("--width", "24", "--height", "16")


def _expected(images: np.ndarray) -> np.ndarray:
    return np.round(images[0] * 255).astype(np.int16)


def test_flux_dev_from_the_cli(first_device: gpucore.Device, tiny_flux_dev: tuple[Path, Any],
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """dev's defaults (CFG 1) and distilled guidance; "diffusers" draws FluxPipeline's
    picture; a WebUI sampler writes Forge's infotext (Euler, Simple, Distilled CFG Scale)."""
    root, reference = tiny_flux_dev
    model = str(root / "flux")
    out, err = cli_ok(capsys, "txt2img", "--model", model, "--prompt", "a red circle", *SIZE,
                      "--steps", "2", "--sampler", "diffusers", "--rng", "torch", "--seed", "7",
                      "--distilled-cfg-scale", "2.5", "--dtype", "float32",
                      "--out", str(tmp_path / "a.png"))
    assert "model: flux (flux-dev)" in err and "--cfg-scale 1" in err
    expected = reference("a red circle", height=16, width=24, num_inference_steps=2,
                         guidance_scale=2.5, max_sequence_length=16,
                         generator=torch.Generator().manual_seed(7),
                         output_type="np").images
    assert np.abs(png_levels(out) - _expected(expected)).max() <= 1
    out, _ = cli_ok(capsys, "txt2img", "--model", model, "--prompt", "a red circle", *SIZE,
                    "--steps", "2", "--seed", "7", "--dtype", "float32",
                    "--out", str(tmp_path / "b.png"))
    text = read_infotext(out)
    assert text is not None
    assert ("Steps: 2, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
            "Distilled CFG Scale: 3.5, Seed: 7, Size: 24x16, Model: flux") in text


def test_sd3_with_text_encoder_files(first_device: gpucore.Device, tiny_sd3: tuple[Path, Any],
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The folder's OpenCLIP-G and T5 weights gone, given as clip_g / t5xxl files (bare
    transformers names; ComfyUI's all-in-one prefix): diffusers' picture, and the files
    named as Forge's "Module N"."""
    reference = tiny_sd3[1]
    model = tmp_path / "sd3"
    shutil.copytree(tiny_sd3[0] / "sd3", model)
    for name in ("text_encoder_2", "text_encoder_3"):
        (model / name / "model.safetensors").unlink()
    clip_g = tmp_path / "clip_g.safetensors"
    save_file({k: v.contiguous() for k, v in reference.text_encoder_2.state_dict().items()},
              str(clip_g))
    t5 = tmp_path / "t5xxl.safetensors"
    save_file({"text_encoders.t5xxl.transformer." + k: v.clone().contiguous()
               for k, v in reference.text_encoder_3.state_dict().items()
               if k != "encoder.embed_tokens.weight"}, str(t5))  # T5's tied copy of shared
    out, err = cli_ok(capsys, "txt2img", "--model", str(model), "--prompt", "a red circle",
                      "--negative-prompt", "a dog", *SIZE, "--steps", "2", "--sampler",
                      "diffusers", "--rng", "torch", "--seed", "3", "--cfg-scale", "4",
                      "--text-encoder", str(clip_g), "--text-encoder", str(t5),
                      "--dtype", "float32", "--out", str(tmp_path / "c.png"))
    assert "model: sd3 (sd3)" in err
    expected = reference("a red circle", negative_prompt="a dog", height=16, width=24,
                         num_inference_steps=2, guidance_scale=4.0, max_sequence_length=16,
                         generator=torch.Generator().manual_seed(3), output_type="np").images
    assert np.abs(png_levels(out) - _expected(expected)).max() <= 1
    text = read_infotext(out)
    assert text is not None and text.endswith("Module 1: clip_g, Module 2: t5xxl")


def test_flow_model_errors_are_one_line(first_device: gpucore.Device,
                                        tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Settings the flow models do not take, and a text encoder file that holds none."""
    not_an_encoder = tmp_path / "vae.safetensors"
    shutil.copy(tiny_flux_dev[0] / "flux" / "vae" / "diffusion_pytorch_model.safetensors",
                not_an_encoder)
    base = ("txt2img", "--model", str(tiny_flux_dev[0] / "flux"), "--prompt", "x", *SIZE, "--steps",
            "2", "--out", str(tmp_path / "d.png"))
    for extra, message in (
            (("--sampler", "DPM2"), "sampler DPM2 is not defined for flow-matching models"),
            (("--scheduler", "Karras"), "schedule type Karras is not defined"),
            (("--text-encoder", str(tmp_path / "nothing.safetensors")), "is not a file"),
            (("--text-encoder", str(not_an_encoder)), "no text encoder found")):
        assert cli.main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
    bfl = tmp_path / "flux1-dev.safetensors"  # a transformer alone: it names what to add
    save_file(bfl_checkpoint(tiny_flux_dev[1].transformer, "model.diffusion_model."), str(bfl))
    assert cli.main(["txt2img", "--model", str(bfl), "--prompt", "x"]) == 2
    assert ("has no ae.safetensors (the VAE), clip_l.safetensors, t5xxl_fp16.safetensors; "
            "give --text-encoder ae.safetensors and --text-encoder clip_l.safetensors and "
            "--text-encoder t5xxl_fp16.safetensors") in capsys.readouterr().err
    # --vae, refused before the model loads: a single file takes its VAE as a module
    assert cli.main(["txt2img", "--model", str(bfl), "--prompt", "x", "--vae",
                     str(not_an_encoder)]) == 2
    assert ("--vae is not supported for flux-dev models yet; give the VAE file (ae.safetensors) "
            "with --text-encoder") in capsys.readouterr().err


@pytest.mark.nodevice
def test_sizes_are_whole_latent_patches() -> None:
    """FLUX / SD3 latents go in 2x2 patches: a side must be a multiple of 16 pixels (checked
    before anything runs; a model stand-in without weights)."""
    stand_in = SimpleNamespace(vae_scale_factor=8, transformer=SimpleNamespace(config={}))
    model = FlowModel(stand_in, family="flux-dev")
    with pytest.raises(ValueError, match="width must be a multiple of 16 for flux-dev models "
                                         r"\(2x2 patches of latents\), got 1000; try 992"):
        model.generate("x", width=1000, height=1024)


@pytest.mark.nodevice
@pytest.mark.parametrize("family", ["flux-dev", "sd3"])
def test_composable_prompts_are_refused(family: str) -> None:
    """FLUX / SD3 guide with one prompt: the WebUI's AND (or a trailing :weight) is refused
    with what to write instead, not encoded as words (a model stand-in without weights)."""
    stand_in = SimpleNamespace(vae_scale_factor=8, transformer=SimpleNamespace(config={}))
    model = FlowModel(stand_in, family=family)
    with pytest.raises(ValueError, match=f"the prompt has 2 parts joined by AND: the WebUI "
                                         f"reads that as composable diffusion, which is not "
                                         f"supported for {family} models; join parts with a "
                                         "comma"):
        model.generate("a cat AND a dog", width=1024, height=1024, sampler="Euler")


def test_sampler_settings_and_ensd_apply(first_device: gpucore.Device,
                                         tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The WebUI's sampler settings reach the flow samplers that take them (Euler's churn,
    Euler a's eta) and the ENSD Euler a's step noise, each written into the infotext."""
    base = ("txt2img", "--model", str(tiny_flux_dev[0] / "flux"), "--prompt", "x", *SIZE,
            "--steps", "3", "--seed", "7", "--dtype", "float32")
    for sampler, extra, field in (("Euler", ("--s-churn", "0.5"), "Sigma churn: 0.5"),
                                  ("Euler a", ("--eta", "0.5"), "Eta: 0.5"),
                                  ("Euler a", ("--ensd", "31337"), "ENSD: 31337")):
        plain, _ = cli_ok(capsys, *base, "--sampler", sampler, "--out", str(tmp_path / "a.png"))
        out, _ = cli_ok(capsys, *base, "--sampler", sampler, *extra,
                        "--out", str(tmp_path / "b.png"))
        assert np.abs(png_levels(out) - png_levels(plain)).max() > 0, extra
        text = read_infotext(out)
        assert text is not None and field in text


def test_inpaint_only_masked_from_the_cli(first_device: gpucore.Device,
                                          tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`inpaint --inpaint-full-res` (the WebUI's "Only masked") on a FLUX model: the box
    around the mask (blurred by the CLI's default 4, the WebUI page's) drawn at 24x16 and
    pasted into the 40x30 picture, which keeps its size and, outside that box, its pixels;
    the infotext says so. The whole picture (and latent nothing): the original laid back
    where the blurred mask is black, as Forge does; "diffusers" refuses the latent contents,
    which act on latents its pipeline makes itself."""
    from diffusion.imaging import fit_picture
    from diffusion.pipelines.inpaint_area import MaskedArea
    from diffusion.pipelines.mask_blur import blur_mask

    picture = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = Image.new("L", (40, 30))
    mask.paste(255, (26, 4, 32, 10))
    Image.fromarray(picture).save(tmp_path / "in.png")
    mask.save(tmp_path / "mask.png")
    out, _ = cli_ok(capsys, "inpaint", "--model", str(tiny_flux_dev[0] / "flux"), "--prompt", "x",
                    *SIZE, "--steps", "2", "--seed", "1", "--sampler", "Euler",
                    "--init-image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                    "--inpaint-full-res", "--inpaint-full-res-padding", "2",
                    "--out", str(tmp_path / "out.png"))
    image = png_levels(out)
    area = MaskedArea.find(blur_mask(mask, 4, 4), 2, 24, 16)
    assert area is not None and image.shape == (30, 40, 3)
    x1, y1, x2, y2 = area.box
    outside = np.ones((30, 40), bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(image[outside], picture[outside])
    assert not np.array_equal(image[~outside], picture[~outside])
    text = read_infotext(out)
    assert text is not None and "Mask blur: 4, Inpaint area: Only masked, Masked area " \
        "padding: 2" in text and "Masked content" not in text  # the CLI's "original"
    whole = ["inpaint", "--model", str(tiny_flux_dev[0] / "flux"), "--prompt", "x", "--width",
             "40", "--height", "32", "--steps", "2", "--seed", "1", "--init-image",
             str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
             "--inpainting-fill", "latent nothing"]
    out, _ = cli_ok(capsys, *whole, "--sampler", "Euler", "--out", str(tmp_path / "whole.png"))
    black = np.asarray(fit_picture(blur_mask(mask, 4, 4), 40, 32, 0)) == 0
    kept = np.asarray(fit_picture(Image.fromarray(picture), 40, 32, 0))
    assert np.array_equal(png_levels(out)[black], kept[black])
    assert "Masked content: latent nothing" in (read_infotext(out) or "")
    assert cli.main([*whole, "--sampler", "diffusers", "--out", str(tmp_path / "d.png")]) == 2
    assert "'latent noise' / 'latent nothing'" in capsys.readouterr().err
