"""Lumina Image 2.0 transformers (Lumina2Transformer2DModel), read lazily under diffusers'
names: a diffusers `transformer/` folder (config.json and diffusion_pytorch_model
safetensors, sharded or not), or one file in the original (Alpha-VLLM's NextDiT) layout, as
Lumina-Image-2.0's and Neta Lumina's single files ship and ComfyUI loads them (bare, or under
`model.diffusion_model.` beside a checkpoint's other parts, which are not read).

The file mapping is diffusers' `convert_lumina2_to_diffusers` (loaders/single_file_utils.py):
`t_embedder.mlp.0/2` and `cap_embedder` go under `time_caption_embed`; each block's
`attention` is `attn`, its fused `qkv` split by rows into to_q, to_k, to_v (the widths from
the shapes rather than diffusers' fixed 2304 / 768), `out` is `to_out.0`, `q_norm` / `k_norm`
are `norm_q` / `norm_k`; `attention_norm1` is `norm1.norm` (`norm1` in the unmodulated
context refiner), `attention_norm2` is `norm2`, `adaLN_modulation.1` is `norm1.linear`, the
feed-forward's `w1/w2/w3` are `linear_1/2/3`; `final_layer` is `norm_out` (`adaLN_modulation
.1` its linear_1, `linear` its linear_2); the unused `norm_final.weight` is dropped. The widths
and depths come from the shapes; the rotary settings and the feed-forward rounding are
Lumina-Image-2.0's unless `config` gives them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.gguf_file import tensor_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of, split_rows
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype

__all__ = ["is_lumina2_file", "load_lumina2_transformer", "lumina2_file_family"]

_MARKERS = ("layers.0.adaLN_modulation.1.weight", "context_refiner.0.attention.qkv.weight",
            "cap_embedder.0.weight")
# whole-name prefixes first, then the parts of a block's names (in diffusers' order)
_HEADS = (("t_embedder.mlp.0.", "time_caption_embed.timestep_embedder.linear_1."),
          ("t_embedder.mlp.2.", "time_caption_embed.timestep_embedder.linear_2."),
          ("cap_embedder.", "time_caption_embed.caption_embedder."),
          ("final_layer.adaLN_modulation.1.", "norm_out.linear_1."),
          ("final_layer.linear.", "norm_out.linear_2."))
_PARTS = ((".attention.out.", ".attn.to_out.0."), (".attention.q_norm.", ".attn.norm_q."),
          (".attention.k_norm.", ".attn.norm_k."), (".feed_forward.w1.", ".feed_forward.linear_1."),
          (".feed_forward.w2.", ".feed_forward.linear_2."),
          (".feed_forward.w3.", ".feed_forward.linear_3."),
          (".adaLN_modulation.1.", ".norm1.linear."), (".attention_norm2.", ".norm2."))
# Lumina-Image-2.0's transformer/config.json, for what the shapes do not say
_LUMINA2 = {"_class_name": "Lumina2Transformer2DModel", "patch_size": 2, "multiple_of": 256,
            "ffn_dim_multiplier": None, "norm_eps": 1e-5, "axes_dim_rope": (32, 32, 32),
            "axes_lens": (300, 512, 512), "sample_size": 128, "scaling_factor": 1.0}


def is_lumina2_file(file: TensorFile) -> bool:
    """The file holds a Lumina 2 transformer in the original layout (bare or under
    model.diffusion_model.): a context refiner and adaLN_modulation.1 (Z-Image's original
    files have neither)."""
    prefix = prefix_of(file, "layers.")
    return all(prefix + marker in file for marker in _MARKERS)


def lumina2_file_family(path: str | os.PathLike[str]) -> str | None:
    """"lumina2" for a .safetensors file holding a Lumina 2 transformer, None otherwise (a
    broken file is left for loading to name). Reads the header only."""
    if Path(path).suffix.lower() != ".safetensors" or not Path(path).is_file():
        return None
    try:
        return "lumina2" if is_lumina2_file(tensor_file(path)) else None
    except (WeightsError, ValueError, OSError):
        return None


def _target(key: str) -> str:
    for old, new in _HEADS:
        if key.startswith(old):
            return new + key[len(old):]
    # the context refiner's first norm is a plain RMS norm (no adaLN around it)
    norm1 = ".norm1." if key.startswith("context_refiner.") else ".norm1.norm."
    for old, new in (*_PARTS, (".attention_norm1.", norm1)):
        key = key.replace(old, new)
    return key


def load_lumina2_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                             variant: str | None = None,
                             config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy Lumina2Transformer2DModel weights (diffusers' names) with `.config`, from a
    diffusers transformer folder or an original-layout .safetensors file (its config from
    the shapes, `config` (a folder's transformer/config.json) laid under them). `dtype`:
    None (as stored, bf16 as float32), "float16" or "float32"; `variant`: a folder's e.g.
    "fp16". WeightsError naming the file or folder that is missing or not a Lumina 2
    transformer. diffusers: `Lumina2Transformer2DModel.from_pretrained(folder)` /
    `.from_single_file(path)`."""
    root = Path(path)
    if root.is_dir():
        folder_config = read_json(root / "config.json")
        if folder_config.get("_class_name", "Lumina2Transformer2DModel") != \
                "Lumina2Transformer2DModel":
            raise WeightsError(f"{root / 'config.json'}: a {folder_config['_class_name']}, "
                               "not a Lumina2Transformer2DModel")
        found, _where = weight_refs(root, "diffusion_pytorch_model", variant)
        return ComponentWeights("transformer", folder_config, found, dtype=resolve_dtype(dtype))
    file = tensor_file(root)
    if not is_lumina2_file(file):
        raise WeightsError(f"{file.path}: no layers.0.adaLN_modulation.1.weight, "
                           "context_refiner.0.attention.qkv.weight and cap_embedder.0.weight "
                           "tensors: not a Lumina 2 transformer file")
    prefix = prefix_of(file, "layers.")
    dim, patch_width = file.shape(key_of(file, prefix, "x_embedder.weight", "Lumina 2"))
    head_dim = file.shape(key_of(file, prefix, "layers.0.attention.q_norm.weight",
                                 "Lumina 2"))[0]
    kv_width = (file.shape(prefix + "layers.0.attention.qkv.weight")[0] - dim) // 2
    inner = file.shape(key_of(file, prefix, "layers.0.feed_forward.w1.weight", "Lumina 2"))[0]
    derived = {
        "in_channels": patch_width // 4, "hidden_size": dim,
        "num_layers": block_count(file, prefix, "layers."),
        "num_refiner_layers": block_count(file, prefix, "noise_refiner."),
        "num_attention_heads": dim // head_dim, "num_kv_heads": kv_width // head_dim,
        "cap_feat_dim": file.shape(key_of(file, prefix, "cap_embedder.0.weight", "Lumina 2"))[0],
    }
    merged = {**_LUMINA2, "axes_dim_rope": (head_dim // 3,) * 3, **dict(config or {}), **derived}
    rounding, multiplier = merged["multiple_of"], merged["ffn_dim_multiplier"]
    expected = int(multiplier * 4 * dim) if multiplier is not None else 4 * dim
    if rounding * -(-expected // rounding) != inner:
        raise WeightsError(f"{file.path}: a feed-forward {inner} wide, which multiple_of "
                           f"{rounding} and ffn_dim_multiplier {multiplier} do not give; pass "
                           "the model's transformer/config.json")
    refs: dict[str, TensorRef] = {}
    for name in file.keys():
        if not name.startswith(prefix) or name.endswith("norm_final.weight"):
            continue
        key = name[len(prefix):]
        if key.endswith(".attention.qkv.weight"):
            stem = _target(key.removesuffix(".attention.qkv.weight")) + ".attn"
            refs.update(split_rows(file, name, tuple(f"{stem}.{part}.weight" for part in
                                                     ("to_q", "to_k", "to_v")),
                                   (dim, kv_width, kv_width)))
        else:
            refs[_target(key)] = TensorRef(file, name, file.shape(name))
    return ComponentWeights("transformer", merged, refs, dtype=resolve_dtype(dtype))
