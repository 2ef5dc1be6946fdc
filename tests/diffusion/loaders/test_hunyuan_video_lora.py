"""A HunyuanVideo LoRA in Tencent's original names, as musubi-tuner and kohya write them
(`lora_unet_double_blocks_0_img_attn_qkv`, `..._single_blocks_0_linear1`, ...) or ComfyUI
(`diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight`, ...): applied to
our transformer it gives the weights of the original checkpoint merged with it and then read
by the original-file loader (the fused q/k/v and linear1 split by rows, the final adaLN's
halves swapped), tensor for tensor."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from hunyuan_video_tiny import (
    HUNYUAN_VIDEO_TINY,
    original_video_layout,
    tiny_hunyuan_video_transformer,
)
from safetensors.numpy import save_file
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders.hunyuan_video import load_hunyuan_video_transformer
from diffusion.lora import LoraManager
from diffusion.models.hunyuan_video import HunyuanVideoTransformer3DModel

RANK, ALPHA, WEIGHT = 2, 1.5, 0.7
# the original modules patched: fused ones, whole ones, the swapped adaLN, the refiner's
MODULES = ("double_blocks.0.img_attn_qkv", "double_blocks.1.txt_attn_qkv",
           "double_blocks.0.img_mlp.fc1", "double_blocks.1.txt_mod.linear",
           "single_blocks.0.linear1", "single_blocks.1.linear2",
           "single_blocks.0.modulation.linear", "vector_in.in_layer", "guidance_in.mlp.0",
           "txt_in.individual_token_refiner.blocks.1.self_attn_qkv",
           "final_layer.adaLN_modulation.1")


@pytest.mark.parametrize("layout", ["musubi", "comfyui"])
def test_original_names_lora(first_device: gpucore.Device, tmp_path: Path, layout: str) -> None:
    state = state_dict(tiny_hunyuan_video_transformer())
    original = original_video_layout(state, fused=True)
    rng = np.random.default_rng(0)
    lora, merged = {}, dict(original)
    for module in MODULES:
        out, width = original[f"{module}.weight"].shape
        down = (rng.standard_normal((RANK, width)) * 0.3).astype(np.float32)
        up = (rng.standard_normal((out, RANK)) * 0.3).astype(np.float32)
        if layout == "musubi":
            name, a, b = "lora_unet_" + module.replace(".", "_"), "lora_down", "lora_up"
        else:
            name, a, b = "diffusion_model." + module, "lora_A", "lora_B"
        lora |= {f"{name}.{a}.weight": down, f"{name}.{b}.weight": up,
                 f"{name}.alpha": np.array(ALPHA, np.float32)}
        merged[f"{module}.weight"] = original[f"{module}.weight"] + WEIGHT * ALPHA / RANK * (
            up @ down)
    save_file(lora, tmp_path / f"{layout}.safetensors")
    save_file(merged, tmp_path / "merged.safetensors")
    expected = load_hunyuan_video_transformer(
        tmp_path / "merged.safetensors",
        config={"rope_axes_dim": HUNYUAN_VIDEO_TINY["rope_axes_dim"]})

    ours = HunyuanVideoTransformer3DModel(dict(expected.config), device=first_device)
    ours.load_state_dict(state)
    loras = LoraManager(SimpleNamespace(unet=ours, transformer=ours))  # as flow_video does
    loras.set([(tmp_path / f"{layout}.safetensors", 1.0, WEIGHT)])
    got = ours.state_dict()
    changed = [k for k in state if not np.array_equal(expected[k], state[k])]
    # q, k, v x 3 (double img, double txt, refiner), linear1's 4, 7 whole layers
    assert len(changed) == 3 * 3 + 4 + 7
    assert sorted(loras.patched()) == sorted(f"unet:{k}" for k in changed)  # the denoiser's prefix
    for key in state:
        assert_close(got[key], expected[key], tol=1e-6, atol=1e-6)
    loras.clear()
    np.testing.assert_array_equal(ours.state_dict()["proj_out.weight"], state["proj_out.weight"])
