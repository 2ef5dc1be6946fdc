"""LoRA for Bria FIBO and Bria FIBO 2 through the command line: their transformers keep
diffusers' parameter names, so a LoRA made with peft on diffusers' transformer (every linear
layer: attention, feed-forwards, modulations, embedders, FIBO's per-block caption projections,
FIBO 2's Perceiver and cross-attention, the output) and saved by the diffusers pipeline's own
save_lora_weights (diffusers/PEFT's `transformer.` names, its alpha in the file's metadata)
gives, at the tag's weight, diffusers' pipeline picture with the same file loaded by its
load_lora_weights at that weight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="the LoRA is made with peft")
import torch
from bria_fibo2_tiny import tiny_fibo2_pipeline, tiny_fibo2_transformer
from bria_fibo_tiny import tiny_fibo_pipeline, tiny_fibo_transformer
from cli_support import cli_ok, png_levels
from lora_tiny import peft_lora

import gpucore

HEIGHT, WIDTH = 16, 32
RED = '{"short_description": "a red circle on a blue square"}'
# (writer of the tiny folder, its name, the diffusers transformer the LoRA is made on)
FAMILIES = {
    "bria-fibo": (tiny_fibo_pipeline, "fibo", tiny_fibo_transformer),
    "bria-fibo2": (tiny_fibo2_pipeline, "fibo2", tiny_fibo2_transformer),
}


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=1.0, generator=torch.Generator().manual_seed(7),
                           output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_peft_lora_matches_diffusers(first_device: gpucore.Device, family: str,
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write, name, transformer = FAMILIES[family]
    reference = write(tmp_path)
    model = transformer()
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    path = peft_lora(model, linear, type(reference), tmp_path, "fibo")
    plain = _diffusers(reference)
    reference.load_lora_weights(str(path), adapter_name="fibo")
    reference.set_adapters(["fibo"], [0.8])
    patched = {n for n, m in reference.transformer.named_modules() if hasattr(m, "lora_A")}
    assert patched == set(linear)  # every linear layer
    expected = _diffusers(reference)
    got, _ = cli_ok(capsys, "txt2img", "--model", str(tmp_path / name), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1",
                    "--lora-dir", str(tmp_path), "--prompt", f"<lora:fibo:0.8>{RED}",
                    "--out", str(tmp_path / "a.png"))
    assert np.abs(png_levels(got) - expected).max() <= 1  # the PNG's rounding
    assert np.abs(expected - plain).mean() > 5  # the LoRA matters
