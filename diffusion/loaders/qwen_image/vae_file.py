"""Qwen-Image's VAE in one file (`--vae qwen_image_vae.safetensors`, as ComfyUI ships it): Wan
2.1's causal 3D VAE under its original names (`encoder.conv1`, `encoder.downsamples.N.
residual.0.gamma`, `decoder.upsamples.N...`, `decoder.head.2`, the top `conv1` / `conv2`), or
under diffusers' AutoencoderKLQwenImage names. Read lazily under diffusers' names, with the
config of the VAE it replaces (a file has none).

The names map as diffusers' `convert_wan_vae_to_diffusers` maps them, for any depth: a
residual block's `residual.0` / `.2` / `.3` / `.6` are its norm1 / conv1 / norm2 / conv2 and
`shortcut` its conv_shortcut; the encoder's flat `downsamples` keep their indices as
`down_blocks`; the decoder's flat `upsamples` hold, per level, `num_res_blocks + 1` residual
blocks and (but the last level) one resampler, which diffusers groups as
`up_blocks.L.resnets.R` and `up_blocks.L.upsamplers.0`; `middle.0` / `.1` / `.2` are the mid
block's first resnet, its attention and its second resnet; `head.0` / `.2` are norm_out /
conv_out; the top `conv1` / `conv2` are quant_conv / post_quant_conv.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..formats.safetensors import SafetensorsFile
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["load_qwenimage_vae_file", "wan_vae_name"]

_RESIDUAL = {"residual.0": "norm1", "residual.2": "conv1", "residual.3": "norm2",
             "residual.6": "conv2", "shortcut": "conv_shortcut"}
_MIDDLE = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}
_TOP = {"conv1": "quant_conv", "conv2": "post_quant_conv"}
_HEAD = {"head.0": "norm_out", "head.2": "conv_out", "conv1": "conv_in"}


def _residual(rest: str) -> str:
    for old, new in _RESIDUAL.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest  # a resampler's resample.1 / time_conv, as diffusers names them


def wan_vae_name(key: str, num_res_blocks: int) -> str:
    """diffusers' name of a Wan 2.1 VAE tensor under its original name (`key` as it is when
    it is none: the model's key check names it)."""
    side, _, rest = key.partition(".")
    if side in _TOP and rest in ("weight", "bias"):
        return f"{_TOP[side]}.{rest}"
    if side not in ("encoder", "decoder"):
        return key
    if m := re.fullmatch(r"(head\.[02]|conv1)\.(.+)", rest):
        return f"{side}.{_HEAD[m[1]]}.{m[2]}"
    if m := re.fullmatch(r"middle\.([012])\.(.+)", rest):
        return f"{side}.mid_block.{_MIDDLE[m[1]]}.{_residual(m[2])}"
    if side == "encoder" and (m := re.fullmatch(r"downsamples\.(\d+)\.(.+)", rest)):
        return f"encoder.down_blocks.{m[1]}.{_residual(m[2])}"
    if side == "decoder" and (m := re.fullmatch(r"upsamples\.(\d+)\.(.+)", rest)):
        level, place = divmod(int(m[1]), num_res_blocks + 2)
        if place == num_res_blocks + 1:
            return f"decoder.up_blocks.{level}.upsamplers.0.{m[2]}"
        return f"decoder.up_blocks.{level}.resnets.{place}.{_residual(m[2])}"
    return key


def load_qwenimage_vae_file(path: str | os.PathLike[str], *, config: Mapping[str, Any],
                            dtype: Any = None) -> ComponentWeights:
    """Lazy AutoencoderKLQwenImage weights of the VAE file `path` under `config` (the model's
    own VAE's: its `num_res_blocks` places the decoder's blocks). Check the file's kind first
    (vae_kind.require_vae): a tensor that is missing or does not fit is named when the model
    loads them. ComfyUI: `VAELoader` of `qwen_image_vae.safetensors`."""
    file = SafetensorsFile(Path(path))
    keys = file.keys()
    diffusers = any(key.startswith("decoder.up_blocks.") for key in keys)
    blocks = int(config.get("num_res_blocks", 2))
    refs = {(key if diffusers else wan_vae_name(key, blocks)): TensorRef(file, key,
                                                                         file.shape(key))
            for key in keys}
    return ComponentWeights("vae", dict(config), refs, dtype=resolve_dtype(dtype))
