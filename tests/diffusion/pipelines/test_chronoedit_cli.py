"""ChronoEdit through `python -m diffusion img2img` (a tiny ChronoEditPipeline folder): the
registry tells it before loading, the picture with temporal reasoning (--enable-temporal-
reasoning, --num-frames, --num-temporal-reasoning-steps) is diffusers' within the PNG's
rounding and its infotext says the reasoning; txt2img, a strength, a reasoning video of
other than 1 + 4k frames and txt2vid are refused in one line, and so is temporal reasoning on
another family; a LoRA tag gives diffusers' picture with the LoRA loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from chronoedit_tiny import CHRONOEDIT_TINY, tiny_chronoedit_pipeline
from cli_support import cli_error, cli_ok, png_pixels
from PIL import Image

import gpucore
from diffusion.pipelines.contract import Capabilities
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.request import GenerationRequest

PROMPT = "make the cube blue"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-chronoedit-cli")
    return root / "chronoedit", tiny_chronoedit_pipeline(root)


def test_edit_from_the_cli(first_device: gpucore.Device, tiny_folder: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.chronoedit import pipeline_chronoedit
    from diffusers.pipelines.wan import pipeline_wan

    folder, reference = tiny_folder
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "chronoedit"
    # at the edit's size: img2img's fit leaves it as it is, CLIP reads what diffusers' does
    rng = np.random.default_rng(5)
    picture = Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8))
    picture.save(tmp_path / "in.png")
    common = ("--model", str(folder), "--prompt", PROMPT, "--negative-prompt", "blurry",
              "--width", "48", "--height", "32", "--steps", "3", "--cfg-scale", "3",
              "--sampler", "diffusers", "--rng", "torch", "--seed", "4", "--dtype", "float32",
              "--enable-temporal-reasoning", "--num-temporal-reasoning-steps", "1")
    out, _ = cli_ok(capsys, "img2img", *common, "--num-frames", "9", "--init-image",
                    str(tmp_path / "in.png"), "--out", str(tmp_path / "a.png"))
    # its prompt cleaning calls ftfy, not installed here; WanPipeline's skips it (the same
    # for this ASCII prompt)
    monkeypatch.setattr(pipeline_chronoedit, "prompt_clean", pipeline_wan.prompt_clean)
    expected = reference(image=picture, prompt=PROMPT, negative_prompt="blurry", height=32,
                         width=48, num_inference_steps=3, guidance_scale=3.0, num_frames=9,
                         enable_temporal_reasoning=True, num_temporal_reasoning_steps=1,
                         generator=torch.Generator().manual_seed(4),
                         output_type="np").frames[0][-1]
    assert np.abs(png_pixels(out) - expected).mean() < 0.01  # the PNG's rounding
    with Image.open(out) as written:
        assert "Temporal reasoning steps: 1, Temporal reasoning frames: 9" in \
            written.info["parameters"]
    assert "init image" in cli_error(capsys, "txt2img", *common,
                                     "--out", str(tmp_path / "x.png"))
    assert "strength" in cli_error(capsys, "img2img", *common, "--init-image",
                                   str(tmp_path / "in.png"), "--strength", "0.5",
                                   "--out", str(tmp_path / "x.png"))
    assert "1 + 4k" in cli_error(capsys, "img2img", *common, "--num-frames", "8",
                                 "--init-image", str(tmp_path / "in.png"),
                                 "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
    # a video model that makes pictures: the video commands point at img2img
    assert "img2img" in cli_error(capsys, "txt2vid", "--model", str(folder), "--prompt", "x",
                                  "--frames", "5", "-o", str(tmp_path / "v"))


@pytest.mark.nodevice
def test_other_families_refuse_temporal_reasoning() -> None:
    plain = Capabilities(family="sdxl", latent_space="sdxl")
    for setting in ({"enable_temporal_reasoning": True}, {"num_temporal_reasoning_steps": 3},
                    {"num_frames": 29}):
        with pytest.raises(ValueError, match=r"temporal reasoning.*not supported"):
            plain.refuse(GenerationRequest(prompt="x", **setting))
    plain.refuse(GenerationRequest(prompt="x"))  # the defaults ask nothing


def test_lora_tag_equals_diffusers(first_device: gpucore.Device, tiny_folder: tuple[Path, Any],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A diffusers/PEFT LoRA of the transformer (Wan's keys: ChronoEdit's distillation LoRA
    is one) through the prompt's <lora:...> tag: diffusers' `load_lora_weights` picture, and
    visibly not the plain one."""
    pytest.importorskip("peft", reason="diffusers loads LoRAs through PEFT")
    from diffusers.pipelines.chronoedit import pipeline_chronoedit
    from diffusers.pipelines.wan import pipeline_wan
    from safetensors.numpy import save_file

    folder, reference = tiny_folder
    dim = CHRONOEDIT_TINY["num_attention_heads"] * CHRONOEDIT_TINY["attention_head_dim"]
    rng = np.random.default_rng(9)
    save_file({f"transformer.blocks.{i}.{name}.lora_{side}.weight": rng.normal(
        0, 1.0 if side == "A" else 0.5, (4, dim) if side == "A" else (dim, 4)).astype(np.float32)
        for i in range(CHRONOEDIT_TINY["num_layers"])
        for name in ("attn1.to_q", "attn1.to_v", "attn2.to_k")
        for side in ("A", "B")}, str(tmp_path / "distill.safetensors"))
    picture = Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8))
    picture.save(tmp_path / "in.png")
    out, _ = cli_ok(capsys, "img2img", "--model", str(folder), "--init-image",
                    str(tmp_path / "in.png"), "--prompt", f"<lora:distill:1>{PROMPT}",
                    "--lora-dir", str(tmp_path), "--width", "48", "--height", "32", "--steps",
                    "2", "--cfg-scale", "1", "--sampler", "diffusers", "--rng", "torch",
                    "--seed", "4", "--dtype", "float32", "--out", str(tmp_path / "a.png"))
    monkeypatch.setattr(pipeline_chronoedit, "prompt_clean", pipeline_wan.prompt_clean)

    def theirs() -> np.ndarray:
        return reference(image=picture, prompt=PROMPT, height=32, width=48,
                         num_inference_steps=2, guidance_scale=1.0,
                         generator=torch.Generator().manual_seed(4),
                         output_type="np").frames[0][-1]

    reference.load_lora_weights(str(tmp_path / "distill.safetensors"))
    try:
        expected = theirs()
    finally:
        reference.unload_lora_weights()
    got = png_pixels(out)
    assert np.abs(got - expected).mean() < 0.01  # the PNG's rounding
    assert np.abs(theirs() - expected).mean() > 0.03  # the LoRA matters
