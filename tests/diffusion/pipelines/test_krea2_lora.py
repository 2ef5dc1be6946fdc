"""LoRA for Krea 2 through the command line: a LoRA made with peft on diffusers' transformer
and saved by `Krea2Pipeline.save_lora_weights` (diffusers/PEFT's `transformer.` names, its
alpha in the file's metadata) gives, at the tag's weight, diffusers' picture after its
`load_lora_weights` + `set_adapters`: on the projections our attention runs in one GEMM
(q with the gate, k with v), the SwiGLU's (gate with up) and the text fusion's, which run once
a prompt."""

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
from krea2_tiny import tiny_krea2_transformer
from lora_tiny import peft_lora

import gpucore

HEIGHT, WIDTH = 24, 40
RED = "a red circle on a blue square"
# every projection of the joint blocks' and the text fusion's attention and SwiGLU
TARGETS = ["to_q", "to_k", "to_v", "to_gate", "to_out.0", "ff.gate", "ff.up", "ff.down"]


def _ours(capsys: pytest.CaptureFixture[str], folder: Path, loras: Path, prompt: str,
          out: Path) -> np.ndarray:
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1",
                    "--lora-dir", str(loras), "--prompt", prompt, "--out", str(out))
    return png_levels(got)


def test_krea2_peft_lora_matches_diffusers(first_device: gpucore.Device,
                                           tiny_krea2: tuple[Path, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_krea2
    path = peft_lora(tiny_krea2_transformer(), TARGETS, diffusers.Krea2Pipeline, tmp_path,
                     "krea")
    reference.load_lora_weights(str(path), adapter_name="krea")
    try:
        reference.set_adapters(["krea"], adapter_weights=[0.8])
        with torch.no_grad():
            expected = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                                 guidance_scale=0.0, generator=torch.Generator().manual_seed(7),
                                 output_type="np").images[0]
    finally:
        reference.unload_lora_weights()
    got = _ours(capsys, folder, tmp_path, f"<lora:krea:0.8>{RED}", tmp_path / "a.png")
    # within a level of diffusers' picture, the PNG's rounding (measured: the same levels)
    assert np.abs(got - np.round(np.asarray(expected) * 255)).max() <= 1
    plain = _ours(capsys, folder, tmp_path, RED, tmp_path / "b.png")
    assert np.abs(got - plain).mean() > 5  # the LoRA matters (measured 35 levels mean)
