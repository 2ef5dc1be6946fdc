"""LoRA for Sana through the command line: a LoRA made with peft on diffusers' transformer and
saved by `SanaPipeline.save_lora_weights` (diffusers/PEFT's `transformer.` names, its alpha in
the file's metadata) gives, at the tag's weight, diffusers' picture after its
`load_lora_weights` + `set_adapters`: on the self- and cross-attention, GLUMBConv's 1x1
convolutions, the caption projection, the timestep embedding and the output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import diffusers
import torch
from cli_support import cli_ok, png_levels
from lora_tiny import peft_lora
from sana_tiny import tiny_sana_transformer

import gpucore

HEIGHT, WIDTH = 32, 64
RED = "a red circle"
TARGETS = (r".+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|.+\.ff\.(conv_inverted|conv_point)"
           r"|caption_projection\.linear_[12]|time_embed\.linear"
           r"|time_embed\.emb\.timestep_embedder\.linear_[12]|proj_out")


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=4.5, max_sequence_length=40,
                           use_resolution_binning=False,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def _ours(capsys: pytest.CaptureFixture[str], folder: Path, loras: Path, prompt: str,
          out: Path) -> np.ndarray:
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "4.5",
                    "--lora-dir", str(loras), "--prompt", prompt, "--out", str(out))
    return png_levels(got)


def test_sana_peft_lora_matches_diffusers(first_device: gpucore.Device,
                                          tiny_sana: tuple[Path, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_sana
    path = peft_lora(tiny_sana_transformer(), TARGETS, diffusers.SanaPipeline, tmp_path, "sana")
    reference.load_lora_weights(str(path), adapter_name="lora")
    try:
        reference.set_adapters(["lora"], adapter_weights=[0.8])
        expected = _diffusers(reference)
    finally:
        reference.unload_lora_weights()
    got = _ours(capsys, folder, tmp_path, f"<lora:sana:0.8>{RED}", tmp_path / "a.png")
    assert np.abs(got - expected).max() <= 1  # the PNG's rounding
    # the LoRA matters (diffusers' picture without it: cheaper than a second run of ours)
    assert np.abs(_diffusers(reference) - expected).mean() > 5
