"""LoRA for CogView4 through the command line: a LoRA made with peft on diffusers' transformer
and saved by CogView4Pipeline (CogView4LoraLoaderMixin's layout: diffusers/PEFT's
`transformer.` names, its alpha in the file's metadata) gives, at the tag's weight, the picture
of diffusers' pipeline with the file loaded by its own `load_lora_weights` at that weight, on
every linear layer (attention, feed-forward, the adaLN modulation, embedders, output head)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="the LoRA is made with peft")
import diffusers
import torch
from cli_support import cli_ok, png_levels
from cogview4_tiny import tiny_cogview4_transformer
from lora_tiny import peft_lora
from safetensors.torch import load_file

import gpucore

HEIGHT, WIDTH = 32, 48
RED = "a red circle on a blue square"
TARGETS = r".+\.(to_q|to_k|to_v|to_out\.0|linear|linear_[12]|proj|text_proj|net\.2)|proj_out"


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, negative_prompt="blurry", height=HEIGHT, width=WIDTH,
                           num_inference_steps=2, guidance_scale=4.0,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def test_cogview4_peft_lora_is_diffusers(first_device: gpucore.Device,
                                         tiny_cogview4: tuple[Path, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_cogview4
    path = peft_lora(tiny_cogview4_transformer(), TARGETS, diffusers.CogView4Pipeline, tmp_path,
                     "cogview4", scale=0.3)
    named = {key.removeprefix("transformer.").removesuffix(".lora_A.weight")
             for key in load_file(str(path)) if key.endswith(".lora_A.weight")}
    linear = {name for name, module in reference.transformer.named_modules()
              if isinstance(module, torch.nn.Linear)}
    assert named == linear, sorted(linear ^ named)  # every linear layer
    plain = _diffusers(reference)
    reference.load_lora_weights(str(path), adapter_name="cogview4")
    try:
        reference.set_adapters(["cogview4"], [0.8])
        expected = _diffusers(reference)
    finally:  # the session's reference pipeline as it was
        reference.unload_lora_weights()
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "4",
                    "--negative-prompt", "blurry", "--lora-dir", str(tmp_path),
                    "--prompt", f"<lora:cogview4:0.8>{RED}", "--out", str(tmp_path / "a.png"))
    assert np.abs(png_levels(got) - expected).max() <= 1  # the PNG's rounding
    assert np.abs(expected - plain).mean() > 5  # the LoRA matters
