"""LoRA for Ideogram 4 through the command line: a LoRA made with peft on diffusers'
transformer and saved as Ideogram4Pipeline saves one (diffusers/PEFT's `transformer.` names,
its alpha in the file's metadata), on every linear layer, gives at the tag's weight diffusers'
picture with `load_lora_weights` and `set_adapters` (the conditional transformer alone takes
it, as diffusers' pipeline loads it; the unconditional one runs as it is)."""

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
from ideogram4_tiny import tiny_ideogram4_pipeline, tiny_ideogram4_transformer
from lora_tiny import peft_lora

import gpucore

HEIGHT, WIDTH = 24, 40
RED = "a red circle on a blue square"
TARGETS = (r".+\.(to_q|to_k|to_v|to_out\.0|w1|w2|w3|adaln_modulation|linear|mlp_in|mlp_out)"
           r"|input_proj|llm_cond_proj|adaln_proj")


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=1,
                           guidance_scale=3.0, guidance_schedule=None, max_sequence_length=48,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def test_ideogram4_peft_lora_is_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    reference = tiny_ideogram4_pipeline(tmp_path)
    loras = tmp_path / "loras"
    path = peft_lora(tiny_ideogram4_transformer(), TARGETS, diffusers.Ideogram4Pipeline, loras,
                     "ideo")
    plain = _diffusers(reference)
    reference.load_lora_weights(str(path), adapter_name="ideo")
    reference.set_adapters(["ideo"], [0.8])
    expected = _diffusers(reference)
    got, _ = cli_ok(capsys, "txt2img", "--model", str(tmp_path / "ideogram4"), "--width",
                    str(WIDTH), "--height", str(HEIGHT), "--steps", "1", "--sampler",
                    "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32",
                    "--cfg-scale", "3", "--lora-dir", str(loras), "--prompt",
                    f"<lora:ideo:0.8>{RED}", "--out", str(tmp_path / "a.png"))
    assert np.abs(png_levels(got) - expected).max() <= 1  # the PNG's rounding
    assert np.abs(expected - plain).mean() > 5  # the LoRA matters
