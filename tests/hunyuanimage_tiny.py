"""A tiny random HunyuanImage 2.1 transformer built in-process (diffusers), kept in memory as
the reference and written as a diffusers `transformer/` folder for loader and pipeline
tests, and
in Tencent's original single-file layout (`original_layout`: diffusers' converter's table read
backwards)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from sd_tiny import randomized

# 8 latent channels in 1 x 1 patches (HunyuanImage 2.1's patch size; its real VAE gives 64);
# the text as the tiny Qwen2.5-VL's 40-wide states (QWEN3_TINY's hidden size), the glyph
# text as a 32-wide ByT5 (T5_TINY's d_model). Head dim 16 = the rotary axes 8 + 8 (rows,
# columns). ByT5's projection keeps diffusers' fixed 2048-wide hidden layer.
HUNYUANIMAGE_TINY: dict[str, Any] = dict(
    in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16,
    num_layers=2, num_single_layers=2, num_refiner_layers=2, mlp_ratio=4.0,
    patch_size=(1, 1), text_embed_dim=40, text_embed_2_dim=32, rope_axes_dim=(8, 8))
# the distilled checkpoint's switches: a guidance-scale embedding and meanflow's timestep_r
HUNYUANIMAGE_DISTILLED: dict[str, Any] = dict(guidance_embeds=True, use_meanflow=True)


def tiny_hunyuanimage_transformer(seed: int = 22, **overrides: Any) -> Any:
    """diffusers' HunyuanImageTransformer2DModel of HUNYUANIMAGE_TINY (with `overrides`, e.g.
    `**HUNYUANIMAGE_DISTILLED` or another `in_channels`), random weights scaled so the text
    and the glyph text visibly matter (on a 5 x 7 latent with 6 text and 3 glyph tokens,
    new random text states move the flow by 9% of its mean size, new glyph states by 3%, the
    timestep 700 -> 300 by 100%)."""
    import diffusers

    return randomized(diffusers.HunyuanImageTransformer2DModel(
        **{**HUNYUANIMAGE_TINY, **overrides}), seed, scale=0.3)


def write_hunyuanimage_transformer(folder: Path, seed: int = 22, **overrides: Any) -> Any:
    """tiny_hunyuanimage_transformer's model saved by diffusers into `folder` (a pipeline
    folder's `transformer/`: config.json and diffusion_pytorch_model.safetensors); returns
    the model."""
    model = tiny_hunyuanimage_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model


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


def original_layout(state: dict[str, np.ndarray], *, fused: bool, prefix: str = "",
                    names: tuple[tuple[str, str], ...] = ()) -> dict[str, np.ndarray]:
    """diffusers' tensors in Tencent's layout; `fused`: the double blocks' q/k/v and the
    single blocks' linear1 stacked and linear2 bare (Tencent's tensor-parallel input);
    `names`: (pattern, replacement) pairs tried first (another model's own tensors:
    HunyuanVideo 1.5's)."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if ".token_refiner." in key and ".attn.to_" in key and "to_out" not in key:
            continue  # fused below
        for pattern, replacement in (*names, *_NAMES):
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
