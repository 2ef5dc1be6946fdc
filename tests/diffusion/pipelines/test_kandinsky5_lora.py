"""LoRA for Kandinsky 5 through the command line: a LoRA made with peft on diffusers'
transformer and saved by `Kandinsky5T2IPipeline.save_lora_weights` (diffusers/PEFT's
`transformer.` names, its alpha in the file's metadata) gives, at the tag's weight,
diffusers' picture after its `load_lora_weights` + `set_adapters`: on the projections our
attention runs in one GEMM (self-attention's q, k and v; cross-attention's k and v), the
feed-forwards', the modulations' and the embeddings'."""

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
from kandinsky5_text_tiny import tiny_kandinsky5_pipeline
from kandinsky5_tiny import tiny_kandinsky5_transformer
from lora_tiny import peft_lora

import gpucore

HEIGHT, WIDTH = 24, 40
RED = "a red circle on a blue square"
# every linear layer of the blocks, the embeddings and the output layer (a regex: the output
# layer is itself an `out_layer`, not a linear one)
TARGETS = r".+\.(to_query|to_key|to_value|out_layer|in_layer)"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder, diffusers' Kandinsky5T2IPipeline of it), told the tiny VAE's factor and
    the test's size as its resolution (test_kandinsky5_pipeline says why)."""
    root = tmp_path_factory.mktemp("tiny-kandinsky5-lora")
    reference = tiny_kandinsky5_pipeline(root)
    reference.vae_scale_factor_spatial = 2
    reference.resolutions = [(WIDTH, HEIGHT)]
    return root / "kandinsky5", reference


def _ours(capsys: pytest.CaptureFixture[str], folder: Path, loras: Path, prompt: str,
          out: Path) -> np.ndarray:
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1",
                    "--lora-dir", str(loras), "--prompt", prompt, "--out", str(out))
    return png_levels(got)


def test_kandinsky5_peft_lora_matches_diffusers(first_device: gpucore.Device,
                                                tiny: tuple[Path, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny
    path = peft_lora(tiny_kandinsky5_transformer(), TARGETS, diffusers.Kandinsky5T2IPipeline,
                     tmp_path, "kandinsky")
    reference.load_lora_weights(str(path), adapter_name="kandinsky")
    try:
        reference.set_adapters(["kandinsky"], adapter_weights=[0.8])
        with torch.no_grad():
            expected = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                                 guidance_scale=1.0, generator=torch.Generator().manual_seed(7),
                                 output_type="np").image[0]
    finally:
        reference.unload_lora_weights()
    got = _ours(capsys, folder, tmp_path, f"<lora:kandinsky:0.8>{RED}", tmp_path / "a.png")
    # within a level of diffusers' picture, the PNG's rounding (measured: 1 level on 0.7% of
    # the values; diffusers rounds its rotated q and k to bfloat16)
    assert np.abs(got - np.round(np.asarray(expected) * 255)).max() <= 1
    plain = _ours(capsys, folder, tmp_path, RED, tmp_path / "b.png")
    assert np.abs(got - plain).mean() > 5  # the LoRA matters (measured 51 levels mean)
