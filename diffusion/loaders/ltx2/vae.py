"""LTX-2's video VAE weights (diffusers' AutoencoderKLLTX2Video names) from

- a diffusers folder (Lightricks' LTX-2 diffusers layout): its `vae/` (config.json and
  diffusion_pytorch_model[.variant].safetensors), or that vae folder itself;
- the single release checkpoint (`ltx-2-19b-dev.safetensors` and its kin, every component in
  one file), whose VAE tensors are those under `vae.` (not `audio_vae.`) in LTX-2's own
  names, renamed as diffusers' `convert_ltx2_vae_to_diffusers` renames them: each level's
  blocks and samplers one flat list (`encoder.down_blocks.1` is diffusers'
  `encoder.down_blocks.0.downsamplers.0`, `decoder.up_blocks.0` its `decoder.mid_block`),
  `res_blocks` its `resnets`, `per_channel_statistics.mean-of-means` / `std-of-means` its
  `latents_mean` / `latents_std`; a VAE file of its own (no `vae.` prefix) reads the same.
  A file has no config: the one given (a folder's vae/config.json), else LTX-2's.

    weights = load_ltx2_vae("LTX-2", dtype=np.float16)
    vae = AutoencoderKLLTX2Video(weights.config, dtype=np.float16, device=device)
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

__all__ = ["LTX2_VAE_CONFIG", "load_ltx2_vae"]

_MARK = "decoder.conv_in.conv.weight"  # the same in both namings
_PREFIX = "vae."
# diffusers' renames, applied in this order to each name (a name is renamed by every rule
# that matches what the rules before made of it, as diffusers' str.replace loop does)
_RENAMES = (
    ("down_blocks.0", "down_blocks.0"), ("down_blocks.1", "down_blocks.0.downsamplers.0"),
    ("down_blocks.2", "down_blocks.1"), ("down_blocks.3", "down_blocks.1.downsamplers.0"),
    ("down_blocks.4", "down_blocks.2"), ("down_blocks.5", "down_blocks.2.downsamplers.0"),
    ("down_blocks.6", "down_blocks.3"), ("down_blocks.7", "down_blocks.3.downsamplers.0"),
    ("down_blocks.8", "mid_block"), ("up_blocks.0", "mid_block"),
    ("up_blocks.1", "up_blocks.0.upsamplers.0"), ("up_blocks.2", "up_blocks.0"),
    ("up_blocks.3", "up_blocks.1.upsamplers.0"), ("up_blocks.4", "up_blocks.1"),
    ("up_blocks.5", "up_blocks.2.upsamplers.0"), ("up_blocks.6", "up_blocks.2"),
    ("res_blocks", "resnets"), ("per_channel_statistics.mean-of-means", "latents_mean"),
    ("per_channel_statistics.std-of-means", "latents_std"),
)
_DROPPED = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")
# LTX-2's VAE (diffusers' conversion script's "2.0" config, which its folders carry)
LTX2_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKLLTX2Video", "in_channels": 3, "out_channels": 3,
    "latent_channels": 128, "block_out_channels": [256, 512, 1024, 2048],
    "decoder_block_out_channels": [256, 512, 1024], "layers_per_block": [4, 6, 6, 2, 2],
    "decoder_layers_per_block": [5, 5, 5, 5], "spatio_temporal_scaling": [True] * 4,
    "decoder_spatio_temporal_scaling": [True] * 3, "decoder_inject_noise": [False] * 4,
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "upsample_residual": [True] * 3, "upsample_factor": [2, 2, 2],
    "timestep_conditioning": False, "patch_size": 4, "patch_size_t": 1,
    "resnet_norm_eps": 1e-6, "encoder_causal": True, "decoder_causal": False,
    "encoder_spatial_padding_mode": "zeros", "decoder_spatial_padding_mode": "reflect",
    "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
}


def diffusers_name(key: str) -> str:
    """diffusers' name of the LTX-2 VAE tensor `key` (its own name, `vae.` dropped)."""
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def _checked(refs: dict[str, TensorRef], source: str) -> dict[str, TensorRef]:
    if _MARK not in refs:
        raise WeightsError(f"{source}: no {_MARK!r} tensor: not an LTX-2 video VAE; give an "
                           "LTX-2 diffusers folder (its vae/) or the ltx-2 .safetensors "
                           "checkpoint")
    return refs


def _file(path: Path, config: dict[str, Any] | None, dtype: Any) -> ComponentWeights:
    file = SafetensorsFile(path)
    keys = list(file.keys())
    if any(key.startswith(_PREFIX) for key in keys):
        keys = [key for key in keys if key.startswith(_PREFIX)]
    own = any(".res_blocks." in key or "per_channel_statistics." in key for key in keys)
    refs = {}
    for key in keys:
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if own:
            if any(drop in name for drop in _DROPPED):
                continue
            name = diffusers_name(name)
        refs[name] = TensorRef(file, key, file.shape(key))
    return ComponentWeights("vae", dict(config or LTX2_VAE_CONFIG), _checked(refs, str(path)),
                            dtype=resolve_dtype(dtype))


def load_ltx2_vae(path: str | os.PathLike[str], *, dtype: Any = None,
                  config: dict[str, Any] | None = None,
                  variant: str | None = None) -> ComponentWeights:
    """Lazy AutoencoderKLLTX2Video weights at `path` (module docstring), read as `dtype`
    (None: as stored), their `config` the folder's (for a file: `config`, else LTX-2's).
    WeightsError naming the file or folder where it holds no such VAE."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return _file(path, config, dtype)
    if not path.is_dir():
        raise WeightsError(f"{path}: no such folder or .safetensors file; give an LTX-2 "
                           "diffusers folder (its vae/) or the ltx-2 .safetensors checkpoint")
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    cfg = read_json(folder / "config.json")
    if cfg.get("_class_name", "AutoencoderKLLTX2Video") != "AutoencoderKLLTX2Video":
        raise WeightsError(f"{folder / 'config.json'}: a {cfg['_class_name']}, not an "
                           "AutoencoderKLLTX2Video; give an LTX-2 folder")
    refs, source = weight_refs(folder, "diffusion_pytorch_model", variant)
    return ComponentWeights("vae", cfg, _checked(refs, source), dtype=resolve_dtype(dtype))
