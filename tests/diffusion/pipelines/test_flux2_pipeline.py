"""FLUX.2 klein through the command line like any model: the family detected from a
diffusers folder, the distilled cards' defaults (4 steps, CFG 1) and the base model's,
diffusers' picture with `--sampler diffusers --rng torch` (distilled, and with CFG), the
prompt visibly mattering, a WebUI sampler, what it refuses in one line, and its file forms as
ComfyUI users have them (the transformer in Black Forest Labs' layout and GGUFs of it with a
klein folder as --base, a Qwen3 text encoder file)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from flux2_tiny import FLUX2_TINY, bfl_layout, tiny_flux2_pipeline
from PIL import Image
from safetensors.torch import save_file
from sd_tiny import state_dict
from zimage_tiny import tiny_qwen3

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext
from diffusion.loaders.flow.file import flow_model_family
from diffusion.loaders.flux2 import flux2_family, load_flux2_file
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import family_of
from diffusion.pipelines.load import model_defaults

SIZE = ("--width", "24", "--height", "16")
FILES = ("txt2img", "--prompt", "a red circle", *SIZE, "--steps", "2", "--sampler",
         "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")


@pytest.fixture(scope="module")
def tiny_flux2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path, Any]:
    root = tmp_path_factory.mktemp("tiny-flux2")
    distilled = tiny_flux2_pipeline(root, distilled=True)
    base = tiny_flux2_pipeline(root, distilled=False)
    return root / "flux2-klein", distilled, root / "flux2-klein-base", base


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    return reference(prompt=prompt, height=16, width=24, num_inference_steps=2,
                     generator=torch.Generator().manual_seed(7), output_type="np",
                     **settings).images[0]


def test_flux2_from_the_cli(first_device: gpucore.Device,
                            tiny_flux2: tuple[Path, Any, Path, Any], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """The defaults by `is_distilled`; diffusers' picture; the prompt visibly changes it;
    the base model's CFG 3 is diffusers' guidance_scale 3 against the empty prompt."""
    folder, reference, base_folder, base = tiny_flux2
    assert model_defaults(folder)[0] == SamplingDefaults(steps=4, sampler="Euler",
                                                         cfg_scale=1.0)
    assert model_defaults(base_folder)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                              cfg_scale=4.0)
    common = (*SIZE, "--steps", "2", "--sampler", "diffusers", "--rng", "torch", "--seed", "7",
              "--dtype", "float32")
    out, err = cli_ok(capsys, "txt2img", "--model", str(folder), "--prompt", "a red circle",
                      *common, "--out", str(tmp_path / "a.png"))
    assert "flux2-klein model (flux2-klein): --cfg-scale 1 (diffusers' FLUX.2 klein" in err
    ours = png_pixels(out)
    assert np.abs(ours - _diffusers(reference, "a red circle")).mean() < 0.01
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--prompt",
                    "an astronaut riding a horse", *common, "--out", str(tmp_path / "b.png"))
    other = png_pixels(out)
    assert np.abs(other - ours).mean() > 0.02  # the prompt matters (the test's premise)
    assert np.abs(other - _diffusers(reference, "an astronaut riding a horse")).mean() < 0.01
    out, _ = cli_ok(capsys, "txt2img", "--model", str(base_folder), "--prompt", "a red circle",
                    *common, "--cfg-scale", "3", "--out", str(tmp_path / "c.png"))
    guided = png_pixels(out)
    assert np.abs(guided - _diffusers(base, "a red circle", guidance_scale=3.0)).mean() < 0.01
    assert np.abs(guided - ours).mean() > 0.01  # the negative pass matters


def test_flux2_webui_sampler_and_refusals(first_device: gpucore.Device,
                                          tiny_flux2: tuple[Path, Any, Path, Any],
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A WebUI sampler over the Simple schedule and its infotext; a denoising strength
    with the init image (a reference picture) gets one line."""
    folder = tiny_flux2[0]
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--prompt", "a red circle",
                    *SIZE, "--steps", "2", "--seed", "7", "--dtype", "float32",
                    "--out", str(tmp_path / "e.png"))
    text = read_infotext(out)
    assert text is not None
    assert "Steps: 2, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Seed: 7" in text
    assert png_pixels(out).std() > 0.01
    Image.new("RGB", (24, 16), (200, 30, 30)).save(tmp_path / "init.png")
    code = cli.main(["img2img", "--model", str(folder), "--prompt", "a red circle", *SIZE,
                     "--init-image", str(tmp_path / "init.png"), "--dtype", "float32",
                     "--strength", "0.5", "--out", str(tmp_path / "f.png")])
    err = capsys.readouterr().err
    assert code != 0 and "denoising strength 0.5: not supported for FLUX.2" in err
    assert "Traceback" not in err


def test_flux2_broken_folder_gets_one_line(tiny_flux2: tuple[Path, Any, Path, Any],
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A klein folder without its tokenizer, and one with a --text-encoder file that cannot
    be read: one line each, naming the file."""
    broken = tmp_path / "flux2-klein"
    shutil.copytree(tiny_flux2[0], broken)
    shutil.rmtree(broken / "tokenizer")
    (tmp_path / "qwen.safetensors").write_bytes(b"")  # a file: the CLI's own check passes
    for extra in ((), ("--text-encoder", str(tmp_path / "qwen.safetensors"))):
        model = broken if not extra else tiny_flux2[0]
        code = cli.main(["txt2img", "--model", str(model), "--prompt", "a red circle", *SIZE,
                         *extra, "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code != 0 and len(errors) == 1, err
        assert ("tokenizer.json" if not extra else "qwen.safetensors") in errors[0]
        assert "Traceback" not in err


def test_flux2_first_block_cache(first_device: gpucore.Device,
                                 tiny_flux2: tuple[Path, Any, Path, Any], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--cache fbc on the CFG model: each pass (prompt, negative prompt) a branch of its own,
    every call computed at threshold 0 (the uncached picture), the second step of each skipped
    at a high one (another picture); MagCache refused in one line."""
    base_folder = tiny_flux2[2]
    common = ("--model", str(base_folder), "--prompt", "a red circle", *SIZE, "--steps", "2",
              "--seed", "7", "--dtype", "float32", "--cfg-scale", "3")
    pictures = {}
    for cache in ("none", "fbc:0", "fbc:9"):
        out, _ = cli_ok(capsys, "txt2img", *common, "--cache", cache,
                        "--out", str(tmp_path / f"{cache.replace(':', '')}.png"))
        pictures[cache] = png_pixels(out)
        text = read_infotext(out)
        assert text is not None
        if cache != "none":
            computed = "4/4" if cache == "fbc:0" else "2/4"
            assert f'Cache: "fbc {cache[4:]}, {computed} model calls computed"' in text
    assert np.abs(pictures["fbc:0"] - pictures["none"]).max() <= 2 / 255
    assert np.abs(pictures["fbc:9"] - pictures["none"]).mean() > 0.005
    code = cli.main(["txt2img", *common, "--cache", "magcache", "--out",
                     str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert code != 0 and "magcache: not supported" in err and "it runs fbc" in err
    assert "Traceback" not in err


@pytest.mark.nodevice
@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_bfl_layout_reads_as_diffusers(tiny_flux2: tuple[Path, Any, Path, Any], tmp_path: Path,
                                       prefix: str) -> None:
    from diffusers.loaders.single_file_utils import (
        convert_flux2_transformer_checkpoint_to_diffusers,
    )

    reference = tiny_flux2[1]
    layout = bfl_layout(reference.transformer, prefix)
    expected = state_dict(reference.transformer)
    # the layout written here is the one diffusers' own conversion reads
    converted = convert_flux2_transformer_checkpoint_to_diffusers(
        {k.removeprefix(prefix): v.clone() for k, v in layout.items()})
    assert set(converted) == set(expected)
    for key, value in converted.items():
        np.testing.assert_array_equal(value.numpy(), expected[key], err_msg=key)
    file = tmp_path / "flux-2-klein-tiny.safetensors"
    save_file(layout, str(file))
    assert flux2_family(file) == "flux2-klein" and flow_model_family(file) is None
    assert family_of(file)[1] == "flux2-klein"
    weights = load_flux2_file(file, config={"axes_dims_rope": FLUX2_TINY["axes_dims_rope"]})
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    for name in ("in_channels", "num_layers", "num_single_layers", "attention_head_dim",
                 "num_attention_heads", "joint_attention_dim", "timestep_guidance_channels",
                 "mlp_ratio", "guidance_embeds"):
        assert weights.config[name] == FLUX2_TINY[name], name
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from diffusion.loaders.formats.gguf_write import write_gguf

    gguf = tmp_path / "flux-2-klein-tiny-Q8_0.gguf"
    write_gguf(gguf, ((k.removeprefix(prefix), v.numpy()) for k, v in layout.items()), "q8_0",
               architecture="flux2")
    assert flux2_family(gguf) == "flux2-klein"
    quantized = load_flux2_file(gguf, config={"axes_dims_rope": FLUX2_TINY["axes_dims_rope"]})
    assert set(quantized) == set(expected) and quantized.config == weights.config
    errors = {key: np.abs(quantized[key] - value).max() / np.abs(value).max()
              for key, value in expected.items()}
    assert max(errors.values()) < 0.02 and errors["transformer_blocks.0.attn.to_k.weight"] > 0


def test_transformer_and_text_encoder_files(first_device: gpucore.Device,
                                            tiny_flux2: tuple[Path, Any, Path, Any], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The BFL file and a Qwen3 text encoder file with a --base folder holding neither's
    weights: the folder's own picture bitwise; without --base, or a folder without its
    transformer, one line."""
    folder, reference = tiny_flux2[:2]
    file = tmp_path / "flux-2-klein-tiny.safetensors"
    save_file(bfl_layout(reference.transformer), str(file))
    out, _ = cli_ok(capsys, *FILES, "--model", str(folder), "--out", str(tmp_path / "dir.png"))
    expected = png_pixels(out)
    text_encoder = {f"model.{k}": v.detach().clone()
                    for k, v in reference.text_encoder.model.state_dict().items()}
    text_encoder["lm_head.weight"] = reference.text_encoder.lm_head.weight.detach().clone()
    save_file(text_encoder, str(tmp_path / "qwen_3_4b.safetensors"))
    slim = tmp_path / "flux2-klein"
    shutil.copytree(folder, slim)
    for part in ("transformer", "text_encoder"):
        for weights in (slim / part).glob("*.safetensors*"):
            weights.unlink()
    out, err = cli_ok(capsys, *FILES, "--model", str(file), "--base", str(slim),
                      "--text-encoder", str(tmp_path / "qwen_3_4b.safetensors"),
                      "--out", str(tmp_path / "te.png"))
    assert "model: flux-2-klein-tiny (flux2-klein)" in err
    assert "--cfg-scale 1" in err  # distilled, as its name says
    text = read_infotext(out)
    assert text is not None and "Module 1: qwen_3_4b" in text
    np.testing.assert_array_equal(png_pixels(out), expected)
    assert "--base" in cli_error(capsys, *FILES, "--model", str(file),
                                 "--out", str(tmp_path / "x.png"))
    narrow = tiny_qwen3(config={"hidden_size": 24, "head_dim": 6, "num_hidden_layers": 28})
    save_file({k: v.detach().clone() for k, v in narrow.state_dict().items()},
              str(tmp_path / "qwen_3_other.safetensors"))
    assert "the transformer reads 120" in cli_error(
        capsys, *FILES, "--model", str(file), "--base", str(slim), "--text-encoder",
        str(tmp_path / "qwen_3_other.safetensors"), "--out", str(tmp_path / "x.png"))
    assert "transformer" in cli_error(capsys, *FILES, "--model", str(slim),
                                      "--out", str(tmp_path / "x.png"))
