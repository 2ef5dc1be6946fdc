"""LoRA for FLUX.2 klein in diffusers/PEFT's layout (`transformer.`): diffusers' picture after
its `load_lora_weights`, on a double block's attention and a single block's fused
projection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import torch
from flux2_tiny import tiny_flux2_pipeline
from safetensors.torch import save_file

import gpucore
from diffusion import load_pipeline

RANK = 2
REQUEST = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=24, height=16,
               cfg_scale=1.0)


def test_flux2_peft_lora_matches_diffusers(first_device: gpucore.Device,
                                           tmp_path: Path) -> None:
    reference = tiny_flux2_pipeline(tmp_path, distilled=True)
    config = reference.transformer.config
    dim = config.num_attention_heads * config.attention_head_dim
    fused = 3 * dim + 2 * int(dim * config.mlp_ratio)
    g = torch.Generator().manual_seed(0)
    state = {}
    for path, out in (("transformer_blocks.0.attn.to_q", dim),
                      ("single_transformer_blocks.1.attn.to_qkv_mlp_proj", fused)):
        state[f"transformer.{path}.lora_A.weight"] = torch.randn(RANK, dim, generator=g)
        state[f"transformer.{path}.lora_B.weight"] = torch.randn(out, RANK, generator=g)
    save_file(state, str(tmp_path / "peft.safetensors"))
    reference.load_lora_weights(str(tmp_path / "peft.safetensors"), adapter_name="peft")
    reference.set_adapters(["peft"], adapter_weights=[0.5])
    expected = reference(prompt="a red circle", height=16, width=24, num_inference_steps=2,
                         generator=torch.Generator().manual_seed(7),
                         output_type="np").images[0]
    model = load_pipeline(tmp_path / "flux2-klein", device=first_device)
    model.lora_dir = tmp_path
    got = model.generate("<lora:peft:0.5>a red circle", **REQUEST).images[0].astype(int)
    assert np.abs(got - np.round(expected * 255)).max() <= 1
    plain = model.generate("a red circle", **REQUEST).images[0].astype(int)
    assert np.abs(got - plain).mean() > 2  # the LoRA matters (the test's premise)
