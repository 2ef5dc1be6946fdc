"""Sana and Sana Sprint against diffusers' SanaPipeline and SanaSprintPipeline on tiny random
folders (PyTorch CPU float32): the pictures (CFG with a negative prompt; Sprint's SCM steps
with its embedded guidance), and the command line (the family found, its defaults,
diffusers' picture, a WebUI sampler, what it refuses in one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels

import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.load import model_defaults

SIZE = {"height": 32, "width": 64}


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    return reference(prompt, generator=torch.Generator().manual_seed(7), output_type="np",
                     use_resolution_binning=False, **SIZE, **settings).images[0]


def test_sana_pipeline_is_diffusers(first_device: gpucore.Device,
                                    tiny_sana: tuple[Path, Any]) -> None:
    """diffusers' picture after 4 DPM-Solver++ steps at CFG 4.5 with a negative prompt (the
    references pad to 40 tokens, ours runs the real ones); the negative prompt matters."""
    from diffusion.pipelines.flow.sana import SanaPipeline

    folder, reference = tiny_sana
    settings: dict[str, Any] = dict(num_inference_steps=4, guidance_scale=4.5,
                                    negative_prompt="a photo of a cat", max_sequence_length=40)
    expected = _diffusers(reference, "a red circle", **settings)
    ours = SanaPipeline.from_pretrained(folder, device=first_device)
    got = ours("a red circle", seed=7, **SIZE, **settings)[0]
    # 3.3e-3 measured: the tiny Sana 1.0 transformer's own 7e-5 of its outputs (its test's
    # tolerance is 1e-4) through CFG 4.5 and four steps; Sprint's pictures agree to 2e-6
    assert np.abs(got - expected).max() < 1e-2
    assert np.abs(got - expected).mean() < 1e-3
    plain = ours("a red circle", seed=7, **SIZE, **{**settings, "negative_prompt": ""})[0]
    assert np.abs(plain - got).mean() > 0.05


@pytest.mark.parametrize(("steps", "intermediate"), [(2, None), (1, None)])
def test_sana_sprint_is_diffusers(first_device: gpucore.Device,
                                  tiny_sana_sprint: tuple[Path, Any], steps: int,
                                  intermediate: float | None) -> None:
    """SanaSprintPipeline's picture after its SCM steps (two: through the angle 1.3; one),
    the guidance embedded; the guidance and the prompt matter."""
    from diffusion.pipelines.flow.sana import SanaPipeline

    folder, reference = tiny_sana_sprint
    settings: dict[str, Any] = dict(num_inference_steps=steps, guidance_scale=4.5,
                                    max_sequence_length=40)
    expected = _diffusers(reference, "a red circle",
                          intermediate_timesteps=1.3 if steps == 2 else None, **settings)
    ours = SanaPipeline.from_pretrained(folder, device=first_device)
    got = ours("a red circle", seed=7, **SIZE, **settings)[0]
    assert np.abs(got - expected).max() < 1e-5  # 1.6e-6 measured
    if steps == 2:
        weaker = ours("a red circle", seed=7, **SIZE, **{**settings, "guidance_scale": 2.0})
        other = ours("a blue cat", seed=7, **SIZE, **settings)
        assert np.abs(weaker[0] - got).mean() > 0.01 and np.abs(other[0] - got).mean() > 0.005


def test_sana_from_the_cli(first_device: gpucore.Device, tiny_sana: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family's defaults (SanaPipeline's 20 steps of its own sampler at CFG 4.5),
    diffusers' picture from its own loop; a WebUI sampler's picture; refused in one line: a
    step cache, an init image with the 'diffusers' sampler, a side not a multiple of 32."""
    folder, reference = tiny_sana
    assert model_defaults(folder)[0] == SamplingDefaults(steps=20, sampler="diffusers",
                                                         cfg_scale=4.5)
    common = ("txt2img", "--model", str(folder), "--prompt", "a red circle", "--width", "64",
              "--height", "32", "--steps", "4", "--seed", "7", "--dtype", "float32",
              "--rng", "torch")
    out, err = cli_ok(capsys, *common, "--negative-prompt", "a photo of a cat",
                      "--out", str(tmp_path / "a.png"))
    assert "sana model (sana)" in err and "--cfg-scale 4.5" in err, err
    expected = _diffusers(reference, "a red circle", num_inference_steps=4,
                          guidance_scale=4.5, negative_prompt="a photo of a cat")
    assert np.abs(png_pixels(out) - expected).mean() < 0.01
    out, _ = cli_ok(capsys, *common, "--sampler", "Euler", "--out", str(tmp_path / "b.png"))
    text = read_infotext(out)
    assert text is not None and "Sampler: Euler, Schedule type: Simple, CFG scale: 4.5" in text
    assert png_pixels(out).std() > 0.02
    assert "cache" in cli_error(capsys, *common, "--cache", "fbc:0.1",
                                "--out", str(tmp_path / "c.png"))
    init = tmp_path / "init.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(init)
    error = cli_error(capsys, "img2img", *common[1:], "--init-image", str(init),
                      "--sampler", "diffusers", "--out", str(tmp_path / "d.png"))
    assert "WebUI sampler" in error
    error = cli_error(capsys, *common[:6], "48", *common[7:], "--out", str(tmp_path / "e.png"))
    assert "multiple of 32" in error


def test_sana_sprint_from_the_cli(first_device: gpucore.Device,
                                  tiny_sana_sprint: tuple[Path, Any], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Sprint's defaults (2 steps of its own sampler, CFG 1), its guidance from
    --distilled-cfg-scale (diffusers' picture), a CFG scale or a WebUI sampler refused in one
    line."""
    folder, reference = tiny_sana_sprint
    assert model_defaults(folder)[0] == SamplingDefaults(steps=2, sampler="diffusers",
                                                         cfg_scale=1.0)
    common = ("txt2img", "--model", str(folder), "--prompt", "a red circle", "--width", "64",
              "--height", "32", "--seed", "7", "--dtype", "float32", "--rng", "torch")
    out, err = cli_ok(capsys, *common, "--distilled-cfg-scale", "4.5",
                      "--out", str(tmp_path / "a.png"))
    assert "sana-sprint" in err, err
    expected = _diffusers(reference, "a red circle", num_inference_steps=2, guidance_scale=4.5)
    assert np.abs(png_pixels(out) - expected).mean() < 0.01
    assert "distilled-cfg-scale" in cli_error(capsys, *common, "--cfg-scale", "4",
                                              "--out", str(tmp_path / "b.png"))
    assert "Euler" in cli_error(capsys, *common, "--sampler", "Euler",
                                "--out", str(tmp_path / "c.png"))


def test_sana_img2img_and_hires(first_device: gpucore.Device,
                                tiny_sana: tuple[Path, Any]) -> None:
    """The flow families' img2img and hires fix on Sana with a WebUI sampler (diffusers has
    no Sana img2img pipeline to compare with): the DC-AE's latents of the init picture
    visibly matter, a mask keeps what it leaves out, the hires pass doubles the size."""
    from PIL import Image

    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest
    from diffusion.upscalers.interpolation import HiresFix

    folder, _ = tiny_sana
    model = load_pipeline(folder, device=first_device)
    rng = np.random.default_rng(0)
    dark, light = (rng.integers(low, low + 40, (32, 64, 3), np.uint8) for low in (20, 190))
    common: dict[str, Any] = dict(prompt="a red circle", width=64, height=32, steps=3,
                                  sampler="Euler", seed=7, rng="torch", cfg_scale=4.5)
    kept, moved = (model.generate(GenerationRequest(
        **common, init_image=Image.fromarray(picture), strength=0.5)).images[0]
        .astype(np.float32) for picture in (dark, light))
    assert np.abs(kept - moved).mean() > 2
    mask = np.zeros((32, 64), np.uint8)
    mask[8:24, 16:48] = 255
    painted = model.generate(GenerationRequest(
        **common, init_image=Image.fromarray(dark), mask=Image.fromarray(mask),
        strength=0.9)).images[0].astype(np.float32)
    change = np.abs(painted - dark)
    assert change[mask == 0].mean() < 0.5 * change[mask > 0].mean()
    result = model.generate(GenerationRequest(
        **common, hires=HiresFix(scale=2.0, upscaler="Latent", steps=2, denoise=0.5)))
    assert result.images[0].shape == (64, 128, 3) and result.images[0].std() > 2


def test_sana_vae_file(first_device: gpucore.Device, tiny_sana: tuple[Path, Any],
                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--vae with a DC-AE file (diffusers' names, the folder's VAE): the folder's picture bit
    for bit, the file named in the infotext; another family's VAE refused in one line."""
    from safetensors.torch import save_file

    folder, reference = tiny_sana
    save_file({k: v.contiguous() for k, v in reference.vae.state_dict().items()},
              str(tmp_path / "dc_ae_tiny.safetensors"))
    common = ("txt2img", "--model", str(folder), "--prompt", "a red circle", "--width", "64",
              "--height", "32", "--steps", "2", "--seed", "7", "--dtype", "float32")
    out, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "a.png"))
    plain = png_pixels(out)
    out, _ = cli_ok(capsys, *common, "--vae", str(tmp_path / "dc_ae_tiny.safetensors"),
                    "--out", str(tmp_path / "b.png"))
    np.testing.assert_array_equal(png_pixels(out), plain)
    text = read_infotext(out)
    assert text is not None and "dc_ae_tiny" in text, text
    save_file({"decoder.conv_in.weight": torch.zeros(32, 4, 3, 3)},
              str(tmp_path / "sd.safetensors"))
    error = cli_error(capsys, *common, "--vae", str(tmp_path / "sd.safetensors"),
                      "--out", str(tmp_path / "c.png"))
    assert "Sana" in error and "DC-AE" in error


def test_sana_single_file(first_device: gpucore.Device, tiny_sana: tuple[Path, Any],
                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A transformer file in NVIDIA's original layout with a Sana folder as --base whose
    transformer/ holds its config alone: the whole folder's picture bit for bit; without
    --base, one line saying what to add."""
    import shutil

    from safetensors.torch import save_file
    from sana_tiny import original_layout

    folder, reference = tiny_sana
    file = tmp_path / "sana_tiny.safetensors"
    save_file(original_layout(reference.transformer), str(file))
    slim = tmp_path / "sana"
    shutil.copytree(folder, slim)
    for weights in (slim / "transformer").glob("*.safetensors*"):
        weights.unlink()
    common = ("txt2img", "--prompt", "a red circle", "--width", "64", "--height", "32",
              "--steps", "2", "--seed", "7", "--dtype", "float32", "--rng", "torch")
    out, err = cli_ok(capsys, *common, "--model", str(file), "--base", str(slim),
                      "--out", str(tmp_path / "file.png"))
    assert "sana_tiny (sana)" in err, err
    single = png_pixels(out)
    out, _ = cli_ok(capsys, *common, "--model", str(folder), "--out", str(tmp_path / "d.png"))
    np.testing.assert_array_equal(single, png_pixels(out))
    error = cli_error(capsys, *common, "--model", str(file), "--out", str(tmp_path / "x.png"))
    assert "--base" in error and "Sana" in error
