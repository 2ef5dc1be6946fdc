"""Wan's VAE in one file, as ComfyUI users have it (`split_files/vae/wan_2.1_vae.safetensors`
and Wan 2.2 TI2V 5B's `wan2.2_vae.safetensors`, bf16 or float32): Wan's original names,
renamed to diffusers' AutoencoderKLWan names, for any depth, through one key map:

    conv1 / conv2                       quant_conv / post_quant_conv
    {encoder,decoder}.conv1             {encoder,decoder}.conv_in
    {encoder,decoder}.head.0 / head.2   {encoder,decoder}.norm_out / conv_out
    *.middle.0 / middle.1 / middle.2    *.mid_block.resnets.0 / attentions.0 / resnets.1
    residual.0 / 2 / 3 / 6, shortcut    norm1 / conv1 / norm2 / conv2, conv_shortcut

Wan 2.1 (diffusers' `convert_wan_vae_to_diffusers`): its levels are one flat list,

    encoder.downsamples.K               encoder.down_blocks.K
    decoder.upsamples.K                 decoder.up_blocks.L.resnets.J, or .upsamplers.0 for
                                        the resample closing level L (num_res_blocks + 1
                                        residual blocks a level, a resample after all but the
                                        last)

Wan 2.2 (diffusers' conversion script's `convert_vae_22`): a level is one residual down or
up block whose own list holds its residual blocks, then its resample,

    encoder.downsamples.L.downsamples.J  encoder.down_blocks.L.resnets.J, or .downsampler
    decoder.upsamples.L.upsamples.J      decoder.up_blocks.L.resnets.J, or .upsampler

(a resample's own names, resample.1 and time_conv, are diffusers' too). The config (depth,
channels, latents' mean and spread) is the `--base` folder's vae/config.json, whose
`is_residual` must agree with the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.safetensors import SafetensorsFile
from ..weights import ComponentWeights, TensorRef

__all__ = ["is_wan22_vae", "load_wan_vae_file", "wan_vae_name"]

_RESIDUAL = {"residual.0": "norm1", "residual.2": "conv1", "residual.3": "norm2",
             "residual.6": "conv2", "shortcut": "conv_shortcut"}
_MIDDLE = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}
_MARK = "decoder.middle.0.residual.0.gamma"
_SAMPLERS = {"encoder": "downsampler", "decoder": "upsampler"}


def _residual(tail: str) -> str:
    for old, new in _RESIDUAL.items():
        if tail.startswith(old + "."):
            return new + tail[len(old):]
    return tail  # a resample's own names (resample.1, time_conv) are diffusers' too


def _nested(side: str, level: str, rest: str) -> str:
    """Wan 2.2's `{down,up}samples.L.{down,up}samples.J.tail` (after the level L)."""
    _, _, rest = rest.partition(".")
    index, _, tail = rest.partition(".")
    block = "down_blocks" if side == "encoder" else "up_blocks"
    if tail.startswith(("resample.", "time_conv.")):
        return f"{side}.{block}.{level}.{_SAMPLERS[side]}.{tail}"
    return f"{side}.{block}.{level}.resnets.{index}.{_residual(tail)}"


def wan_vae_name(key: str, num_res_blocks: int, levels: int) -> str:
    """diffusers' name of the original Wan 2.1 or 2.2 VAE tensor `key` (module docstring),
    for a VAE of `levels` levels (len(dim_mult)) with `num_res_blocks` residual blocks each
    (Wan 2.1's flat decoder list needs them; Wan 2.2's names say their level)."""
    side, _, rest = key.partition(".")
    if side in ("conv1", "conv2"):
        return ("quant_conv" if side == "conv1" else "post_quant_conv") + "." + rest
    part, _, rest = rest.partition(".")
    if part == "conv1":
        return f"{side}.conv_in.{rest}"
    index, _, tail = rest.partition(".")
    if part == "head":
        return f"{side}.{'norm_out' if index == '0' else 'conv_out'}.{tail}"
    if part == "middle":
        return f"{side}.mid_block.{_MIDDLE[index]}.{_residual(tail)}"
    if part in ("downsamples", "upsamples") and tail.startswith(part + "."):
        return _nested(side, index, tail)
    if part == "downsamples":
        return f"encoder.down_blocks.{index}.{_residual(tail)}"
    if part == "upsamples":
        k = int(index)
        for level in range(levels):
            count = num_res_blocks + 1 + (level != levels - 1)
            if k < count:
                if k <= num_res_blocks:
                    return f"decoder.up_blocks.{level}.resnets.{k}.{_residual(tail)}"
                return f"decoder.up_blocks.{level}.upsamplers.0.{tail}"
            k -= count
    return key


def is_wan22_vae(keys: Any) -> bool:
    """Whether the original-named VAE `keys` are Wan 2.2's (levels of nested lists)."""
    return any(".downsamples.0.downsamples." in key or ".upsamples.0.upsamples." in key
               for key in keys)


def load_wan_vae_file(path: str | os.PathLike[str], config: dict[str, Any] | None,
                      dtype: Any) -> ComponentWeights:
    """Lazy AutoencoderKLWan weights of the Wan 2.1 or 2.2 VAE file `path` (module
    docstring) with `config` (the --base folder's vae/config.json). WeightsError naming the
    file when it is no Wan VAE, the folder's config when there is none, or the folder to give
    when the file's Wan is not the folder's."""
    file = SafetensorsFile(Path(path))
    if _MARK not in file:
        raise WeightsError(f"{file.path}: no {_MARK!r} tensor: not a Wan VAE in Wan's original "
                           "names; --vae takes wan_2.1_vae.safetensors or "
                           "wan2.2_vae.safetensors")
    if config is None:
        raise WeightsError(f"{file.path}: the --base folder has no vae/config.json, which "
                           "says the VAE's shape; give the Wan diffusers folder's configs")
    wan22, residual = is_wan22_vae(file.keys()), bool(config.get("is_residual"))
    if wan22 != residual:
        names = ("Wan 2.2 TI2V 5B's VAE (wan2.2_vae.safetensors)", "Wan 2.1's VAE (wan_2.1_vae"
                 ".safetensors, which Wan 2.2 A14B reads too)")
        raise WeightsError(f"{file.path}: {names[not wan22]}, but the --base folder's VAE is "
                           f"{names[not residual].split(' (')[0]}: give the VAE file of the "
                           "folder's model, or leave --vae out")
    depth, levels = int(config.get("num_res_blocks", 2)), len(config.get("dim_mult",
                                                                          (1, 2, 4, 4)))
    refs = {wan_vae_name(key, depth, levels): TensorRef(file, key, file.shape(key))
            for key in file.keys()}
    return ComponentWeights("vae", config, refs, dtype=dtype)
