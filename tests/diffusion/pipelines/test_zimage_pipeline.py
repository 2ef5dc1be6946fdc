"""Z-Image through the command line like any model: the family detected from a diffusers
folder, Turbo's defaults (CFG 1), diffusers' picture with `--sampler diffusers --rng torch`
(with and without CFG), the prompt visibly mattering, a WebUI sampler, a single-file
transformer with the folder as --base, and a broken folder's one-line error."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_pixels
from PIL import Image
from safetensors.torch import save_file
from zimage_tiny import original_layout, tiny_zimage_pipeline

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.load import load_pipeline, model_defaults
from diffusion.pipelines.request import GenerationRequest
from diffusion.upscalers.interpolation import HiresFix

SIZE = ("--width", "24", "--height", "16")


@pytest.fixture(scope="module")
def tiny_zimage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-z-image")
    return root / "z-image-turbo", tiny_zimage_pipeline(root)


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    return reference(prompt, height=16, width=24, num_inference_steps=2,
                     generator=torch.Generator().manual_seed(7), output_type="np",
                     **settings).images[0]


def test_zimage_from_the_cli(first_device: gpucore.Device, tiny_zimage: tuple[Path, Any],
                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Turbo's defaults (CFG 1: diffusers' guidance 0; Base's otherwise) and diffusers'
    picture; the prompt
    visibly changes it; CFG 2.5 with a negative prompt is diffusers' guidance_scale 1.5."""
    folder, reference = tiny_zimage
    common = ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")
    out, err = cli_ok(capsys, *common, "--prompt", "a red circle",
                      "--out", str(tmp_path / "a.png"))
    assert "z-image model (z-image-turbo): --cfg-scale 1" in err
    # a model that does not say it is Turbo gets the Base model's (ZImagePipeline's) defaults
    base = tmp_path / "z-image-base"
    base.symlink_to(folder, target_is_directory=True)
    assert model_defaults(base)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                       cfg_scale=6.0)
    assert model_defaults(folder)[0] == SamplingDefaults(steps=9, sampler="Euler",
                                                         cfg_scale=1.0)
    ours = png_pixels(out)
    expected = _diffusers(reference, "a red circle", guidance_scale=0.0)
    assert np.abs(ours - expected).mean() < 0.01
    out, _ = cli_ok(capsys, *common, "--prompt", "an astronaut riding a horse",
                    "--out", str(tmp_path / "b.png"))
    other = png_pixels(out)
    assert np.abs(other - ours).mean() > 0.02  # the prompt matters (the test's premise)
    assert np.abs(other - _diffusers(reference, "an astronaut riding a horse",
                                     guidance_scale=0.0)).mean() < 0.01
    out, _ = cli_ok(capsys, *common, "--prompt", "a red circle", "--cfg-scale", "2.5",
                    "--negative-prompt", "a photo of a cat", "--out", str(tmp_path / "c.png"))
    guided = png_pixels(out)
    expected = _diffusers(reference, "a red circle", guidance_scale=1.5,
                          negative_prompt="a photo of a cat")
    assert np.abs(guided - expected).mean() < 0.01
    assert np.abs(guided - ours).mean() > 0.01  # the negative pass matters too


def test_zimage_webui_sampler(first_device: gpucore.Device, tiny_zimage: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A WebUI sampler over the Simple schedule, its infotext; the hires fix."""
    folder, _ = tiny_zimage
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--prompt", "a red circle",
                    *SIZE, "--steps", "2", "--seed", "7", "--dtype", "float32",
                    "--out", str(tmp_path / "e.png"))
    text = read_infotext(out)
    assert text is not None
    assert "Steps: 2, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Seed: 7" in text
    assert png_pixels(out).std() > 0.01
    # the hires fix (Forge's for flow models) with CFG: twice the size
    model = load_pipeline(folder, device=first_device)
    result = model.generate(GenerationRequest(
        prompt="a red circle", negative_prompt="a cat", width=24, height=16, steps=2,
        sampler="Euler", seed=7, rng="torch", cfg_scale=2.0,
        hires=HiresFix(scale=2.0, upscaler="Latent", steps=1, denoise=0.5)))
    assert result.images[0].shape == (32, 48, 3) and result.images[0].std() > 2


def test_zimage_img2img_and_inpaint(first_device: gpucore.Device,
                                    tiny_zimage: tuple[Path, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """From an init image: diffusers' ZImageImg2ImgPipeline's picture through the CLI; with
    a mask, ZImageInpaintPipeline's from the pipeline (the CLI's inpainting is the WebUI's:
    mask blur and the original laid back over what was kept)."""
    import diffusers

    from diffusion.pipelines.flow.z_image import ZImagePipeline

    folder, reference = tiny_zimage
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 256, (16, 24, 3), np.uint8))
    init.save(tmp_path / "init.png")
    settings: dict[str, Any] = dict(height=16, width=24, num_inference_steps=3, strength=0.6,
                                    guidance_scale=1.0)
    out, _ = cli_ok(capsys, "img2img", "--model", str(folder), "--prompt", "a red circle",
                    *SIZE, "--steps", "3", "--sampler", "diffusers", "--rng", "torch", "--seed",
                    "7", "--dtype", "float32", "--init-image", str(tmp_path / "init.png"),
                    "--strength", "0.6", "--cfg-scale", "2", "--out", str(tmp_path / "i.png"))
    expected = diffusers.ZImageImg2ImgPipeline(**reference.components)(
        "a red circle", image=init, generator=torch.Generator().manual_seed(7),
        output_type="np", **settings).images[0]
    assert np.abs(png_pixels(out) - expected).mean() < 0.01
    mask = np.zeros((16, 24), np.uint8)
    mask[4:12, 6:18] = 255
    expected = diffusers.ZImageInpaintPipeline(**reference.components)(
        "a red circle", image=init, mask_image=Image.fromarray(mask),
        generator=torch.Generator().manual_seed(7), output_type="np", **settings).images[0]
    ours = ZImagePipeline.from_pretrained(folder, device=first_device)
    got = ours("a red circle", image=init, mask_image=Image.fromarray(mask), seed=7,
               **settings)[0]
    assert np.abs(got - expected).max() < 1e-4


def test_zimage_transformer_file(first_device: gpucore.Device, tiny_zimage: tuple[Path, Any],
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A single-file transformer in the original layout (ComfyUI's; fused q/k/v, under
    model.diffusion_model.) with the folder as --base: the folder's own picture, and near it
    from a Q8_0 GGUF of it; without --base, one line saying what to add."""
    folder, reference = tiny_zimage
    file = tmp_path / "z_image_finetune.safetensors"
    save_file(original_layout(reference.transformer), str(file))
    common = ("txt2img", "--prompt", "a red circle", *SIZE, "--steps", "2", "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--cfg-scale", "1")  # the file's name does not say Turbo: Base's CFG else
    out, err = cli_ok(capsys, *common, "--model", str(file), "--base", str(folder),
                      "--out", str(tmp_path / "file.png"))
    assert "model: z_image_finetune (z-image)" in err
    single = png_pixels(out)
    out, _ = cli_ok(capsys, *common, "--model", str(folder), "--out", str(tmp_path / "dir.png"))
    np.testing.assert_array_equal(single, png_pixels(out))
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from diffusion.loaders.formats.gguf_write import write_gguf

    gguf = tmp_path / "z_image-Q8_0.gguf"
    write_gguf(gguf, ((k, v.numpy()) for k, v in original_layout(reference.transformer,
                                                                  "").items()),
               "q8_0", architecture="lumina2")
    out, err = cli_ok(capsys, *common, "--model", str(gguf), "--base", str(folder),
                      "--out", str(tmp_path / "gguf.png"))
    assert np.abs(png_pixels(out) - single).mean() < 0.01
    assert "model: z_image-Q8_0 (z-image)" in err  # as Forge names it: no .gguf
    code = cli.main([*common, "--model", str(file), "--out", str(tmp_path / "x.png")])
    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and "--base" in errors[0], err


def test_zimage_text_encoder_file(first_device: gpucore.Device, tiny_zimage: tuple[Path, Any],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ComfyUI's kind of text encoder file (a causal LM's names under model., lm_head too)
    with a folder whose text_encoder/ holds its config alone: the folder's own picture, the
    file named in the infotext; a file that is no Qwen3 gets one line."""
    folder, reference = tiny_zimage
    state = {f"model.{k}": v.detach().clone() for k, v in
             reference.text_encoder.state_dict().items()}
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(state, str(tmp_path / "qwen_3_4b.safetensors"))
    slim = tmp_path / "z-image-turbo"
    shutil.copytree(folder, slim)
    for weights in (slim / "text_encoder").glob("*.safetensors*"):
        weights.unlink()
    common = ("txt2img", "--prompt", "a red circle", *SIZE, "--steps", "2", "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")
    out, _ = cli_ok(capsys, *common, "--model", str(slim), "--text-encoder",
                    str(tmp_path / "qwen_3_4b.safetensors"), "--out", str(tmp_path / "te.png"))
    text = read_infotext(out)
    assert text is not None and "Module 1: qwen_3_4b" in text
    single = png_pixels(out)
    out, _ = cli_ok(capsys, *common, "--model", str(folder), "--out", str(tmp_path / "dir.png"))
    np.testing.assert_array_equal(single, png_pixels(out))
    code = cli.main([*common, "--model", str(folder), "--vae", str(tmp_path / "te.png"),
                     "--out", str(tmp_path / "x.png")])
    _, err = capsys.readouterr()
    assert code != 0 and "te.png: not a valid safetensors file" in err, err
    assert err.count("error:") == 1 and "Traceback" not in err
    code = cli.main([*common, "--model", str(slim), "--text-encoder",
                     str(slim / "vae" / "diffusion_pytorch_model.safetensors"),
                     "--out", str(tmp_path / "x.png")])
    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and "not a Qwen3 text encoder" in errors[0], err


@pytest.mark.parametrize("missing", ["tokenizer/tokenizer.json", "text_encoder"])
def test_broken_folder_gets_one_line(tiny_zimage: tuple[Path, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str], missing: str) -> None:
    folder, _ = tiny_zimage
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    path = broken / missing
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    code = cli.main(["txt2img", "--model", str(broken), "--prompt", "x", *SIZE,
                     "--steps", "1", "--out", str(tmp_path / "x.png")])
    _, err = capsys.readouterr()
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1, err
    assert missing.split("/")[0] in errors[0]


def test_zimage_first_block_cache(first_device: gpucore.Device, tiny_zimage: tuple[Path, Any],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`--cache fbc:T`: diffusers' picture with its First Block Cache hook on the transformer
    (pointed at the blocks' `x`, which the hook asks for as `hidden_states`), some steps
    skipped, and the infotext saying how many ran."""
    from diffusers.hooks._helpers import TransformerBlockRegistry
    from webui_ref import assert_steps_skipped, first_block_cache

    folder, reference = tiny_zimage
    threshold, steps = 1.3, 4  # a random tiny model moves far more than a trained one
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), *SIZE, "--steps", str(steps),
                    "--sampler", "diffusers", "--rng", "torch", "--seed", "7", "--dtype",
                    "float32", "--prompt", "a red circle", "--cache", f"fbc:{threshold}",
                    "--out", str(tmp_path / "cached.png"))
    transformer = reference.transformer
    block = type(transformer.layers[0])
    arguments = list(inspect.signature(block.forward).parameters)[1:]
    indices = {name: i for i, name in enumerate(arguments)}
    monkeypatch.setattr(TransformerBlockRegistry.get(block), "_cached_parameter_indices",
                        {**indices, "hidden_states": indices["x"]})
    with first_block_cache(transformer, threshold):
        expected = reference("a red circle", height=16, width=24, num_inference_steps=steps,
                             generator=torch.Generator().manual_seed(7), output_type="np",
                             guidance_scale=0.0).images[0]
    cached = png_pixels(out)
    assert np.abs(cached - expected).mean() < 0.01
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    plain = _diffusers(reference, "a red circle", guidance_scale=0.0)
    assert np.abs(cached - plain).mean() > 0.01  # the cache visibly acted
