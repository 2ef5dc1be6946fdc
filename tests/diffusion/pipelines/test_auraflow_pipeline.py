"""AuraFlow: AuraFlowPipeline on gpustd against diffusers' (tiny, random, float32), with CFG
and a negative prompt, the prompt and the negative prompt visibly mattering; through the
command line like any model (the family detected from its folder, its defaults, diffusers'
picture with `--sampler diffusers --rng torch`, a WebUI sampler, First Block Cache, img2img),
and what it refuses in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_levels, png_pixels
from webui_ref import assert_steps_skipped

import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow.auraflow import AuraFlowPipeline
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 24, 32  # 6 x 8 patches of 2 x 2 latents (the tiny VAE's 2x), table 8 x 8
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_auraflow: tuple[Path, Any]) -> None:
    """The picture at guidance 3.5 with a negative prompt (at 1, no second pass: the CLI's
    test); the prompt and the negative prompt visibly matter."""
    folder, reference = tiny_auraflow
    pipe = AuraFlowPipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    **settings)[0]

    guided = ours(RED, negative_prompt="blurry")
    expected = _diffusers(reference, RED, negative_prompt="blurry")
    # measured on lavapipe: 1.6e-5 max, 1.9e-6 mean (CFG 3.5 scales the float32 rounding)
    np.testing.assert_allclose(guided, expected, atol=1e-4)
    # the prompt and the negative prompt matter (measured 4.7e-3 and 3.2e-3 mean: the tiny
    # model lets the text through weakly at most timesteps; over 100x the rounding above)
    # the prompt and the negative prompt matter (measured 3.2e-3 and 4.1e-3 mean: the tiny
    # model lets the text through weakly at most timesteps; over 100x the rounding above)
    assert np.abs(ours(HORSE, negative_prompt="blurry") - guided).mean() > 1.5e-3
    assert np.abs(ours(RED, negative_prompt=HORSE) - guided).mean() > 1.5e-3


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", *more)


def test_auraflow_from_the_cli(first_device: gpucore.Device, tiny_auraflow: tuple[Path, Any],
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (50 steps at CFG 3.5) from the folder; diffusers'
    picture at CFG 1 (no negative pass) and at the default CFG 3.5 with a negative prompt."""
    folder, reference = tiny_auraflow
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "auraflow"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                         cfg_scale=3.5)
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--cfg-scale", "1",
                                       "--out", str(tmp_path / "a.png")))
    plain = png_pixels(out)
    assert np.abs(plain - _diffusers(reference, RED, guidance_scale=1.0)).mean() < TOL
    out, err = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                       "--out", str(tmp_path / "b.png")))
    assert "--cfg-scale 3.5" in err
    # CFG 3.5 by default: diffusers' picture at guidance 3.5 within the PNG's level
    guided = png_levels(out)
    expected = np.round(_diffusers(reference, RED, negative_prompt=HORSE) * 255)
    assert np.abs(guided - expected).max() <= 1
    # and not CFG 1's picture (measured 5 levels apart at most, 0.6 on average)
    assert np.abs(guided - np.round(plain * 255)).max() >= 3


def test_webui_sampler_cache_img2img_and_refusals(
        first_device: gpucore.Device, tiny_auraflow: tuple[Path, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A WebUI sampler runs; `--cache fbc:T` skips steps and says so; img2img starts from the
    init picture; MagCache, --base and a picture past the position table are refused in one
    line."""
    from PIL import Image

    folder, _ = tiny_auraflow
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), *SIZE, "--prompt", RED,
                    "--steps", "2", "--cfg-scale", "1", "--sampler", "Euler", "--seed", "3",
                    "--out", str(tmp_path / "e.png"))
    assert png_pixels(out).shape == (HEIGHT, WIDTH, 3)
    threshold, steps = 1.5, 4
    common = _common(folder, "--prompt", RED, "--cfg-scale", "1")
    common = (*common[:common.index("--steps") + 1], str(steps),
              *common[common.index("--steps") + 2:])
    out, _ = cli_ok(capsys, *common, "--cache", f"fbc:{threshold}",
                    "--out", str(tmp_path / "cached.png"))
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    rng = np.random.default_rng(5)
    pictures = []
    for name in ("p", "q"):
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)).save(
            tmp_path / f"{name}.png")
        out, _ = cli_ok(capsys, "img2img", *common[1:], "--init-image",
                        str(tmp_path / f"{name}.png"), "--strength", "0.5",
                        "--out", str(tmp_path / f"{name}-out.png"))
        pictures.append(png_pixels(out))
    assert np.abs(pictures[0] - pictures[1]).mean() > 3e-3
    assert "it runs fbc" in cli_error(capsys, *common, "--cache", "magcache",
                                      "--out", str(tmp_path / "x.png"))
    assert "--base" in cli_error(capsys, *common, "--base", str(folder),
                                 "--out", str(tmp_path / "x.png"))
    assert "position table" in cli_error(capsys, *common, "--width", "40",
                                         "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_single_file_with_a_base_folder(first_device: gpucore.Device,
                                        tiny_auraflow: tuple[Path, Any], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The transformer in fal's names (ComfyUI's file), read back by diffusers'
    from_single_file as the folder's weights, gives with `--base FOLDER` the folder's
    picture bitwise; without a base, one line saying to give one."""
    import diffusers
    from auraflow_tiny import fal_names
    from safetensors.torch import save_file

    folder, reference = tiny_auraflow
    file = tmp_path / "aura_flow_tiny.safetensors"
    save_file(fal_names(reference.transformer), str(file))
    back = diffusers.AuraFlowTransformer2DModel.from_single_file(
        str(file), config=str(folder), subfolder="transformer", local_files_only=True)
    for key, value in reference.transformer.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, rtol=0, atol=0)
    common = _common(folder, "--prompt", RED, "--cfg-scale", "1")
    plain, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "plain.png"))
    model = common.index("--model") + 1
    out, _ = cli_ok(capsys, *common[:model], str(file), *common[model + 1:], "--base",
                    str(folder), "--out", str(tmp_path / "file.png"))
    np.testing.assert_array_equal(png_pixels(out), png_pixels(plain))
    assert "--base" in cli_error(capsys, *common[:model], str(file), *common[model + 1:],
                                 "--out", str(tmp_path / "x.png"))


def test_float16_keeps_the_vae_float32(f16_device: gpucore.Device,
                                       tiny_auraflow: tuple[Path, Any]) -> None:
    """float16 weights with SDXL's VAE float32 (its force_upcast, as diffusers decodes):
    diffusers' float32 picture within float16's rounding."""
    folder, reference = tiny_auraflow
    pipe = AuraFlowPipeline.from_pretrained(folder, dtype=np.float16, device=f16_device)
    assert pipe.transformer.proj_out.weight.dtype == np.float16
    assert pipe.vae.decoder.conv_in.weight.dtype == np.float32
    got = pipe(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
               guidance_scale=1.0)[0]
    expected = _diffusers(reference, RED, guidance_scale=1.0)
    # measured on lavapipe: 1.4e-4 mean, 1.0e-3 max
    np.testing.assert_allclose(got, expected, atol=5e-3)
