"""BFL single-file FLUX transformers (flux1-dev layout, bf16, ComfyUI's prefix) load to the
same tensors and config as diffusers' FluxTransformer2DModel. Host logic only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from flow_tiny import FLUX_TINY
from safetensors.torch import save_file
from sd_tiny import randomized

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.flux_file import load_flux_file

pytestmark = pytest.mark.nodevice


def bfl_checkpoint(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """The BFL names of a diffusers FLUX transformer's tensors: diffusers' single-file
    conversion (convert_flux_transformer_checkpoint_to_diffusers) run backwards."""
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    renames = {"time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
               "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
               "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
               "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
               "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
               "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
               "txt_in": "context_embedder", "img_in": "x_embedder",
               "final_layer.linear": "proj_out"}
    for p in ("weight", "bias"):
        for bfl, ours in renames.items():
            if f"{ours}.{p}" in sd:  # schnell has no guidance embedder
                out[f"{bfl}.{p}"] = sd[f"{ours}.{p}"]
        scale, shift = sd[f"norm_out.linear.{p}"].chunk(2)
        out[f"final_layer.adaLN_modulation.1.{p}"] = torch.cat([shift, scale])
        for i in range(model.config.num_layers):
            d = f"transformer_blocks.{i}."
            for bfl, names in (("img_attn.qkv", ("to_q", "to_k", "to_v")),
                               ("txt_attn.qkv", ("add_q_proj", "add_k_proj", "add_v_proj"))):
                out[f"double_blocks.{i}.{bfl}.{p}"] = torch.cat(
                    [sd[f"{d}attn.{n}.{p}"] for n in names])
            for bfl, ours in (("img_mod.lin", "norm1.linear"),
                              ("txt_mod.lin", "norm1_context.linear"),
                              ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
                              ("txt_mlp.0", "ff_context.net.0.proj"),
                              ("txt_mlp.2", "ff_context.net.2"),
                              ("img_attn.proj", "attn.to_out.0"),
                              ("txt_attn.proj", "attn.to_add_out")):
                out[f"double_blocks.{i}.{bfl}.{p}"] = sd[f"{d}{ours}.{p}"]
        for i in range(model.config.num_single_layers):
            s = f"single_transformer_blocks.{i}."
            out[f"single_blocks.{i}.linear1.{p}"] = torch.cat(
                [sd[f"{s}attn.to_q.{p}"], sd[f"{s}attn.to_k.{p}"], sd[f"{s}attn.to_v.{p}"],
                 sd[f"{s}proj_mlp.{p}"]])
            out[f"single_blocks.{i}.linear2.{p}"] = sd[f"{s}proj_out.{p}"]
            out[f"single_blocks.{i}.modulation.lin.{p}"] = sd[f"{s}norm.linear.{p}"]
    for i in range(model.config.num_layers):
        for side, q, k in (("img", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
            out[f"double_blocks.{i}.{side}_attn.norm.query_norm.scale"] = \
                sd[f"transformer_blocks.{i}.attn.{q}.weight"]
            out[f"double_blocks.{i}.{side}_attn.norm.key_norm.scale"] = \
                sd[f"transformer_blocks.{i}.attn.{k}.weight"]
    for i in range(model.config.num_single_layers):
        out[f"single_blocks.{i}.norm.query_norm.scale"] = \
            sd[f"single_transformer_blocks.{i}.attn.norm_q.weight"]
        out[f"single_blocks.{i}.norm.key_norm.scale"] = \
            sd[f"single_transformer_blocks.{i}.attn.norm_k.weight"]
    return {prefix + k: v.to(torch.bfloat16).contiguous() for k, v in out.items()}


@pytest.mark.parametrize(("guidance", "prefix"), [(True, "model.diffusion_model."),
                                                  (False, "")], ids=["dev-comfy", "schnell"])
def test_bfl_file_loads_diffusers_tensors(tmp_path: Path, guidance: bool, prefix: str) -> None:
    reference = randomized(diffusers.FluxTransformer2DModel(
        **{**FLUX_TINY, "num_layers": 2, "num_single_layers": 2}, guidance_embeds=guidance), 8)
    reference = reference.to(torch.bfloat16).to(torch.float32)  # what a bf16 file holds
    path = tmp_path / "flux1.safetensors"
    save_file(bfl_checkpoint(reference, prefix), str(path))
    weights = load_flux_file(path, config={"axes_dims_rope": FLUX_TINY["axes_dims_rope"]})
    expected = {k: v.numpy() for k, v in reference.state_dict().items()}
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
        assert weights.shape(key) == value.shape, key
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    for field, value in reference.config.items():
        if not field.startswith("_"):
            wanted = tuple(value) if isinstance(value, list) else value
            assert weights.config[field] == wanted, field


def test_not_a_flux_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"unet.weight": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not a BFL FLUX"):
        load_flux_file(path)
