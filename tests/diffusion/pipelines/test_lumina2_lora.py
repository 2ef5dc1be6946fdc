"""LoRA for Lumina 2 through the command line: a LoRA made with peft on diffusers'
transformer and saved by `Lumina2Pipeline.save_lora_weights` (diffusers/PEFT's
`transformer.` names, its alpha in the file's metadata) gives, at the tag's weight, diffusers'
picture after its `load_lora_weights` + `set_adapters`, on every linear layer (attention,
feed-forward, modulation, embedders, output); and one under Lumina 2's original names."""

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
from lumina2_tiny import tiny_lumina2_transformer
from safetensors.torch import save_file

import gpucore

HEIGHT, WIDTH = 32, 48
RED = "a red circle"
TARGETS = (r".+\.(to_q|to_k|to_v|to_out\.0|linear_1|linear_2|linear_3|norm1\.linear)"
           r"|x_embedder|time_caption_embed\.caption_embedder\.1")


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=1.0, max_sequence_length=64,
                           generator=torch.Generator().manual_seed(7), output_type="np").images
    return np.round(np.asarray(images[0]) * 255)


def _ours(capsys: pytest.CaptureFixture[str], folder: Path, loras: Path, prompt: str,
          out: Path) -> np.ndarray:
    got, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--width", str(WIDTH),
                    "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
                    "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1",
                    "--lora-dir", str(loras), "--prompt", prompt, "--out", str(out))
    return png_levels(got)


def test_lumina2_peft_lora_matches_diffusers(first_device: gpucore.Device,
                                             tiny_lumina2: tuple[Path, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_lumina2
    path = peft_lora(tiny_lumina2_transformer(), TARGETS, diffusers.Lumina2Pipeline, tmp_path,
                     "lumina")
    reference.load_lora_weights(str(path), adapter_name="lora")
    try:
        reference.set_adapters(["lora"], adapter_weights=[0.8])
        expected = _diffusers(reference)
    finally:
        reference.unload_lora_weights()
    got = _ours(capsys, folder, tmp_path, f"<lora:lumina:0.8>{RED}", tmp_path / "a.png")
    assert np.abs(got - expected).max() <= 1  # the PNG's rounding (measured: the same levels)
    plain = _ours(capsys, folder, tmp_path, RED, tmp_path / "b.png")
    assert np.abs(got - plain).mean() > 5  # the LoRA matters


def test_lumina2_original_names(first_device: gpucore.Device, tiny_lumina2: tuple[Path, Any],
                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A LoRA under Lumina 2's original names (ComfyUI's and diffusion-pipe's: one fused
    attention.qkv update, feed_forward.w1-3, adaLN_modulation.1, under diffusion_model.)
    gives diffusers' picture of it converted as diffusers converts it (the qkv's A shared,
    its B split by rows into q and the narrower k and v: diffusers' own conversion fixes the
    real model's widths, so the conversion is written out here for the tiny one)."""
    folder, reference = tiny_lumina2
    config = reference.transformer.config
    dim, kv = config.hidden_size, config.num_kv_heads * config.hidden_size // (
        config.num_attention_heads)
    gen = torch.Generator().manual_seed(5)
    original, converted = {}, {}

    def lora(name: str, target: str, rows: int, columns: int) -> None:
        down = torch.randn(2, columns, generator=gen) * 0.4
        up = torch.randn(rows, 2, generator=gen) * 0.4
        original[f"diffusion_model.{name}.lora_A.weight"] = down
        original[f"diffusion_model.{name}.lora_B.weight"] = up
        if name.endswith(".attention.qkv"):
            for part, weight in zip(("to_q", "to_k", "to_v"), torch.split(up, [dim, kv, kv]),
                                    strict=True):
                converted[f"transformer.{target}.{part}.lora_A.weight"] = down.clone()
                converted[f"transformer.{target}.{part}.lora_B.weight"] = weight.clone()
        else:
            converted[f"transformer.{target}.lora_A.weight"] = down
            converted[f"transformer.{target}.lora_B.weight"] = up

    for i in range(config.num_layers):
        lora(f"layers.{i}.attention.qkv", f"layers.{i}.attn", dim + 2 * kv, dim)
        lora(f"layers.{i}.feed_forward.w2", f"layers.{i}.feed_forward.linear_2", dim,
             reference.transformer.layers[i].feed_forward.linear_2.in_features)
        lora(f"layers.{i}.adaLN_modulation.1", f"layers.{i}.norm1.linear", 4 * dim,
             min(dim, 1024))
    lora("context_refiner.0.attention.out", "context_refiner.0.attn.to_out.0", dim, dim)
    save_file(original, str(tmp_path / "comfy.safetensors"))
    save_file(converted, str(tmp_path / "converted.safetensors"))
    reference.load_lora_weights(str(tmp_path / "converted.safetensors"), adapter_name="lora")
    try:
        reference.set_adapters(["lora"], adapter_weights=[0.8])
        expected = _diffusers(reference)
    finally:
        reference.unload_lora_weights()
    assert np.abs(expected - _diffusers(reference)).mean() > 5  # the LoRA matters
    got = _ours(capsys, folder, tmp_path, f"<lora:comfy:0.8>{RED}", tmp_path / "a.png")
    assert np.abs(got - expected).max() <= 1
