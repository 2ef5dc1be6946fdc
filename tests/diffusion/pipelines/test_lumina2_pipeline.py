"""Lumina Image 2.0 against diffusers' Lumina2Pipeline on a tiny random folder: the prompt
states (system prompt, Gemma 2's hidden states[-2], the padding mask; the negative prompt
without the system prompt), the pipeline's picture with CFG truncated and normalised, and the
command line (the family found, its defaults, diffusers' picture, a WebUI sampler, what it
refuses in one line)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels

import gpucore
from diffusion.infotext import read_infotext
from diffusion.models.llm import LLMTextModel
from diffusion.models.lumina2_prompt import encode, lumina2_prompt
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.load import model_defaults
from diffusion.text.llm_tokenizer import LLMTokenizer

SIZE = {"height": 32, "width": 48}


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    return reference(prompt, generator=torch.Generator().manual_seed(7), output_type="np",
                     **SIZE, **settings).images[0]


def test_lumina2_prompt_states(first_device: gpucore.Device,
                               tiny_lumina2: tuple[Path, Any]) -> None:
    """Lumina2Pipeline.encode_prompt's states and masks of a prompt (behind the system
    prompt) and a negative prompt (without it), padded to max_sequence_length; unpadded, the
    same real rows."""
    folder, reference = tiny_lumina2
    with torch.no_grad():
        positive, mask, negative, negative_mask = reference.encode_prompt(
            ["a red circle", "an astronaut riding a horse"], negative_prompt="a photo of a cat",
            max_sequence_length=80)
    config = reference.text_encoder.config.to_dict()
    model = LLMTextModel(config, device=first_device)
    model.load_state_dict({k: v.numpy() for k, v in reference.text_encoder.state_dict().items()})
    tokenizer = LLMTokenizer(folder / "tokenizer")
    texts = [lumina2_prompt("a red circle"), lumina2_prompt("an astronaut riding a horse")]
    states, ours_mask = encode(model, tokenizer, texts, max_sequence_length=80)
    np.testing.assert_array_equal(ours_mask, mask.numpy())
    keep = mask.numpy().astype(bool)
    expected = positive.numpy()
    scale = np.abs(expected[keep]).max()
    assert np.abs(states[keep] - expected[keep]).max() < 1e-6 * scale
    assert np.abs(expected[0, keep[0]][-3:] - expected[1, keep[0]][-3:]).max() > 0.1 * scale
    short, short_mask = encode(model, tokenizer, texts, max_sequence_length=80, padded=False)
    assert short.shape[1] == keep.sum(axis=1).max() < 80
    # the same real rows, within float32 rounding (the attention sums run over fewer keys)
    assert np.abs(short[short_mask.astype(bool)] - states[keep]).max() < 1e-6 * scale
    states, ours_mask = encode(model, tokenizer, ["a photo of a cat"] * 2,
                               max_sequence_length=80)
    np.testing.assert_array_equal(ours_mask, negative_mask.numpy())
    keep = ours_mask.astype(bool)
    assert np.abs(states[keep] - negative.numpy()[keep]).max() < 1e-6 * scale
    with pytest.raises(ValueError, match="max_sequence_length must be an integer from 1 to 512"):
        encode(model, tokenizer, texts, max_sequence_length=600)


def test_lumina2_pipeline_is_diffusers(first_device: gpucore.Device,
                                       tiny_lumina2: tuple[Path, Any]) -> None:
    """diffusers' picture with CFG truncated to the first half of 4 steps and normalised;
    the truncation visibly matters (all 4 steps guided give another picture)."""
    from diffusion.pipelines.flow.lumina2 import Lumina2Pipeline

    folder, reference = tiny_lumina2
    # 64 tokens of padding rather than 256 for a shorter reference run (the CLI's test
    # checks the default's picture against this padding's)
    settings: dict[str, Any] = dict(num_inference_steps=4, guidance_scale=4.0,
                                    negative_prompt="a photo of a cat", cfg_trunc_ratio=0.5,
                                    cfg_normalization=True, max_sequence_length=64)
    expected = _diffusers(reference, "a red circle", **settings)
    ours = Lumina2Pipeline.from_pretrained(folder, device=first_device)
    got = ours("a red circle", seed=7, **SIZE, **settings)[0]
    assert np.abs(got - expected).max() < 5e-5  # 1.6e-5 measured
    untruncated = ours("a red circle", seed=7, **SIZE, **{**settings, "cfg_trunc_ratio": 1.0})
    assert np.abs(untruncated[0] - got).mean() > 0.01


def test_lumina2_from_the_cli(first_device: gpucore.Device, tiny_lumina2: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family's defaults (the card's 50 steps at CFG 4), diffusers' picture with the
    card's CFG truncation (0.25) and normalisation, from its own loop and from Euler over the
    Simple schedule; the negative prompt matters; a step cache refused in one line."""
    folder, reference = tiny_lumina2
    assert model_defaults(folder)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                         cfg_scale=4.0)
    common = ("txt2img", "--model", str(folder), "--prompt", "a red circle", "--width", "48",
              "--height", "32", "--steps", "4", "--seed", "7", "--dtype", "float32")
    out, err = cli_ok(capsys, *common, "--sampler", "diffusers", "--rng", "torch",
                      "--negative-prompt", "a photo of a cat", "--out", str(tmp_path / "a.png"))
    assert "lumina2 model (lumina-2)" in err and "--cfg-scale 4" in err, err
    ours = png_pixels(out)
    # padded to 64 tokens rather than 256: the same picture (the padding is never read),
    # a shorter run for the reference
    expected = _diffusers(reference, "a red circle", num_inference_steps=4,
                          guidance_scale=4.0, negative_prompt="a photo of a cat",
                          cfg_trunc_ratio=0.25, cfg_normalization=True,
                          max_sequence_length=64)
    assert np.abs(ours - expected).mean() < 0.01
    out, _ = cli_ok(capsys, *common, "--sampler", "diffusers", "--rng", "torch",
                    "--out", str(tmp_path / "b.png"))
    assert np.abs(png_pixels(out) - ours).mean() > 0.01  # the negative prompt matters
    # Euler over the Simple schedule: diffusers' steps, guided by noise level as diffusers
    # guides by step (lumina2_guidance), so the same picture from the torch noise
    out, _ = cli_ok(capsys, *common, "--rng", "torch", "--negative-prompt", "a photo of a cat",
                    "--out", str(tmp_path / "c.png"))
    text = read_infotext(out)
    assert text is not None and "Sampler: Euler, Schedule type: Simple, CFG scale: 4" in text
    assert np.abs(png_pixels(out) - expected).mean() < 0.01
    error = cli_error(capsys, *common, "--cache", "fbc:0.1", "--out", str(tmp_path / "d.png"))
    assert "cache" in error


def test_lumina2_single_files(first_device: gpucore.Device, tiny_lumina2: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A single-file transformer in the original layout (ComfyUI's, Neta Lumina's; fused
    q/k/v under model.diffusion_model.) and ComfyUI's kind of Gemma 2 file (under model.,
    its tokenizer beside it) with a folder as --base whose transformer/ and text_encoder/
    hold their configs alone: the whole folder's picture bit for bit, the Gemma file named in
    the infotext; without --base, one line saying what to add."""
    from lumina2_tiny import original_layout
    from safetensors.torch import save_file

    folder, reference = tiny_lumina2
    file = tmp_path / "neta_lumina_tiny.safetensors"
    save_file(original_layout(reference.transformer), str(file))
    gemma = {f"model.{k}": v.detach().clone() for k, v in
             reference.text_encoder.state_dict().items()}
    gemma["spiece_model"] = torch.zeros(8, dtype=torch.uint8)
    save_file(gemma, str(tmp_path / "gemma_2_2b.safetensors"))
    slim = tmp_path / "lumina-2"
    shutil.copytree(folder, slim)
    for weights in [*(slim / "text_encoder").glob("*.safetensors*"),
                    *(slim / "transformer").glob("*.safetensors*")]:
        weights.unlink()
    common = ("txt2img", "--prompt", "a red circle", "--width", "48", "--height", "32",
              "--steps", "2", "--sampler", "diffusers", "--rng", "torch", "--seed", "7",
              "--dtype", "float32", "--cfg-scale", "4")
    out, err = cli_ok(capsys, *common, "--model", str(file), "--base", str(slim),
                      "--text-encoder", str(tmp_path / "gemma_2_2b.safetensors"),
                      "--out", str(tmp_path / "file.png"))
    assert "model: neta_lumina_tiny (lumina2)" in err, err
    text = read_infotext(out)
    assert text is not None and "Module 1: gemma_2_2b" in text, text
    single = png_pixels(out)
    out, _ = cli_ok(capsys, *common, "--model", str(folder), "--out", str(tmp_path / "dir.png"))
    np.testing.assert_array_equal(single, png_pixels(out))
    error = cli_error(capsys, *common, "--model", str(file), "--out", str(tmp_path / "x.png"))
    assert "--base" in error and "Lumina 2" in error


def test_lumina2_img2img_inpaint_hires(first_device: gpucore.Device,
                                       tiny_lumina2: tuple[Path, Any]) -> None:
    """The flow families' img2img, inpainting and hires fix on Lumina 2 (no diffusers
    pipeline to compare with): the init picture visibly matters, a mask keeps what it leaves
    out (the WebUI lays the original back there), the hires pass doubles the size."""
    from PIL import Image

    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest
    from diffusion.upscalers.interpolation import HiresFix

    folder, _ = tiny_lumina2
    model = load_pipeline(folder, device=first_device)
    # a dark and a light picture (random noise pictures all look alike to the tiny VAE)
    rng = np.random.default_rng(0)
    init, other = (rng.integers(low, low + 40, (32, 48, 3), np.uint8) for low in (20, 190))
    common: dict[str, Any] = dict(prompt="a red circle", negative_prompt="a cat", width=48,
                                  height=32, steps=4, sampler="Euler", seed=7, rng="torch",
                                  cfg_scale=4.0)
    # 2 of 8 steps from each (6.9 levels apart measured)
    kept, moved = (model.generate(GenerationRequest(
        **{**common, "steps": 8}, init_image=Image.fromarray(picture), strength=0.25))
        .images[0].astype(np.float32) for picture in (init, other))
    assert np.abs(kept - moved).mean() > 3
    mask = np.zeros((32, 48), np.uint8)
    mask[8:24, 16:32] = 255
    painted = model.generate(GenerationRequest(
        **common, init_image=Image.fromarray(init), mask=Image.fromarray(mask),
        strength=0.9)).images[0].astype(np.float32)
    changed = np.abs(painted - init)
    assert changed[:4].max() == 0 and changed[mask > 0].mean() > 10  # 79 levels measured
    result = model.generate(GenerationRequest(
        **common, hires=HiresFix(scale=2.0, upscaler="Latent", steps=2, denoise=0.5)))
    assert result.images[0].shape == (64, 96, 3) and result.images[0].std() > 2
