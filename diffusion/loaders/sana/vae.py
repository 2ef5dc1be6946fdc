"""Sana's VAE weights, DC-AE (diffusers' AutoencoderDC names), from

- a diffusers folder (a SanaPipeline's, SANA-Video's, or mit-han-lab's `-diffusers` VAE
  repositories): its `vae/` (config.json and diffusion_pytorch_model[.variant].safetensors),
  or that vae folder itself;
- mit-han-lab's original single file (`dc-ae-f32c32-sana-1.x`'s model.safetensors, in
  EfficientViT's names), renamed as diffusers' `convert_autoencoder_dc_checkpoint_to_diffusers`
  renames it: `stages` the blocks' lists, `op_list.` and `main.` dropped, `context_module` the
  attention (`attn`; its fused `qkv` conv split into to_q, to_k, to_v rows, its `proj` conv
  `to_out`), `local_module` the GLUMBConv (`conv_out`). A file has no config: the one given,
  else the f32c32 Sana VAE's (the only layout we build: the "in"/"mix" DC-AEs' decoders have
  batch norms).

    weights = load_sana_vae("Sana_1600M_1024px_diffusers", dtype=np.float16)
    vae = AutoencoderDC(weights.config, dtype=np.float16, device=device)
    vae.load_state_dict(weights)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.safetensors import SafetensorsFile
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["DC_AE_SANA_CONFIG", "load_sana_vae"]

_MARK = "decoder.conv_in.weight"
_ORIGINAL_MARK = "encoder.project_in.conv.weight"
_USAGE = ("give a Sana diffusers folder (its vae/), a DC-AE diffusers folder, or mit-han-lab's "
          "dc-ae-f32c32-sana .safetensors file")
# the f32c32 Sana DC-AE (dc-ae-f32c32-sana-1.x-diffusers' config.json)
DC_AE_SANA_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderDC", "in_channels": 3, "latent_channels": 32,
    "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    "decoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "encoder_layers_per_block": [2, 2, 2, 3, 3, 3], "decoder_layers_per_block": [3] * 6,
    "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "downsample_block_type": "Conv", "upsample_block_type": "interpolate",
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
    "encoder_out_shortcut": True, "decoder_in_shortcut": True, "decoder_conv_act_fn": "relu",
    "scaling_factor": 0.41407,
}
# diffusers' renames, applied in this order to each name (every rule to what the ones before
# made of it, as its str.replace loop does)
_RENAMES = (
    ("main.", ""), ("op_list.", ""), ("context_module", "attn"), ("local_module", "conv_out"),
    ("aggreg.0.0", "to_qkv_multiscale.0.proj_in"),
    ("aggreg.0.1", "to_qkv_multiscale.0.proj_out"), ("depth_conv.conv", "conv_depth"),
    ("inverted_conv.conv", "conv_inverted"), ("point_conv.conv", "conv_point"),
    ("point_conv.norm", "norm"), ("conv.conv.", "conv."), ("conv1.conv", "conv1"),
    ("conv2.conv", "conv2"), ("conv2.norm", "norm"), ("proj.norm", "norm_out"),
    ("encoder.project_in.conv", "encoder.conv_in"),
    ("encoder.project_out.0.conv", "encoder.conv_out"), ("encoder.stages", "encoder.down_blocks"),
    ("decoder.project_in.conv", "decoder.conv_in"), ("decoder.project_out.0", "decoder.norm_out"),
    ("decoder.project_out.2.conv", "decoder.conv_out"), ("decoder.stages", "decoder.up_blocks"),
)


def diffusers_name(key: str) -> str:
    """diffusers' name of the original DC-AE tensor `key` (before the qkv split)."""
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def _renamed(file: SafetensorsFile, key: str) -> dict[str, TensorRef]:
    """diffusers' refs of one original tensor: the fused qkv's three row ranges as (C, C)
    matrices, the projection's 1x1 kernel as a matrix, anything else as it is."""
    name, shape = diffusers_name(key), tuple(file.shape(key))
    if name.endswith(".qkv.conv.weight"):
        parent, width = name[: -len(".qkv.conv.weight")], shape[0] // 3
        return {f"{parent}.to_{part}.weight": TensorRef(
            file, key, (width, shape[1]), rows=(i * width, (i + 1) * width))
            for i, part in enumerate("qkv")}
    if name.endswith(".proj.conv.weight"):
        return {name[: -len(".proj.conv.weight")] + ".to_out.weight":
                TensorRef(file, key, shape[:2])}
    return {name: TensorRef(file, key, shape)}


def _file(path: Path, config: dict[str, Any] | None, dtype: Any) -> ComponentWeights:
    file = SafetensorsFile(path)
    keys = list(file.keys())
    if _MARK in keys:  # already in diffusers' names
        refs = {key: TensorRef(file, key, tuple(file.shape(key))) for key in keys}
    elif _ORIGINAL_MARK in keys and f"{_ORIGINAL_MARK[:-7]}.bias" in keys:
        refs = {}
        for key in keys:
            refs.update(_renamed(file, key))
    elif any(key.startswith("encoder.project_in.") for key in keys):
        raise WeightsError(f"{path}: an \"in\"/\"mix\" DC-AE (a pixel-unshuffling first "
                           "level, batch-norm decoder), not Sana's; we build Sana's DC-AE "
                           f"only: {_USAGE}")
    else:
        raise WeightsError(f"{path}: holds no DC-AE (no {_MARK!r} or {_ORIGINAL_MARK!r} "
                           f"tensor); {_USAGE}")
    return ComponentWeights("vae", dict(config or DC_AE_SANA_CONFIG), refs,
                            dtype=resolve_dtype(dtype))


def load_sana_vae(path: str | os.PathLike[str], *, dtype: Any = None,
                  config: dict[str, Any] | None = None,
                  variant: str | None = None) -> ComponentWeights:
    """Lazy AutoencoderDC weights at `path` (module docstring), read as `dtype` (None: as
    stored), their `config` the folder's (for a file: `config`, else Sana's f32c32 DC-AE's).
    WeightsError naming the file or folder where it holds no such VAE."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return _file(path, config, dtype)
    if not path.is_dir():
        raise WeightsError(f"{path}: no such folder or .safetensors file; {_USAGE}")
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    cfg = read_json(folder / "config.json")
    if cfg.get("_class_name", "AutoencoderDC") != "AutoencoderDC":
        raise WeightsError(f"{folder / 'config.json'}: a {cfg['_class_name']}, not an "
                           f"AutoencoderDC; {_USAGE}")
    refs, source = weight_refs(folder, "diffusion_pytorch_model", variant)
    if _MARK not in refs:
        raise WeightsError(f"{source}: no {_MARK!r} tensor: not a DC-AE; {_USAGE}")
    return ComponentWeights("vae", cfg, refs, dtype=resolve_dtype(dtype))
