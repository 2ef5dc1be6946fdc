"""HunyuanImage 2.1 transformer weights: a diffusers transformer/ folder and Tencent's original
single file (written here from a tiny diffusers model by the inverse of diffusers'
scripts/convert_hunyuan_image_to_diffusers.py: the blocks' q/k/v and linear1 split, as the
converter reads them, or fused, as Tencent's tensor-parallel conversion takes them; the final
adaLN's halves in the original (shift, scale) order) read back under diffusers' names, tensor
for tensor."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from hunyuanimage_tiny import (
    HUNYUANIMAGE_DISTILLED,
    tiny_hunyuanimage_transformer,
    write_hunyuanimage_transformer,
)
from safetensors.numpy import save_file
from sd_tiny import state_dict

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.hunyuanimage import load_hunyuanimage_transformer

# diffusers -> original names (the converter's table, read backwards)
_NAMES = [
    (r"context_embedder_2\.norm", "byt5_in.layernorm"),
    (r"context_embedder_2\.linear_(\d)", r"byt5_in.fc\1"),
    (r"x_embedder\.proj", "img_in.proj"),
    (r"context_embedder\.proj_in", "txt_in.input_embedder"),
    (r"context_embedder\.time_text_embed\.timestep_embedder\.linear_1", "txt_in.t_embedder.mlp.0"),
    (r"context_embedder\.time_text_embed\.timestep_embedder\.linear_2", "txt_in.t_embedder.mlp.2"),
    (r"context_embedder\.time_text_embed\.text_embedder", "txt_in.c_embedder"),
    (r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.attn\.to_out\.0",
     r"txt_in.individual_token_refiner.blocks.\1.self_attn_proj"),
    (r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.ff\.net\.0\.proj",
     r"txt_in.individual_token_refiner.blocks.\1.mlp.fc1"),
    (r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.ff\.net\.2",
     r"txt_in.individual_token_refiner.blocks.\1.mlp.fc2"),
    (r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.norm_out\.linear",
     r"txt_in.individual_token_refiner.blocks.\1.adaLN_modulation.1"),
    (r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.norm(\d)",
     r"txt_in.individual_token_refiner.blocks.\1.norm\2"),
    (r"time_guidance_embed\.timestep_embedder\.linear_1", "time_in.mlp.0"),
    (r"time_guidance_embed\.timestep_embedder\.linear_2", "time_in.mlp.2"),
    (r"time_guidance_embed\.timestep_embedder_r\.linear_1", "time_r_in.mlp.0"),
    (r"time_guidance_embed\.timestep_embedder_r\.linear_2", "time_r_in.mlp.2"),
    (r"time_guidance_embed\.guidance_embedder\.linear_1", "guidance_in.mlp.0"),
    (r"time_guidance_embed\.guidance_embedder\.linear_2", "guidance_in.mlp.2"),
    (r"transformer_blocks\.(\d+)\.norm1\.linear", r"double_blocks.\1.img_mod.linear"),
    (r"transformer_blocks\.(\d+)\.norm1_context\.linear", r"double_blocks.\1.txt_mod.linear"),
    (r"transformer_blocks\.(\d+)\.attn\.to_([qkv])\.", r"double_blocks.\1.img_attn_\2."),
    (r"transformer_blocks\.(\d+)\.attn\.add_([qkv])_proj", r"double_blocks.\1.txt_attn_\2"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_([qk])", r"double_blocks.\1.img_attn_\2_norm"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_([qk])",
     r"double_blocks.\1.txt_attn_\2_norm"),
    (r"transformer_blocks\.(\d+)\.attn\.to_out\.0", r"double_blocks.\1.img_attn_proj"),
    (r"transformer_blocks\.(\d+)\.attn\.to_add_out", r"double_blocks.\1.txt_attn_proj"),
    (r"transformer_blocks\.(\d+)\.ff\.net\.0\.proj", r"double_blocks.\1.img_mlp.fc1"),
    (r"transformer_blocks\.(\d+)\.ff\.net\.2", r"double_blocks.\1.img_mlp.fc2"),
    (r"transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj", r"double_blocks.\1.txt_mlp.fc1"),
    (r"transformer_blocks\.(\d+)\.ff_context\.net\.2", r"double_blocks.\1.txt_mlp.fc2"),
    (r"single_transformer_blocks\.(\d+)\.norm\.linear", r"single_blocks.\1.modulation.linear"),
    (r"single_transformer_blocks\.(\d+)\.attn\.to_([qkv])", r"single_blocks.\1.linear1_\2"),
    (r"single_transformer_blocks\.(\d+)\.proj_mlp", r"single_blocks.\1.linear1_mlp"),
    (r"single_transformer_blocks\.(\d+)\.attn\.norm_([qk])", r"single_blocks.\1.\2_norm"),
    (r"single_transformer_blocks\.(\d+)\.proj_out", r"single_blocks.\1.linear2.fc"),
    (r"proj_out", "final_layer.linear"),
    (r"norm_out\.linear", "final_layer.adaLN_modulation.1"),
]


def _original(state: dict[str, np.ndarray], *, fused: bool, prefix: str = ""
              ) -> dict[str, np.ndarray]:
    """diffusers' tensors in Tencent's layout; `fused`: the double blocks' q/k/v and the
    single blocks' linear1 stacked and linear2 bare (Tencent's tensor-parallel input)."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if ".token_refiner." in key and ".attn.to_" in key and "to_out" not in key:
            continue  # fused below
        for pattern, replacement in _NAMES:
            new = re.sub("^" + pattern, replacement, key)
            if new != key:
                break
        else:
            raise AssertionError(f"no original name for {key}")
        if new.startswith("final_layer.adaLN"):
            scale, shift = np.split(value, 2)
            value = np.concatenate([shift, scale])
        out[new] = value
    for key in [k for k in state if ".token_refiner." in k and ".attn.to_q." in k]:
        block, parameter = key.split(".")[3], key.split(".")[-1]
        out[f"txt_in.individual_token_refiner.blocks.{block}.self_attn_qkv.{parameter}"] = \
            np.concatenate([state[key.replace("to_q", f"to_{x}")] for x in "qkv"])
    if fused:  # img_attn_qkv / txt_attn_qkv, linear1 (q, k, v, mlp), linear2
        for key in [k for k in out if re.search(r"_attn_q\.|\.linear1_q\.", k)]:
            parts = ("q", "k", "v", "mlp") if ".linear1_" in key else ("q", "k", "v")
            stacked = [out.pop(key.replace("_q.", f"_{x}.")) for x in parts]
            out[key.replace("_q.", "_qkv." if "_attn_" in key else ".")] = np.concatenate(stacked)
        for key in [k for k in out if ".linear2.fc." in k]:
            out[key.replace(".fc.", ".")] = out.pop(key)
    return {prefix + k: v for k, v in out.items()}


def test_hunyuanimage_folder(tmp_path: Path) -> None:
    """A diffusers transformer/ folder: its config, every tensor as stored."""
    reference = write_hunyuanimage_transformer(tmp_path / "transformer")
    weights = load_hunyuanimage_transformer(tmp_path / "transformer")
    expected = state_dict(reference)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    assert weights.config["text_embed_2_dim"] == reference.config.text_embed_2_dim
    with pytest.raises(WeightsError, match="no such file or folder"):
        load_hunyuanimage_transformer(tmp_path / "missing")


@pytest.mark.parametrize("fused, prefix", [(True, ""), (False, "model.diffusion_model.")])
def test_hunyuanimage_original_file(tmp_path: Path, fused: bool, prefix: str) -> None:
    """The distilled checkpoint's original file, its blocks fused or split, bare or under
    ComfyUI's prefix: diffusers' tensors, no more, no fewer, and diffusers' config from the
    shapes."""
    reference = tiny_hunyuanimage_transformer(**HUNYUANIMAGE_DISTILLED)
    expected = state_dict(reference)
    path = tmp_path / "hunyuanimage2.1-distilled.safetensors"
    save_file(_original(expected, fused=fused, prefix=prefix), path)
    weights = load_hunyuanimage_transformer(path)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    config = {k: v for k, v in reference.config.items() if not k.startswith("_")}
    got = {k: weights.config[k] for k in config}
    assert {**got, "patch_size": list(got["patch_size"]),
            "rope_axes_dim": list(got["rope_axes_dim"])} == {
        **config, "patch_size": list(config["patch_size"]),
        "rope_axes_dim": list(config["rope_axes_dim"])}
    other = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros(2, np.float32)}, other)
    with pytest.raises(WeightsError, match=r"not a HunyuanImage 2\.1 transformer file"):
        load_hunyuanimage_transformer(other)
