"""LoRA for Z-Image in the layouts its trainers write: diffusers/PEFT (`transformer.`),
ComfyUI's / ai-toolkit's (`diffusion_model.`) and kohya's (`lora_unet_`, the original
`attention.out`) give diffusers' picture after its `load_lora_weights`; a kohya LoRA of the
original fused `attention.qkv` gives the picture of the same update split into to_q/k/v."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import torch
from safetensors.torch import save_file
from zimage_tiny import tiny_zimage_pipeline

import gpucore
from diffusion import load_pipeline

RANK = 2
REQUEST = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=24, height=16,
               cfg_scale=1.0)


@pytest.fixture(scope="module")
def tiny_zimage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-z-image-lora")
    return root / "z-image-turbo", tiny_zimage_pipeline(root)


def _pair(out: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(RANK, width, generator=g) * 0.5, torch.randn(out, RANK, generator=g) * 0.5)


def _file(layout: str, dim: int, hidden: int) -> dict[str, torch.Tensor]:
    """A LoRA of three layers in `layout`."""
    layers = {"layers.0.attention.to_k": (dim, dim), "noise_refiner.0.attention.to_out.0":
              (dim, dim), "layers.1.feed_forward.w2": (dim, hidden)}
    state = {}
    for k, (path, (out, width)) in enumerate(layers.items()):
        down, up = _pair(out, width, k)
        if layout == "kohya":
            name = "lora_unet_" + path.replace("to_out.0", "out").replace(".", "_")
            state.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                          f"{name}.alpha": torch.tensor(4.0)})
        else:
            prefix = "transformer." if layout == "peft" else "diffusion_model."
            state.update({f"{prefix}{path}.lora_A.weight": down,
                          f"{prefix}{path}.lora_B.weight": up})
    return state


def _ours(folder: Path, lora_dir: Path, device: gpucore.Device, prompt: str) -> np.ndarray:
    model = load_pipeline(folder, device=device)
    model.lora_dir = lora_dir
    return model.generate(prompt, **REQUEST).images[0].astype(int)


@pytest.mark.parametrize("layout", ["peft", "comfy", "kohya"])
def test_zimage_lora_matches_diffusers(first_device: gpucore.Device,
                                       tiny_zimage: tuple[Path, Any], tmp_path: Path,
                                       layout: str) -> None:
    folder, reference = tiny_zimage
    config = reference.transformer.config
    save_file(_file(layout, config.dim, int(config.dim / 3 * 8)),
              str(tmp_path / f"{layout}.safetensors"))
    reference.load_lora_weights(str(tmp_path / f"{layout}.safetensors"), adapter_name=layout)
    try:
        reference.set_adapters([layout], adapter_weights=[0.5])
        expected = reference("a red circle", height=16, width=24, num_inference_steps=2,
                             guidance_scale=0.0, generator=torch.Generator().manual_seed(7),
                             output_type="np").images[0]
    finally:
        reference.unload_lora_weights()
    got = _ours(folder, tmp_path, first_device, f"<lora:{layout}:0.5>a red circle")
    assert np.abs(got - np.round(expected * 255)).max() <= 1
    plain = _ours(folder, tmp_path, first_device, "a red circle")
    assert np.abs(got - plain).mean() > 2  # the LoRA matters (the test's premise)


def test_zimage_fused_qkv_lora(first_device: gpucore.Device, tiny_zimage: tuple[Path, Any],
                               tmp_path: Path) -> None:
    folder, reference = tiny_zimage
    dim = reference.transformer.config.dim
    down, up = _pair(3 * dim, dim, 5)
    save_file({"lora_unet_layers_0_attention_qkv.lora_down.weight": down,
               "lora_unet_layers_0_attention_qkv.lora_up.weight": up,
               "lora_unet_layers_0_attention_qkv.alpha": torch.tensor(2.0)},
              str(tmp_path / "fused.safetensors"))
    split = {}
    for k, name in enumerate(("to_q", "to_k", "to_v")):
        key = f"lora_unet_layers_0_attention_{name}"
        split.update({f"{key}.lora_down.weight": down.clone(),
                      f"{key}.lora_up.weight": up[k * dim:(k + 1) * dim].contiguous(),
                      f"{key}.alpha": torch.tensor(2.0)})
    save_file(split, str(tmp_path / "split.safetensors"))
    fused = _ours(folder, tmp_path, first_device, "<lora:fused:1>a red circle")
    assert np.abs(fused - _ours(folder, tmp_path, first_device,
                                "<lora:split:1>a red circle")).max() <= 1
    assert np.abs(fused - _ours(folder, tmp_path, first_device, "a red circle")).mean() > 2
