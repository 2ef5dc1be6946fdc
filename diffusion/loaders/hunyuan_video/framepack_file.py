"""A FramePack transformer as one .safetensors file (ComfyUI's FramePackWrapper's
FramePackI2V_HY_bf16.safetensors and the F1 one): lllyasviel's HunyuanVideoTransformer3DModelPacked
state dict, whose parameter names are diffusers' HunyuanVideoFramepackTransformer3DModel's
as they are (both build on diffusers' HunyuanVideo blocks: `x_embedder.proj`,
`clean_x_embedder.proj` / `proj_2x` / `proj_4x`, `image_projection.up` / `down`,
`context_embedder.`, `time_text_embed.`, the blocks, `norm_out`, `proj_out`), bare or under
ComfyUI's `model.diffusion_model.`. The file holds no config: it is read from the tensor
shapes, the rotary axes the release's 16 + 56 + 56 of its 128-wide heads unless `given`.

    framepack_file_family("FramePackI2V_HY_bf16.safetensors")  # "framepack"
    weights = load_framepack_file("FramePackI2V_HY_bf16.safetensors")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.torch_file import open_weights_file
from ..keymaps.dit_keys import block_count, key_of, prefix_of
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["framepack_file_family", "load_framepack_file"]

_WHAT = "FramePack"
_MARKERS = ("clean_x_embedder.proj_2x.weight", "image_projection.up.weight")
_RELEASE_ROPE = {128: (16, 56, 56)}  # head dim -> the release's rotary axes


def framepack_file_family(path: str | os.PathLike[str]) -> str | None:
    """"framepack" for a .safetensors file holding a FramePack transformer (its header
    read), None for anything else (an unreadable file too: its loader says what is wrong)."""
    from ..formats.safetensors import SafetensorsFile

    root = Path(path)
    if not root.is_file() or root.suffix.lower() != ".safetensors":
        return None
    try:
        file = SafetensorsFile(root)
    except WeightsError:
        return None
    prefix = prefix_of(file, "clean_x_embedder.")
    return "framepack" if all(prefix + marker in file for marker in _MARKERS) else None


def _config(file: Any, prefix: str, path: Path, given: dict[str, Any]) -> dict[str, Any]:
    """diffusers' HunyuanVideoFramepackTransformer3DModel config of the file's shapes,
    `given`'s fields over them."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(file.shape(key_of(file, prefix, key, _WHAT)))

    dim, in_channels, patch_t, patch, _ = shape("x_embedder.proj.weight")
    head_dim = shape("transformer_blocks.0.attn.norm_q.weight")[0]
    rope = given.get("rope_axes_dim") or _RELEASE_ROPE.get(head_dim)
    if rope is None:
        raise WeightsError(f"{path}: attention heads {head_dim} wide, not the release's 128, "
                           "and the file does not give their rotary axes; pass "
                           "config={'rope_axes_dim': (frames, rows, columns)}")
    return {
        "_class_name": "HunyuanVideoFramepackTransformer3DModel", "in_channels": in_channels,
        "out_channels": shape("proj_out.weight")[0] // (patch_t * patch * patch),
        "num_attention_heads": dim // head_dim, "attention_head_dim": head_dim,
        "num_layers": block_count(file, prefix, "transformer_blocks."),
        "num_single_layers": block_count(file, prefix, "single_transformer_blocks."),
        "num_refiner_layers": block_count(
            file, prefix, "context_embedder.token_refiner.refiner_blocks."),
        "mlp_ratio": shape("transformer_blocks.0.ff.net.0.proj.weight")[0] / dim,
        "patch_size": patch, "patch_size_t": patch_t, "qk_norm": "rms_norm",
        "guidance_embeds": prefix + "time_text_embed.guidance_embedder.linear_1.weight" in file,
        "text_embed_dim": shape("context_embedder.proj_in.weight")[1],
        "pooled_projection_dim": shape("time_text_embed.text_embedder.linear_1.weight")[1],
        "rope_theta": 256.0, "rope_axes_dim": tuple(int(a) for a in rope),
        "image_condition_type": None, "has_image_proj": True,
        "image_proj_dim": shape("image_projection.up.weight")[1], "has_clean_x_embedder": True,
    } | {k: v for k, v in given.items() if k != "rope_axes_dim"}


def load_framepack_file(path: str | Path, *, dtype: Any = None,
                        config: dict[str, Any] | None = None) -> ComponentWeights:
    """Lazy HunyuanVideoFramepackTransformer3DModel weights of the FramePack transformer
    file `path` (module docstring); `config`: fields the file cannot tell (`rope_axes_dim` of
    heads not 128 wide). WeightsError in one line naming the file when it is not one.
    diffusers: `HunyuanVideoFramepackTransformer3DModel.from_pretrained(folder)` of the
    file's state dict with its config."""
    root = Path(path)
    file = open_weights_file(root)
    prefix = prefix_of(file, "clean_x_embedder.")
    if not all(prefix + marker in file for marker in _MARKERS):
        raise WeightsError(f"{root}: no {_MARKERS[0]} and {_MARKERS[1]} tensors: not a "
                           "FramePack transformer (lllyasviel's FramePackI2V_HY or F1, "
                           "diffusers' names)")
    refs = {key[len(prefix):]: TensorRef(file, key, tuple(file.shape(key)))
            for key in file.keys() if key.startswith(prefix)}
    return ComponentWeights("transformer", _config(file, prefix, root, dict(config or {})),
                            refs, dtype=resolve_dtype(dtype))
