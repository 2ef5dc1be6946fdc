"""Stability's single-file SD3/3.5 MMDiT loads to the tensors diffusers' own single-file
conversion gives, and to the config of the model it came from. Host logic only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
from safetensors.torch import save_file
from sd_tiny import randomized

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.sd3_file import load_sd3_file

pytestmark = pytest.mark.nodevice

SD35_TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                 num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                 pooled_projection_dim=24, out_channels=4, pos_embed_max_size=12,
                 qk_norm="rms_norm", dual_attention_layers=(0, 1))


def sai_checkpoint(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A diffusers SD3 model's tensors under Stability's names (the original MMDiT's)."""
    sd, out = model.state_dict(), {}
    def swap(t: torch.Tensor) -> torch.Tensor:  # (scale, shift) <-> (shift, scale)
        return torch.cat(t.chunk(2)[::-1])

    out["pos_embed"] = sd["pos_embed.pos_embed"]
    for ours, theirs in (("pos_embed.proj", "x_embedder.proj"),
                         ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
                         ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
                         ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
                         ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
                         ("context_embedder", "context_embedder"),
                         ("proj_out", "final_layer.linear")):
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = sd[f"{ours}.{p}"]
    for key, value in sd.items():
        if not key.startswith("transformer_blocks."):
            continue
        i, rest = key.split(".", 2)[1:]
        block, p = f"joint_blocks.{i}.", rest.rsplit(".", 1)[1]
        names = {"norm1.linear": "x_block.adaLN_modulation.1",
                 "norm1_context.linear": "context_block.adaLN_modulation.1",
                 "attn.to_out.0": "x_block.attn.proj", "attn2.to_out.0": "x_block.attn2.proj",
                 "attn.to_add_out": "context_block.attn.proj", "ff.net.0.proj": "x_block.mlp.fc1",
                 "ff.net.2": "x_block.mlp.fc2", "ff_context.net.0.proj": "context_block.mlp.fc1",
                 "ff_context.net.2": "context_block.mlp.fc2", "attn.norm_q": "x_block.attn.ln_q",
                 "attn.norm_k": "x_block.attn.ln_k", "attn.norm_added_q": "context_block.attn.ln_q",
                 "attn.norm_added_k": "context_block.attn.ln_k",
                 "attn2.norm_q": "x_block.attn2.ln_q", "attn2.norm_k": "x_block.attn2.ln_k"}
        module = rest.rsplit(".", 1)[0]
        if module in names:
            last = int(i) == model.config.num_layers - 1
            out[block + names[module] + "." + p] = (
                swap(value) if last and module == "norm1_context.linear" else value)
        elif module in ("attn.to_q", "attn.add_q_proj", "attn2.to_q"):
            prefix = {"attn.to_q": ("x_block.attn", "attn.to_"),
                      "attn.add_q_proj": ("context_block.attn", "attn.add_"),
                      "attn2.to_q": ("x_block.attn2", "attn2.to_")}[module]
            parts = ("q", "k", "v") if "to_" in prefix[1] else ("q_proj", "k_proj", "v_proj")
            out[f"{block}{prefix[0]}.qkv.{p}"] = torch.cat(
                [sd[f"transformer_blocks.{i}.{prefix[1]}{x}.{p}"] for x in parts])
    for p in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{p}"] = swap(sd[f"norm_out.linear.{p}"])
    return out


def test_sd3_file_loads_like_diffusers_conversion(tmp_path: Path) -> None:
    reference = randomized(diffusers.SD3Transformer2DModel(**SD35_TINY), 9)
    reference = reference.to(torch.bfloat16).to(torch.float32)  # what a bf16 file holds
    checkpoint = sai_checkpoint(reference)
    path = tmp_path / "sd3.5_medium.safetensors"
    save_file({"model.diffusion_model." + k: v.to(torch.bfloat16).contiguous()
               for k, v in checkpoint.items()}, str(path))
    weights = load_sd3_file(path)
    expected = convert_sd3_transformer_checkpoint_to_diffusers(dict(checkpoint))
    assert sorted(weights) == sorted(expected) == sorted(reference.state_dict())
    for key, value in expected.items():
        assert weights.shape(key) == tuple(value.shape), key
        np.testing.assert_array_equal(weights[key], value.numpy(), err_msg=key)
    for field, value in reference.config.items():
        if not field.startswith("_") and field != "sample_size":
            wanted = tuple(value) if isinstance(value, list) else value
            assert weights.config[field] == wanted, field


def test_not_an_sd3_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"double_blocks.0.x": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not an SD3"):
        load_sd3_file(path)
