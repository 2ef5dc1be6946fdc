"""Chroma through the command line like any model: the family detected from the folder, its
defaults (CFG 5, 35 steps), true CFG with the negative prompt, and with `--sampler diffusers
--rng torch` the picture of diffusers' ChromaPipeline (its text masks given as booleans: it
passes float 0 / 1 masks, which torch adds to the scores, diffusers issue 12116)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_pixels
from flow_tiny import chroma_picture
from PIL import Image

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.flow.chroma import ChromaPipeline

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

SIZE = ("--width", "24", "--height", "16")
LENGTH = 16  # T5 tokens, as short_prompts sets them for ours (diffusers' default: 512)


def test_chroma_from_the_cli(first_device: gpucore.Device, tiny_chroma: tuple[Path, Any],
                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """"diffusers" draws ChromaPipeline's picture with CFG and a negative prompt; a WebUI
    sampler runs at Chroma's defaults and writes them in the infotext."""
    root, reference = tiny_chroma
    model = str(root / "chroma")
    out, err = cli_ok(capsys, "txt2img", "--model", model, "--prompt", "a red circle",
                      "--negative-prompt", "a dog", *SIZE, "--steps", "2", "--sampler",
                      "diffusers", "--rng", "torch", "--seed", "7", "--cfg-scale", "4",
                      "--dtype", "float32", "--out", str(tmp_path / "a.png"))
    assert "model: chroma (chroma)" in err
    expected = chroma_picture(reference, "a red circle", "a dog", seed=7, steps=2, cfg=4.0,
                              length=LENGTH)
    assert np.abs(png_pixels(out, np.float64) - expected).mean() < 0.01
    as_floats = reference("a red circle", negative_prompt="a dog", height=16, width=24,
                          num_inference_steps=2, guidance_scale=4.0, max_sequence_length=LENGTH,
                          generator=torch.Generator().manual_seed(7), output_type="np").images[0]
    assert np.abs(png_pixels(out, np.float64) - as_floats).mean() > 0.02  # the masks matter
    out, err = cli_ok(capsys, "txt2img", "--model", model, "--prompt", "a red circle", *SIZE,
                      "--steps", "2", "--seed", "7", "--dtype", "float32",
                      "--out", str(tmp_path / "b.png"))
    assert "--cfg-scale 5" in err and "diffusers' Chroma settings" in err
    text = read_infotext(out)
    assert text is not None
    assert ("Steps: 2, Sampler: Euler, Schedule type: Simple, CFG scale: 5, Seed: 7, "
            "Size: 24x16, Model: chroma") in text


def test_prompt_and_negative_prompt_matter(first_device: gpucore.Device,
                                           tiny_chroma: tuple[Path, Any]) -> None:
    """Each text visibly changes the picture (the tiny model's text is made to matter), and
    a batch of prompts of different lengths (a text mask per row) draws each row as alone."""
    pipe = ChromaPipeline.from_pretrained(tiny_chroma[0] / "chroma", device=first_device)

    def picture(prompt: Any, negative: str = "") -> np.ndarray:
        return pipe(prompt, negative_prompt=negative, height=16, width=24,
                    num_inference_steps=2, guidance_scale=4.0, seed=3,
                    max_sequence_length=LENGTH)

    base = picture("a red circle", "a dog")[0]
    assert np.abs(picture("an astronaut riding a horse", "a dog")[0] - base).mean() > 0.02
    assert np.abs(picture("a red circle", "the quick brown fox")[0] - base).mean() > 0.02
    both = picture(["a red circle", "an astronaut riding a horse on a mat"], "a dog")
    np.testing.assert_allclose(both[0], base, atol=2e-5)


def test_missing_text_encoder_is_one_line(first_device: gpucore.Device,
                                          tiny_chroma: tuple[Path, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "chroma"
    shutil.copytree(tiny_chroma[0] / "chroma", model)
    (model / "text_encoder" / "model.safetensors").unlink()
    assert cli.main(["txt2img", "--model", str(model), "--prompt", "x", *SIZE]) == 2
    err = capsys.readouterr().err
    assert ("this Chroma model has no t5xxl_fp16.safetensors (the T5-XXL text encoder); give "
            "--text-encoder t5xxl_fp16.safetensors") in err
    assert "Traceback" not in err


def test_img2img_is_diffusers(first_device: gpucore.Device, tiny_chroma: tuple[Path, Any]
                              ) -> None:
    """With an init image: ChromaImg2ImgPipeline's picture (its masks kept boolean: it casts
    them to the model's dtype itself)."""
    import diffusers

    root, reference = tiny_chroma
    init = (np.random.default_rng(0).random((16, 24, 3)) * 255).astype(np.uint8)
    ours = ChromaPipeline.from_pretrained(root / "chroma", device=first_device)
    got = ours("a red circle", negative_prompt="a dog", image=init, strength=0.6, height=16,
               width=24, num_inference_steps=4, guidance_scale=4.0, seed=5,
               max_sequence_length=LENGTH)[0]
    img2img = diffusers.ChromaImg2ImgPipeline(**reference.components)

    def boolean(batch_size: int, sequence_length: int, dtype: Any,
                attention_mask: Any = None) -> Any:
        return torch.cat([attention_mask.bool(),
                          torch.ones(batch_size, sequence_length, dtype=torch.bool)], dim=1)

    img2img._prepare_attention_mask = boolean
    embeds, _, mask, negative_embeds, _, negative_mask = img2img.encode_prompt(
        "a red circle", negative_prompt="a dog", device="cpu", max_sequence_length=LENGTH)
    expected = img2img(prompt_embeds=embeds, prompt_attention_mask=mask,
                       negative_prompt_embeds=negative_embeds,
                       negative_prompt_attention_mask=negative_mask, image=Image.fromarray(init),
                       strength=0.6, height=16, width=24, num_inference_steps=4,
                       guidance_scale=4.0, generator=torch.Generator().manual_seed(5),
                       max_sequence_length=LENGTH, output_type="np").images[0]
    assert np.abs(got - expected).mean() < 1e-4


def test_lora_is_diffusers(first_device: gpucore.Device, tiny_chroma: tuple[Path, Any],
                           tmp_path: Path) -> None:
    """A diffusers/PEFT LoRA of the transformer (a double block's q, the approximator's input
    and a single block's MLP) gives diffusers' picture after its load_lora_weights."""
    pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
    from safetensors.torch import save_file

    from diffusion import load_pipeline

    root, reference = tiny_chroma
    shapes = {k.removesuffix(".weight"): tuple(v.shape)
              for k, v in reference.transformer.state_dict().items()}
    state = {}
    for k, path in enumerate(("transformer_blocks.0.attn.to_q",
                              "distilled_guidance_layer.in_proj",
                              "single_transformer_blocks.1.proj_mlp")):
        g = torch.Generator().manual_seed(k)
        out, width = shapes[path]
        state[f"transformer.{path}.lora_A.weight"] = torch.randn(2, width, generator=g) * 0.3
        state[f"transformer.{path}.lora_B.weight"] = torch.randn(out, 2, generator=g) * 0.3
    save_file(state, str(tmp_path / "peft.safetensors"))
    reference.load_lora_weights(str(tmp_path / "peft.safetensors"), adapter_name="peft")
    try:
        reference.set_adapters(["peft"], adapter_weights=[0.5])
        expected = chroma_picture(reference, "a red circle", "", seed=7, steps=2, cfg=1.0,
                                  length=LENGTH)
    finally:
        reference.unload_lora_weights()
    ours = load_pipeline(root / "chroma", device=first_device)
    ours.lora_dir = tmp_path
    request = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=24, height=16,
                   cfg_scale=1.0)
    got = ours.generate("<lora:peft:0.5>a red circle", **request)
    assert np.abs(got.images[0].astype(int) - np.round(expected * 255)).max() <= 1
    plain = ours.generate("a red circle", **request).images[0]  # the LoRA comes off again
    assert np.abs(plain.astype(int) - got.images[0]).max() > 4


def test_chroma_first_block_cache(first_device: gpucore.Device, tiny_chroma: tuple[Path, Any],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--cache fbc:T` with CFG: the positive and the negative prompt's passes keep a cache
    each (at a threshold nothing passes, each computes its first call only), and the skips
    change the picture."""
    model = str(tiny_chroma[0] / "chroma")
    common = ("txt2img", "--model", model, "--prompt", "a red circle", "--negative-prompt",
              "a dog", *SIZE, "--steps", "4", "--seed", "7", "--cfg-scale", "4", "--dtype",
              "float32")
    cached, _ = cli_ok(capsys, *common, "--cache", "fbc:9", "--out", str(tmp_path / "c.png"))
    text = read_infotext(cached) or ""
    assert 'Cache: "fbc 9, 2/8 model calls computed"' in text, text
    plain, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "p.png"))
    assert "Cache" not in (read_infotext(plain) or "")
    assert np.abs(png_pixels(cached, np.float64) - png_pixels(plain, np.float64)).mean() > 0.01
