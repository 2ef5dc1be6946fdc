"""LoRA for HiDream-I1 through the command line: a LoRA made with peft on diffusers'
transformer and saved by `HiDreamImagePipeline.save_lora_weights` (diffusers/PEFT's
`transformer.` names, its alpha in the file's metadata) gives, at the tag's weight, diffusers'
picture after its `load_lora_weights` + `set_adapters`: on both streams' attention, the
mixture of experts (routed and shared) and the text stream's feed-forward, the modulations,
the caption projections, the embedders and the output."""

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
from hidream_pipe_tiny import SIDE
from hidream_tiny import tiny_hidream_transformer
from lora_tiny import peft_lora

import gpucore

PROMPT, NEGATIVE = "a red circle on a blue background", "a cat"
TARGETS = (r".+\.attn1\.(to_q|to_k|to_v|to_out)(_t)?"
           r"|.+\.ff_i\.(experts\.\d+|shared_experts)\.w[123]|.+\.ff_t\.w[123]"
           r"|.+\.adaLN_modulation\.1|caption_projection\.\d+\.linear|final_layer\.linear"
           r"|x_embedder\.proj|t_embedder\.timestep_embedder\.linear_[12]")


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, negative_prompt=NEGATIVE, height=SIDE, width=SIDE,
                           num_inference_steps=2, guidance_scale=5.0,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def _ours(capsys: pytest.CaptureFixture[str], folder: Path, loras: Path, prompt: str,
          out: Path) -> np.ndarray:
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(SIDE),
                    "--height", str(SIDE), "--steps", "2", "--rng", "torch", "--seed", "7",
                    "--dtype", "float32", "--cfg-scale", "5", "--negative-prompt", NEGATIVE,
                    "--lora-dir", str(loras), "--prompt", prompt, "--out", str(out))
    return png_levels(got)


def test_hidream_peft_lora_matches_diffusers(first_device: gpucore.Device,
                                            tiny_hidream: tuple[Path, Any], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_hidream
    path = peft_lora(tiny_hidream_transformer(), TARGETS, diffusers.HiDreamImagePipeline,
                     tmp_path, "hidream")
    reference.load_lora_weights(str(path), adapter_name="lora")
    try:
        reference.set_adapters(["lora"], adapter_weights=[0.8])
        expected = _diffusers(reference)
    finally:
        reference.unload_lora_weights()
    got = _ours(capsys, folder, tmp_path, f"<lora:hidream:0.8>{PROMPT}", tmp_path / "a.png")
    assert np.abs(got - expected).max() <= 1  # the PNG's rounding
    # the LoRA matters (diffusers' picture without it: cheaper than a second run of ours)
    assert np.abs(_diffusers(reference) - expected).mean() > 5
