"""LoRA for Qwen-Image in diffusers/PEFT's layout (`transformer.`, the names diffusers' and
ours share) gives diffusers' picture after its `load_lora_weights`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import torch
from qwenimage_tiny import QWENIMAGE_TINY, tiny_qwenimage_pipeline
from safetensors.torch import save_file

import gpucore
from diffusion import load_pipeline

RANK = 2
PROMPT = "a red circle on a blue square, " * 6
REQUEST = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=40, height=24,
               cfg_scale=1.0)


@pytest.fixture(scope="module")
def tiny_qwenimage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-qwen-image-lora")
    return root / "qwen-image", tiny_qwenimage_pipeline(root)


def _file() -> dict[str, torch.Tensor]:
    """A PEFT LoRA of three layers: an image projection, a text one, a feed-forward."""
    dim = QWENIMAGE_TINY["num_attention_heads"] * QWENIMAGE_TINY["attention_head_dim"]
    layers = {"transformer_blocks.0.attn.to_k": (dim, dim),
              "transformer_blocks.1.attn.add_v_proj": (dim, dim),
              "transformer_blocks.1.img_mlp.net.2": (dim, 4 * dim)}
    state = {}
    for k, (path, (out, width)) in enumerate(layers.items()):
        g = torch.Generator().manual_seed(k)
        state[f"transformer.{path}.lora_A.weight"] = torch.randn(RANK, width, generator=g) * 0.5
        state[f"transformer.{path}.lora_B.weight"] = torch.randn(out, RANK, generator=g) * 0.5
    return state


def test_qwenimage_lora_matches_diffusers(first_device: gpucore.Device,
                                          tiny_qwenimage: tuple[Path, Any],
                                          tmp_path: Path) -> None:
    folder, reference = tiny_qwenimage
    save_file(_file(), str(tmp_path / "peft.safetensors"))

    def theirs() -> np.ndarray:
        return reference(PROMPT, height=24, width=40, num_inference_steps=2,
                         generator=torch.Generator().manual_seed(7),
                         output_type="np").images[0]

    plain = theirs()
    reference.load_lora_weights(str(tmp_path / "peft.safetensors"), adapter_name="peft")
    try:
        reference.set_adapters(["peft"], adapter_weights=[0.5])
        expected = theirs()
    finally:
        reference.unload_lora_weights()
    assert np.abs(expected - plain).mean() > 0.01  # the LoRA matters (the test's premise)
    model = load_pipeline(folder, device=first_device)
    model.lora_dir = tmp_path
    got = model.generate(f"<lora:peft:0.5>{PROMPT}", **REQUEST).images[0].astype(int)
    assert np.abs(got - np.round(expected * 255)).max() <= 1
