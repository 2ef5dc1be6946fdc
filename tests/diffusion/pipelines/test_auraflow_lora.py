"""LoRA for AuraFlow through the command line: a LoRA made with peft on diffusers' transformer
and saved by `AuraFlowPipeline.save_lora_weights` (diffusers/PEFT's `transformer.` names, its
alpha in the file's metadata) gives, at the tag's weight, diffusers' picture after its
`load_lora_weights` + `set_adapters`: on every linear layer (attention, feed-forwards,
modulations, the patch, text and time embedders, the output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import diffusers
import torch
from auraflow_tiny import tiny_auraflow_transformer
from cli_support import cli_ok, png_levels
from lora_tiny import peft_lora

import gpucore

HEIGHT, WIDTH = 24, 32
RED = "a red circle"
TARGETS = (r".+\.(to_q|to_k|to_v|to_out\.0|add_[qkv]_proj|to_add_out|linear_[12]"
           r"|out_projection|norm1\.linear|norm1_context\.linear)"
           r"|pos_embed\.proj|context_embedder|time_step_proj\.linear_[12]|norm_out\.linear"
           r"|proj_out")


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=1.0, generator=torch.Generator().manual_seed(7),
                           output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def test_auraflow_peft_lora_matches_diffusers(first_device: gpucore.Device,
                                              tiny_auraflow: tuple[Path, Any], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_auraflow
    transformer = tiny_auraflow_transformer()
    linear = {n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    path = peft_lora(transformer, TARGETS, diffusers.AuraFlowPipeline, tmp_path, "aura")
    adapted = {n.removesuffix(".lora_A.default") for n, _ in transformer.named_modules()
               if n.endswith(".lora_A.default")}
    assert adapted == linear, sorted(linear - adapted)  # every linear layer
    reference.load_lora_weights(str(path), adapter_name="lora")
    try:
        reference.set_adapters(["lora"], adapter_weights=[0.8])
        expected = _diffusers(reference)
    finally:
        reference.unload_lora_weights()
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1",
                    "--lora-dir", str(tmp_path), "--prompt", f"<lora:aura:0.8>{RED}",
                    "--out", str(tmp_path / "a.png"))
    assert np.abs(png_levels(got) - expected).max() <= 1  # the PNG's rounding
    # the LoRA matters (diffusers' picture without it: cheaper than a second run of ours)
    assert np.abs(_diffusers(reference) - expected).mean() > 5
